"""WattTime API v3: the *marginal* operating emissions rate (MOER) of a grid region.

``WATTTIME_API_URL`` (default ``https://api.watttime.org``); ``WATTTIME_USERNAME`` and
``WATTTIME_PASSWORD`` log in:

* ``GET /login`` with HTTP basic auth -> ``{"token": "..."}``, valid 30 minutes; kept in memory
  (never on disk) and renewed after 25 minutes, or once when a data call answers ``401``;
* ``GET /v3/historical?region=CAISO_NORTH&start=...&end=...&signal_type=co2_moer`` and
  ``GET /v3/forecast?region=...&signal_type=co2_moer&horizon_hours=...`` with
  ``Authorization: Bearer <token>`` -> ``{"data": [{"point_time", "value"}, ...],
  "meta": {"region", "signal_type", "units", "data_point_period_seconds", "generated_at", ...}}``.

``co2_moer`` is in lbs CO2/MWh: times 0.45359237 it is g/kWh (1 lb = 0.45359237 kg; 1 MWh =
1,000 kWh). The series says ``signal="marginal"``: what one more kWh would emit there and
then, not the grid's average, so it is never added up as if it were an average.
"""

from __future__ import annotations

import threading
import time
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

__all__ = ["DEFAULT_URL", "LBS_PER_MWH_TO_G_PER_KWH", "WattTimeSource", "parse_body"]

DEFAULT_URL = "https://api.watttime.org"
NAME = "watttime"
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
SIGNAL_TYPE = "co2_moer"
TOKEN_LIFETIME_S = 25 * 60  # WattTime's tokens last 30 minutes; renewed early
_UNITS = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH}
_MAX_RANGE = timedelta(days=30)  # /v3/historical answers at most 32 days a request
_DEFAULT_PERIOD_S = 300.0


def parse_body(body: Any) -> tuple[list[tuple[datetime, datetime, float]], float, str]:
    """``(points in g/kWh, period in s, generated_at or "")`` from a v3 data body."""
    meta = field(body, "meta", "body")
    if not isinstance(meta, Mapping):
        raise Malformed("meta is not an object")
    units = meta.get("units", "lbs_co2_per_mwh")
    if not isinstance(units, str) or units not in _UNITS:
        raise Malformed(f"meta.units {str(units)[:40]!r} is not lbs_co2_per_mwh")
    signal = meta.get("signal_type", SIGNAL_TYPE)
    if signal != SIGNAL_TYPE:
        raise Malformed("meta.signal_type is not co2_moer")
    period = meta.get("data_point_period_seconds", _DEFAULT_PERIOD_S)
    if isinstance(period, bool) or not isinstance(period, (int, float)) or not 1 <= period <= 86400:
        raise Malformed("meta.data_point_period_seconds is out of range")
    data = field(body, "data", "body")
    if not isinstance(data, list):
        raise Malformed("data is not a list")
    step = timedelta(seconds=float(period))
    scale = _UNITS[units]
    points = []
    for i, item in enumerate(data):
        start = parse_time(field(item, "point_time", f"data[{i}]"), f"data[{i}].point_time")
        value = number(field(item, "value", f"data[{i}]"), f"data[{i}].value", scale=scale)
        points.append((start, start + step, value))
    generated = meta.get("generated_at")
    vintage = iso_z(parse_time(generated, "meta.generated_at")) if generated else ""
    return points, float(period), vintage


