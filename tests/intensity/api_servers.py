"""Loopback servers that speak each intensity API as its documentation describes.

One ``http.server`` per vendor, on 127.0.0.1 and a free port:

* Electricity Maps v3: ``auth-token`` header; ``/v3/carbon-intensity/latest|history|
  past-range|forecast`` by ``zone`` or ``dataCenterProvider``/``dataCenterRegion``;
* WattTime v3: ``/login`` with basic auth -> ``{"token"}``, then ``Bearer`` on ``/v3/historical``
  and ``/v3/forecast`` (``signal_type=co2_moer``, lbs/MWh, 5-minute points);
* Carbon Aware SDK Web API: ``/emissions/bylocation`` and ``/emissions/forecasts/current``;
* GB Carbon Intensity: ``/intensity/{from}/{to|fw48h}`` and
  ``/regional/intensity/{from}/{to|fw48h}/regionid/{id}|postcode/{code}``.

``server.mode`` makes any data path fail as a real API can: ``"401"``, ``"429"``
(with ``Retry-After: 600``), ``"retry"`` (one ``429`` with ``Retry-After: 0``, then the answer),
``"500"``, ``"503"``, ``"malformed"`` (truncated JSON), ``"wrong-shape"`` (valid JSON, wrong
fields), ``"body:<text>"`` (that body), ``"hang"`` (accept, then never answer). Every request is
logged in ``server.requests`` as ``(path_with_query, headers)``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EM_TOKEN = "em-secret-token-4f1c9a"
WT_USER = "carbon-user"
WT_PASSWORD = "wt-secret-pass-77b2"


def _parse(value: str) -> datetime:
    text = value.strip().replace("Z", "+00:00")
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def em_value(when: datetime) -> float:
    """The Electricity Maps server's figure for the hour starting ``when``."""
    return 100.0 + when.hour


def wt_value_lbs(when: datetime) -> float:
    """The WattTime server's MOER (lbs/MWh) for the 5 minutes starting ``when``."""
    return 1000.0 + when.minute


def sdk_value(when: datetime) -> float:
    """The Carbon Aware SDK server's rating for the 5 minutes starting ``when``."""
    return 200.0 + when.minute


def uk_value(when: datetime, actual: bool) -> float:
    """The GB server's figure for the half hour starting ``when``."""
    return (50.0 if actual else 60.0) + when.hour


