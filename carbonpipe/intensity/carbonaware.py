"""The Green Software Foundation's Carbon Aware SDK, through its Web API.

``CARBON_AWARE_SDK_URL`` (default ``http://localhost:8080``: the SDK is deployed by its user;
there is no public instance). Locations are the SDK's location names (Azure region names such
as ``eastus`` out of the box, or those configured in the deployment):

* ``GET /emissions/bylocation?location=eastus&time=...&toTime=...`` -> ``[{"location", "time",
  "rating", "duration"}]``; ``rating`` is g CO2/kWh, ``duration`` a .NET TimeSpan
  (``"00:05:00"``, ``"1.00:00:00"``);
* ``GET /emissions/forecasts/current?location=eastus&dataStartAt=...&dataEndAt=...`` ->
  ``[{"generatedAt", "location", "forecastData": [{"location", "timestamp", "duration",
  "value"}], "optimalDataPoints": [...], ...}]``; ``duration`` in minutes.

The SDK's figures are marginal or average depending on the data source it is configured with
(WattTime: marginal; Electricity Maps: average): say which with ``intensity: {signal: ...}``
(default ``average``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

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

__all__ = ["CarbonAwareSdkSource", "DEFAULT_URL", "parse_forecast", "parse_timespan"]

DEFAULT_URL = "http://localhost:8080"
NAME = "carbon-aware-sdk"
_TIMESPAN = re.compile(r"^(?:(\d{1,4})\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d{1,7})?$")


def parse_timespan(value: Any, what: str) -> timedelta:
    """A .NET TimeSpan (``[d.]hh:mm:ss[.fffffff]``) as a positive timedelta."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        raise Malformed(f"{what} is not a duration")
    days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes, seconds=secs)
    if span <= timedelta(0):
        raise Malformed(f"{what} is not positive")
    return span


def _minutes(value: Any, what: str) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10080:
        raise Malformed(f"{what} is not a duration in minutes")
    return timedelta(minutes=float(value))


def parse_history(body: Any) -> tuple[list[tuple[datetime, datetime, float]], float]:
    """Points and the longest duration (s) from ``/emissions/bylocation``."""
    if not isinstance(body, list):
        raise Malformed("body is not a list")
    points = []
    longest = 0.0
    for i, item in enumerate(body):
        start = parse_time(field(item, "time", f"[{i}]"), f"[{i}].time")
        span = parse_timespan(field(item, "duration", f"[{i}]"), f"[{i}].duration")
        value = number(field(item, "rating", f"[{i}]"), f"[{i}].rating")
        points.append((start, start + span, value))
        longest = max(longest, span.total_seconds())
    return points, longest or 300.0


def parse_forecast(body: Any) -> tuple[list[tuple[datetime, datetime, float]], float, str]:
    """Points, resolution (s) and ``generatedAt`` from ``/emissions/forecasts/current``."""
    if not isinstance(body, list) or not body:
        raise Malformed("body is not a non-empty list")
    first = body[0]
    data = field(first, "forecastData", "[0]")
    if not isinstance(data, list):
        raise Malformed("forecastData is not a list")
    points = []
    longest = 0.0
    for i, item in enumerate(data):
        what = f"forecastData[{i}]"
        start = parse_time(field(item, "timestamp", what), f"{what}.timestamp")
        span = _minutes(field(item, "duration", what), f"{what}.duration")
        points.append((start, start + span, number(field(item, "value", what), f"{what}.value")))
        longest = max(longest, span.total_seconds())
    generated = first.get("generatedAt")
    vintage = iso_z(parse_time(generated, "generatedAt")) if generated else ""
    return points, longest or 300.0, vintage


class CarbonAwareSdkSource:
    """The Carbon Aware SDK Web API as a :class:`~carbonpipe.intensity.base.TimeSeriesSource`."""

    name = NAME

    def __init__(self, url: str = DEFAULT_URL, *, signal: str = "average") -> None:
        self.url = url.rstrip("/")
        self.signal = signal

    def __repr__(self) -> str:
        return f"CarbonAwareSdkSource(url={self.url!r}, signal={self.signal!r})"

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], env: Mapping[str, str]
    ) -> CarbonAwareSdkSource:
        """``CARBON_AWARE_SDK_URL``; ``signal``: ``average`` (default) or ``marginal``."""
        url = str(options.get("url") or env.get("CARBON_AWARE_SDK_URL") or DEFAULT_URL)
        signal = str(options.get("signal") or "average")
        if signal not in ("average", "marginal"):
            raise ConfigError(f"intensity.signal must be average or marginal, got {signal[:40]!r}")
        return cls(url, signal=signal)

    def _fail(self, path: str, exc: Malformed) -> IntensityUnavailable:
        return IntensityUnavailable(f"{NAME}: {path}: malformed body ({exc})")

    def history(
        self, location: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Measured intensity over ``[start, end)`` from ``/emissions/bylocation``."""
        start, end = utc(start), utc(end)
        path = "/emissions/bylocation"
        params = {"location": location, "time": iso_z(start), "toTime": iso_z(end)}
        body = get_json(
            f"{self.url}{path}", source=NAME, deadline=deadline_after(timeout_s), params=params
        )
        try:
            points, resolution = parse_history(body)
            return make_series(
                points,
                source_name=NAME,
                zone=location,
                signal=self.signal,
                resolution_s=resolution,
                vintage=iso_z(now_utc()),
                forecast=False,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise self._fail(path, exc) from None

    def forecast(
        self, location: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Forecast intensity over ``[start, end)`` from ``/emissions/forecasts/current``."""
        start, end = utc(start), utc(end)
        path = "/emissions/forecasts/current"
        params = {"location": location, "dataStartAt": iso_z(start), "dataEndAt": iso_z(end)}
        body = get_json(
            f"{self.url}{path}", source=NAME, deadline=deadline_after(timeout_s), params=params
        )
        try:
            points, resolution, vintage = parse_forecast(body)
            return make_series(
                points,
                source_name=NAME,
                zone=location,
                signal=self.signal,
                resolution_s=resolution,
                vintage=vintage or iso_z(now_utc()),
                forecast=True,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise self._fail(path, exc) from None
