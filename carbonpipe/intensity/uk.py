"""Great Britain's Carbon Intensity API (National Energy System Operator, no key needed).

``CARBONPIPE_UK_INTENSITY_URL`` (default ``https://api.carbonintensity.org.uk``). Half-hourly
average intensity in gCO2/kWh, national or for one of the 17 regions (DNO areas, ids 1-17) or
an outward postcode:

* national: ``GET /intensity/{from}/{to}`` and ``GET /intensity/{from}/fw48h`` ->
  ``{"data": [{"from", "to", "intensity": {"forecast", "actual", "index"}}]}``; history uses
  ``actual`` where published, else the forecast;
* regional: ``GET /regional/intensity/{from}/{to}/regionid/{id}``,
  ``.../{from}/fw48h/regionid/{id}`` and the same with ``/postcode/{RG10}`` ->
  ``{"data": {"regionid", "shortname", "data": [{"from", "to", "intensity": {"forecast",
  "index"}, "generationmix": [...]}]}}`` (regional figures are modelled: ``forecast`` only).

Zones: ``GB`` (national), ``GB-REGION-<id>`` or ``GB-POSTCODE-<outward code>``; options
``region_id`` / ``postcode`` choose a region for the zone ``GB``. ``from``/``to`` are written
``YYYY-MM-DDThh:mmZ``; a request spans at most 14 days.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from carbonpipe.errors import ConfigError, IntensityUnavailable
from carbonpipe.intensity.base import IntensitySeries
from carbonpipe.intensity.http import deadline_after, get_json
from carbonpipe.intensity.parsing import (
    Malformed,
    field,
    iso_z,
    make_series,
    now_utc,
    number,
    parse_time,
    utc,
)

__all__ = ["DEFAULT_URL", "UkCarbonIntensitySource", "parse_national", "parse_regional"]

DEFAULT_URL = "https://api.carbonintensity.org.uk"
NAME = "uk"
_MAX_RANGE = timedelta(days=14)
_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]?$")


def _stamp(when: datetime) -> str:
    return utc(when).strftime("%Y-%m-%dT%H:%MZ")


def _points(items: Any, *, prefer_actual: bool) -> list[tuple[datetime, datetime, float]]:
    if not isinstance(items, list):
        raise Malformed("data is not a list")
    out = []
    for i, item in enumerate(items):
        what = f"data[{i}]"
        start = parse_time(field(item, "from", what), f"{what}.from")
        end = parse_time(field(item, "to", what), f"{what}.to")
        figures = field(item, "intensity", what)
        if not isinstance(figures, Mapping):
            raise Malformed(f"{what}.intensity is not an object")
        value = figures.get("actual") if prefer_actual else None
        if value is None:
            value = figures.get("forecast")
        if value is None:
            continue  # a half hour not yet estimated
        out.append((start, end, number(value, f"{what}.intensity")))
    return out


def parse_national(body: Any, *, prefer_actual: bool) -> list[tuple[datetime, datetime, float]]:
    """Points of a national ``/intensity/...`` body."""
    return _points(field(body, "data", "body"), prefer_actual=prefer_actual)


def parse_regional(body: Any) -> list[tuple[datetime, datetime, float]]:
    """Points of a ``/regional/intensity/...`` body (``data`` an object, or a list of one)."""
    region = field(body, "data", "body")
    if isinstance(region, list):
        if len(region) != 1:
            raise Malformed("data is not one region")
        region = region[0]
    return _points(field(region, "data", "data"), prefer_actual=False)


def _zone_path(zone: str, region_id: int | None, postcode: str | None) -> str:
    """``""`` (national), ``/regionid/<id>`` or ``/postcode/<code>`` for a zone name."""
    upper = zone.strip().upper()
    try:
        if upper.startswith("GB-REGION-"):
            region_id, postcode = _region_id(upper[len("GB-REGION-") :]), None
        elif upper.startswith("GB-POSTCODE-"):
            region_id, postcode = None, _postcode(upper[len("GB-POSTCODE-") :])
    except ConfigError as exc:
        raise IntensityUnavailable(f"{NAME}: zone {zone[:40]!r}: {exc}") from None
    if upper.startswith(("GB-REGION-", "GB-POSTCODE-")):
        pass
    elif upper not in ("GB", "UK", "GBR"):
        raise IntensityUnavailable(
            f"{NAME}: zone {zone[:40]!r} is not in Great Britain (GB, GB-REGION-<1-17>, "
            "GB-POSTCODE-<outward code>)"
        )
    if region_id is not None:
        return f"/regionid/{region_id}"
    if postcode:
        return f"/postcode/{quote(postcode)}"
    return ""


def _region_id(value: Any) -> int:
    try:
        number_ = int(str(value))
    except ValueError:
        number_ = 0
    if not 1 <= number_ <= 17:
        raise ConfigError(f"intensity.region_id must be 1 to 17 (a GB region), got {value!r}")
    return number_


def _postcode(value: Any) -> str:
    text = str(value).strip().upper().split(" ")[0]
    if not _POSTCODE.match(text):
        raise ConfigError(
            f"intensity.postcode must be an outward postcode such as RG10, got {str(value)[:20]!r}"
        )
    return text


class UkCarbonIntensitySource:
    """The GB Carbon Intensity API as a :class:`~carbonpipe.intensity.base.TimeSeriesSource`."""

    name = NAME

    def __init__(
        self, url: str = DEFAULT_URL, *, region_id: int | None = None, postcode: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.region_id = region_id
        self.postcode = postcode

    def __repr__(self) -> str:
        return f"UkCarbonIntensitySource(url={self.url!r}, region_id={self.region_id!r})"

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], env: Mapping[str, str]
    ) -> UkCarbonIntensitySource:
        """``CARBONPIPE_UK_INTENSITY_URL``; options ``region_id`` (1-17) or ``postcode``."""
        url = str(options.get("url") or env.get("CARBONPIPE_UK_INTENSITY_URL") or DEFAULT_URL)
        region = options.get("region_id")
        postcode = options.get("postcode")
        return cls(
            url,
            region_id=_region_id(region) if region is not None else None,
            postcode=_postcode(postcode) if postcode else None,
        )

    def _fetch(
        self, zone: str, start: datetime, end: datetime, *, forecast: bool, timeout_s: float
    ) -> IntensitySeries:
        deadline = deadline_after(timeout_s)
        start, end = utc(start), utc(end)
        where = _zone_path(zone, self.region_id, self.postcode)
        points: list[tuple[datetime, datetime, float]] = []
        ranges: list[tuple[datetime, datetime | None]]
        if forecast:
            ranges = [(start, None)]
        else:
            ranges = []
            chunk = start
            while chunk < end:
                ranges.append((chunk, min(chunk + _MAX_RANGE, end)))
                chunk += _MAX_RANGE
        path = "/regional/intensity" if where else "/intensity"
        for lo, hi in ranges:
            tail = "fw48h" if hi is None else _stamp(hi)
            url = f"{self.url}{path}/{_stamp(lo)}/{tail}{where}"
            body = get_json(url, source=NAME, deadline=deadline)
            try:
                points += (
                    parse_regional(body)
                    if where
                    else parse_national(body, prefer_actual=not forecast)
                )
            except Malformed as exc:
                raise IntensityUnavailable(f"{NAME}: {path}: malformed body ({exc})") from None
        try:
            return make_series(
                points,
                source_name=NAME,
                zone=zone,
                signal="average",
                resolution_s=1800,
                vintage=iso_z(now_utc()),
                forecast=forecast,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise IntensityUnavailable(f"{NAME}: {path}: malformed body ({exc})") from None

    def history(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Half-hourly intensity over ``[start, end)`` (national: ``actual`` where published)."""
        return self._fetch(zone, start, end, forecast=False, timeout_s=timeout_s)

    def forecast(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """The 48-hour forecast from ``start``, cut to ``[start, end)``."""
        return self._fetch(zone, start, end, forecast=True, timeout_s=timeout_s)