def _floor(when: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + ((when - epoch) // step) * step


def _steps(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    out = []
    t = _floor(start, step)
    while t < end:
        out.append(t)
        t += step
    return out


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _failure(self) -> bool:
        """Answer as ``server.mode`` says; True when it did."""
        mode = self.server.mode
        if mode == "ok":
            return False
        if mode == "hang":
            self.server.release.wait(60)
            return True
        if mode == "retry":
            self.server.mode = "ok"
            self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
            return True
        if mode in ("401", "500", "503"):
            # A careless API echoes what it was sent: the client must never quote a body.
            echo = {"error": "refused", "echo": dict(self.headers)}
            self._send(int(mode), echo)
            return True
        if mode == "429":
            self._send(429, {"error": "throttled"}, {"Retry-After": "600"})
            return True
        if mode == "malformed":
            self._send(200, b'{"data": [{"point_time": "2024-')
            return True
        if mode == "wrong-shape":
            self._send(200, {"unexpected": [1, 2, 3]})
            return True
        if mode.startswith("body:"):
            self._send(200, mode[len("body:") :].encode("utf-8", "surrogatepass"))
            return True
        raise AssertionError(f"unknown mode {mode!r}")

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append((self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            self.route(parts.path, query)
        except (ValueError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    def route(self, path: str, query: dict[str, str]) -> None:
        raise NotImplementedError


class _ElectricityMaps(_Handler):
    def route(self, path: str, query: dict[str, str]) -> None:
        if self.headers.get("auth-token") != EM_TOKEN:
            self._send(401, {"message": "invalid auth-token"})
            return
        if self._failure():
            return
        zone = query.get("zone")
        if zone is None:
            zone = "BE" if query.get("dataCenterRegion") == "europe-west1" else "XX"
        now = datetime.now(timezone.utc)
        hour = timedelta(hours=1)

        def entry(t: datetime) -> dict[str, Any]:
            return {
                "zone": zone,
                "carbonIntensity": em_value(t),
                "datetime": _iso(t),
                "updatedAt": _iso(now),
                "createdAt": _iso(t),
                "emissionFactorType": "lifecycle",
                "isEstimated": False,
                "estimationMethod": None,
            }

        if path == "/v3/carbon-intensity/latest":
            self._send(200, entry(_floor(now, hour)))
        elif path == "/v3/carbon-intensity/history":
            times = _steps(now - timedelta(hours=24), now, hour)
            self._send(200, {"zone": zone, "history": [entry(t) for t in times]})
        elif path == "/v3/carbon-intensity/past-range":
            start, end = _parse(query["start"]), _parse(query["end"])
            if end - start > timedelta(days=10):
                self._send(400, {"error": "range over 10 days"})
                return
            self._send(200, {"zone": zone, "data": [entry(t) for t in _steps(start, end, hour)]})
        elif path == "/v3/carbon-intensity/forecast":
            times = _steps(now, now + timedelta(hours=24), hour)
            forecast = [{"carbonIntensity": em_value(t), "datetime": _iso(t)} for t in times]
            self._send(200, {"zone": zone, "forecast": forecast, "updatedAt": _iso(now)})
        else:
            self._send(404, {"error": "not found"})


class _WattTime(_Handler):
    def route(self, path: str, query: dict[str, str]) -> None:
        if path == "/login":
            expected = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._send(403, {"error": "bad credentials"})
                return
            self.server.logins += 1
            token = f"wt-token-{self.server.logins}-c0ffee"
            self.server.tokens.add(token)
            self._send(200, {"token": token})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.server.tokens:
            self._send(401, {"error": "token expired"})
            return
        if self._failure():
            return
        if query.get("signal_type") != "co2_moer":
            self._send(400, {"error": "signal_type"})
            return
        step = timedelta(minutes=5)
        now = datetime.now(timezone.utc)
        meta = {
            "region": query["region"],
            "signal_type": "co2_moer",
            "units": "lbs_co2_per_mwh",
            "data_point_period_seconds": 300,
            "model": {"date": "2024-01-01"},
        }
        if path == "/v3/historical":
            start, end = _parse(query["start"]), _parse(query["end"])
            if end - start > timedelta(days=32):
                self._send(400, {"error": "range over 32 days"})
                return
            times = _steps(start, end, step)
        elif path == "/v3/forecast":
            meta["generated_at"] = _iso(_floor(now, step))
            meta["generated_at_period_seconds"] = 300
            hours = int(query.get("horizon_hours", "24"))
            times = _steps(now, now + timedelta(hours=hours), step)
        else:
            self._send(404, {"error": "not found"})
            return
        data = [{"point_time": _iso(t), "value": wt_value_lbs(t)} for t in times]
        self._send(200, {"data": data, "meta": meta})


class _CarbonAwareSdk(_Handler):
    def route(self, path: str, query: dict[str, str]) -> None:
        if self._failure():
            return
        step = timedelta(minutes=5)
        location = query["location"]
        if path == "/emissions/bylocation":
            start, end = _parse(query["time"]), _parse(query["toTime"])
            body = [
                {
                    "location": location,
                    "time": _iso(t),
                    "rating": sdk_value(t),
                    "duration": "00:05:00",
                }
                for t in _steps(start, end, step)
            ]
            self._send(200, body)
        elif path == "/emissions/forecasts/current":
            now = datetime.now(timezone.utc)
            start = _parse(query.get("dataStartAt", _iso(now)))
            end = _parse(query.get("dataEndAt", _iso(now + timedelta(hours=24))))
            data: list[dict[str, Any]] = [
                {"location": location, "timestamp": _iso(t), "duration": 5, "value": sdk_value(t)}
                for t in _steps(start, end, step)
            ]
            best = min(data, key=lambda d: d["value"]) if data else None
            self._send(
                200,
                [
                    {
                        "generatedAt": _iso(_floor(now, step)),
                        "requestedAt": _iso(now),
                        "location": location,
                        "dataStartAt": _iso(start),
                        "dataEndAt": _iso(end),
                        "windowSize": 5,
                        "optimalDataPoints": [best] if best else [],
                        "forecastData": data,
                    }
                ],
            )
        else:
            self._send(404, {"error": "not found"})


_UK_NATIONAL = re.compile(r"^/intensity/([^/]+)/([^/]+)$")
_UK_REGIONAL = re.compile(r"^/regional/intensity/([^/]+)/([^/]+)/(regionid|postcode)/([^/]+)$")


class _UkCarbonIntensity(_Handler):
    def route(self, path: str, query: dict[str, str]) -> None:
        if self._failure():
            return
        half = timedelta(minutes=30)
        now = datetime.now(timezone.utc)
        national = _UK_NATIONAL.match(path)
        regional = _UK_REGIONAL.match(path)
        match = national or regional
        if match is None:
            self._send(404, {"error": {"code": "404 Not Found", "message": "no such path"}})
            return
        start = _parse(match.group(1))
        forecast = match.group(2) == "fw48h"
        end = start + timedelta(hours=48) if forecast else _parse(match.group(2))
        if end - start > timedelta(days=14):
            self._send(400, {"error": {"code": "400 Bad Request", "message": "over 14 days"}})
            return

        def stamp(t: datetime) -> str:
            return t.strftime("%Y-%m-%dT%H:%MZ")

        rows = []
        for t in _steps(start, end, half):
            measured = t + half <= now and not regional
            figures: dict[str, Any] = {"forecast": uk_value(t, False), "index": "moderate"}
            if not regional:
                figures["actual"] = uk_value(t, True) if measured else None
            row: dict[str, Any] = {"from": stamp(t), "to": stamp(t + half), "intensity": figures}
            if regional:
                row["generationmix"] = [
                    {"fuel": "wind", "perc": 40.0},
                    {"fuel": "gas", "perc": 60.0},
                ]
            rows.append(row)
        if national:
            self._send(200, {"data": rows})
            return
        kind, value = match.group(3), match.group(4)
        region: dict[str, Any] = {
            "regionid": int(value) if kind == "regionid" else 12,
            "dnoregion": "SSE South",
            "shortname": "South England",
            "data": rows,
        }
        if kind == "postcode":
            region["postcode"] = value
        self._send(200, {"data": region})


class ApiServer(ThreadingHTTPServer):
    """One vendor's API on 127.0.0.1 (see the module docstring); use as a context manager."""

    daemon_threads = True

    def __init__(self, handler: type[_Handler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.mode = "ok"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self.logins = 0
        self.tokens: set[str] = set()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()

    def expire_tokens(self) -> None:
        """Forget every WattTime token issued, as its 30 minutes running out would."""
        self.tokens.clear()


def electricitymaps() -> ApiServer:
    """An Electricity Maps v3 server (token :data:`EM_TOKEN`)."""
    return ApiServer(_ElectricityMaps)


def watttime() -> ApiServer:
    """A WattTime v3 server (:data:`WT_USER` / :data:`WT_PASSWORD`)."""
    return ApiServer(_WattTime)


def carbon_aware_sdk() -> ApiServer:
    """A Carbon Aware SDK Web API server."""
    return ApiServer(_CarbonAwareSdk)


def uk_carbon_intensity() -> ApiServer:
    """A GB Carbon Intensity API server."""
    return ApiServer(_UkCarbonIntensity)
