"""Electricity Maps API v3: measured and forecast average (lifecycle) intensity of a grid zone.

Endpoints (``ELECTRICITYMAPS_API_URL``, default ``https://api.electricitymap.org``), all with
the ``auth-token`` header (``ELECTRICITYMAPS_API_TOKEN``):

* ``GET /v3/carbon-intensity/latest?zone=BE`` -> one object
  ``{zone, carbonIntensity, datetime, updatedAt, ...}``;
* ``GET /v3/carbon-intensity/history?zone=BE`` -> ``{zone, history: [...]}`` (the last 24 hours);
* ``GET /v3/carbon-intensity/past-range?zone=BE&start=...&end=...`` -> ``{zone, data: [...]}``
  (older ranges, at most 10 days a request);
* ``GET /v3/carbon-intensity/forecast?zone=BE`` -> ``{zone, forecast: [...], updatedAt}``.

A zone written ``provider:region`` (``gcp:europe-west1``) is asked by data centre instead:
``dataCenterProvider=gcp&dataCenterRegion=europe-west1``. Points are hourly; ``carbonIntensity``
is gCO2eq/kWh. The token goes in a header only and never into a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from carbonpipe.errors import IntensityUnavailable
from carbonpipe.intensity.base import IntensitySeries
from carbonpipe.intensity.http import deadline_after, get_json, redact
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

__all__ = ["DEFAULT_URL", "ElectricityMapsSource", "parse_points"]

DEFAULT_URL = "https://api.electricitymap.org"
NAME = "electricitymaps"
_HOUR = timedelta(hours=1)
_RECENT = timedelta(hours=24)
_MAX_RANGE = timedelta(days=10)


def parse_points(items: Any, what: str) -> list[tuple[datetime, datetime, float]]:
    """Hourly points from a list of ``{carbonIntensity, datetime}`` objects (nulls skipped)."""
    if not isinstance(items, list):
        raise Malformed(f"{what} is not a list")
    out = []
    for i, item in enumerate(items):
        value = field(item, "carbonIntensity", f"{what}[{i}]")
        start = parse_time(field(item, "datetime", f"{what}[{i}]"), f"{what}[{i}].datetime")
        if value is None:
            continue  # an hour the zone has no figure for
        out.append((start, start + _HOUR, number(value, f"{what}[{i}].carbonIntensity")))
    return out


class ElectricityMapsSource:
    """The Electricity Maps v3 API as a :class:`~carbonpipe.intensity.base.TimeSeriesSource`."""

    name = NAME

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        emission_factor_type: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.emission_factor_type = emission_factor_type

    def __repr__(self) -> str:
        return f"ElectricityMapsSource(url={self.url!r}, token={'***' if self._token else None})"

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], env: Mapping[str, str]
    ) -> ElectricityMapsSource:
        """``ELECTRICITYMAPS_API_URL`` / ``ELECTRICITYMAPS_API_TOKEN``; options may set ``url``."""
        url = str(options.get("url") or env.get("ELECTRICITYMAPS_API_URL") or DEFAULT_URL)
        factor = options.get("emission_factor_type")
        return cls(
            url,
            env.get("ELECTRICITYMAPS_API_TOKEN") or None,
            emission_factor_type=str(factor) if factor else None,
        )

    def _params(self, zone: str, **extra: str) -> dict[str, str]:
        provider, sep, region = zone.partition(":")
        params = (
            {"dataCenterProvider": provider, "dataCenterRegion": region} if sep else {"zone": zone}
        )
        if self.emission_factor_type:
            params["emissionFactorType"] = self.emission_factor_type
        params.update(extra)
        return params

    def _get(self, path: str, params: Mapping[str, str], deadline: float) -> Any:
        if not self._token:
            raise IntensityUnavailable(f"{NAME}: ELECTRICITYMAPS_API_TOKEN is not set")
        headers = {"auth-token": self._token}
        return get_json(
            f"{self.url}{path}",
            source=NAME,
            deadline=deadline,
            params=params,
            headers=headers,
            secrets=[self._token],
        )

    def _malformed(self, path: str, exc: Malformed) -> IntensityUnavailable:
        return IntensityUnavailable(
            redact(f"{NAME}: {path}: malformed body ({exc})", [self._token])
        )

    def latest(self, zone: str, *, timeout_s: float) -> IntensitySeries:
        """The zone's latest hourly figure, as a one-point series."""
        path = "/v3/carbon-intensity/latest"
        body = self._get(path, self._params(zone), deadline_after(timeout_s))
        try:
            points = parse_points([body], "latest")
            vintage = body.get("updatedAt") if isinstance(body, dict) else None
            return make_series(
                points,
                source_name=NAME,
                zone=zone,
                signal="average",
                resolution_s=3600,
                vintage=str(vintage or iso_z(now_utc())),
                forecast=False,
            )
        except Malformed as exc:
            raise self._malformed(path, exc) from None

    def history(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Hourly measured intensity over ``[start, end)`` (``history`` or ``past-range``)."""
        deadline = deadline_after(timeout_s)
        start, end = utc(start), utc(end)
        points: list[tuple[datetime, datetime, float]] = []
        if start >= now_utc() - _RECENT + timedelta(minutes=5):
            path = "/v3/carbon-intensity/history"
            body = self._get(path, self._params(zone), deadline)
            try:
                points = parse_points(field(body, "history", "body"), "history")
            except Malformed as exc:
                raise self._malformed(path, exc) from None
        else:
            path = "/v3/carbon-intensity/past-range"
            chunk_start = start.replace(minute=0, second=0, microsecond=0)
            while chunk_start < end:
                chunk_end = min(chunk_start + _MAX_RANGE, end)
                params = self._params(zone, start=iso_z(chunk_start), end=iso_z(chunk_end))
                body = self._get(path, params, deadline)
                try:
                    points += parse_points(field(body, "data", "body"), "data")
                except Malformed as exc:
                    raise self._malformed(path, exc) from None
                chunk_start = chunk_end
        try:
            return make_series(
                points,
                source_name=NAME,
                zone=zone,
                signal="average",
                resolution_s=3600,
                vintage=iso_z(now_utc()),
                forecast=False,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise self._malformed(path, exc) from None

    def forecast(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Hourly forecast intensity over ``[start, end)`` (as far as the zone's horizon)."""
        path = "/v3/carbon-intensity/forecast"
        body = self._get(path, self._params(zone), deadline_after(timeout_s))
        try:
            points = parse_points(field(body, "forecast", "body"), "forecast")
            updated = body.get("updatedAt")
            vintage = iso_z(parse_time(updated, "updatedAt")) if updated else iso_z(now_utc())
            return make_series(
                points,
                source_name=NAME,
                zone=zone,
                signal="average",
                resolution_s=3600,
                vintage=vintage,
                forecast=True,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise self._malformed(path, exc) from None