class WattTimeSource:
    """WattTime v3 as a :class:`~carbonpipe.intensity.base.TimeSeriesSource` (marginal signal)."""

    name = NAME

    def __init__(
        self, url: str = DEFAULT_URL, username: str | None = None, password: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_until = 0.0
        self._lock = threading.Lock()
        self.logins = 0  # how many times /login was called (tests, diagnostics)

    def __repr__(self) -> str:
        return f"WattTimeSource(url={self.url!r}, username={'***' if self._username else None})"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], env: Mapping[str, str]) -> WattTimeSource:
        """``WATTTIME_API_URL`` / ``WATTTIME_USERNAME`` / ``WATTTIME_PASSWORD``."""
        url = str(options.get("url") or env.get("WATTTIME_API_URL") or DEFAULT_URL)
        return cls(url, env.get("WATTTIME_USERNAME") or None, env.get("WATTTIME_PASSWORD") or None)

    def _secrets(self) -> list[str | None]:
        return [self._password, self._token]

    def _login(self, deadline: float) -> str:
        if not (self._username and self._password):
            raise IntensityUnavailable(
                f"{NAME}: WATTTIME_USERNAME and WATTTIME_PASSWORD are not set"
            )
        body = get_json(
            f"{self.url}/login",
            source=NAME,
            deadline=deadline,
            basic_auth=(self._username, self._password),
            secrets=self._secrets(),
        )
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise IntensityUnavailable(f"{NAME}: /login: malformed body (no token)")
        self.logins += 1
        self._token = token
        self._token_until = time.monotonic() + TOKEN_LIFETIME_S
        return token

    def _token_for(self, deadline: float, *, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None or time.monotonic() >= self._token_until:
                return self._login(deadline)
            return self._token

    def _get(self, path: str, params: Mapping[str, str], deadline: float) -> Any:
        token = self._token_for(deadline)
        for attempt in (0, 1):
            try:
                return get_json(
                    f"{self.url}{path}",
                    source=NAME,
                    deadline=deadline,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    secrets=[*self._secrets(), token],
                )
            except IntensityUnavailable as exc:
                if attempt == 0 and "HTTP 401" in str(exc):
                    token = self._token_for(deadline, renew=True)  # expired early: one re-login
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _series(
        self,
        path: str,
        points: list[tuple[datetime, datetime, float]],
        region: str,
        period: float,
        vintage: str,
        *,
        forecast: bool,
        start: datetime,
        end: datetime,
    ) -> IntensitySeries:
        try:
            return make_series(
                points,
                source_name=NAME,
                zone=region,
                signal="marginal",
                resolution_s=period,
                vintage=vintage or iso_z(now_utc()),
                forecast=forecast,
                start=start,
                end=end,
            )
        except Malformed as exc:
            raise IntensityUnavailable(
                redact(f"{NAME}: {path}: malformed body ({exc})", self._secrets())
            ) from None

    def history(
        self, region: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """MOER over ``[start, end)`` in g/kWh (``/v3/historical``, 30 days a request)."""
        deadline = deadline_after(timeout_s)
        start, end = utc(start), utc(end)
        path = "/v3/historical"
        points: list[tuple[datetime, datetime, float]] = []
        period = _DEFAULT_PERIOD_S
        vintage = ""
        chunk = start
        while chunk < end:
            chunk_end = min(chunk + _MAX_RANGE, end)
            params = {
                "region": region,
                "start": iso_z(chunk),
                "end": iso_z(chunk_end),
                "signal_type": SIGNAL_TYPE,
            }
            body = self._get(path, params, deadline)
            try:
                more, period, vintage = parse_body(body)
            except Malformed as exc:
                raise IntensityUnavailable(f"{NAME}: {path}: malformed body ({exc})") from None
            points += more
            chunk = chunk_end
        return self._series(
            path, points, region, period, vintage, forecast=False, start=start, end=end
        )

    def forecast(
        self, region: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Forecast MOER over ``[start, end)`` (``/v3/forecast``, up to 72 hours ahead)."""
        deadline = deadline_after(timeout_s)
        start, end = utc(start), utc(end)
        hours = (end - now_utc()).total_seconds() / 3600
        horizon = max(1, min(72, int(hours + 0.999)))
        path = "/v3/forecast"
        params = {"region": region, "signal_type": SIGNAL_TYPE, "horizon_hours": str(horizon)}
        body = self._get(path, params, deadline)
        try:
            points, period, vintage = parse_body(body)
        except Malformed as exc:
            raise IntensityUnavailable(f"{NAME}: {path}: malformed body ({exc})") from None
        return self._series(
            path, points, region, period, vintage, forecast=True, start=start, end=end
        )
