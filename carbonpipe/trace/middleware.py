"""Server side: :class:`CarbonTraceMiddleware` wraps an ASGI app and reports each request's energy.

JSON responses get the trace spliced in as their last key (with a corrected Content-Length);
every other response, and a streaming one, gets the ``X-Carbon-Trace`` header. The energy
split between concurrent requests is :mod:`carbonpipe.trace.ledger`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from carbonpipe.exporters.registry import otel_provider
from carbonpipe.trace.client import _KWH_TO_J, TRACE_KEY, _is_json
from carbonpipe.trace.ledger import (
    _LATE_BEGIN_S,
    TraceTotals,
    _Event,
    _Ledger,
    _positive_number,
    _Share,
    _Worker,
)
from carbonpipe.trace.sampler import CodeCarbonSampler, EnergySampler

log = logging.getLogger("carbonpipe.trace")


# -- server: the ASGI middleware --------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CarbonTraceMiddleware:
    """ASGI middleware that measures every HTTP request with CodeCarbon and reports it in its response.

    See the module docstring for the format and how concurrent requests share the machine.

    :param app: the ASGI application to wrap.
    :param country_iso_code: ISO 3166 country of the server, when not on a known cloud region.
    :param cloud_provider: ``gcp``, ``aws`` or ``azure``.
    :param cloud_region: the provider's region; with the provider, its published intensity.
    :param intensity_g_per_kwh: a grid intensity to use instead of looking one up.
    :param pue: data-centre power usage effectiveness applied to emissions (energy stays raw).
    :param tracking_mode: ``machine`` (the whole machine) or ``process`` (this process's share).
    :param measure_power_secs: CodeCarbon's power-monitor period.
    :param max_body_bytes: larger JSON bodies get the header instead of a rewritten body.
    :param trace_timeout_s: how long a response waits for its figures before it goes out with
        ``"tracking_active": false``.
    :param sampler: the :class:`EnergySampler` to use instead of CodeCarbon (tests, other meters).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        country_iso_code: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        intensity_g_per_kwh: float | None = None,
        pue: float = 1.0,
        tracking_mode: str = "machine",
        measure_power_secs: float = 1.0,
        max_body_bytes: int = 8 * 1024 * 1024,
        trace_timeout_s: float = 5.0,
        sampler: EnergySampler | None = None,
    ) -> None:
        self.app = app
        self._cloud = {"cloud.provider": cloud_provider, "cloud.region": cloud_region}
        if intensity_g_per_kwh is None:
            from carbonpipe.intensity.table import lookup_intensity

            intensity_g_per_kwh = lookup_intensity(
                cloud_provider, cloud_region, country_iso_code
            ).intensity_g_per_kwh
        self.intensity_g_per_kwh = _positive_number(
            "intensity_g_per_kwh", intensity_g_per_kwh, zero=True
        )
        self.pue = _positive_number("pue", pue)
        if self.pue < 1.0:
            raise ValueError(f"pue must be >= 1.0, got {pue!r}")
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 0
        ):
            raise ValueError(
                f"max_body_bytes must be a non-negative integer, got {max_body_bytes!r}"
            )
        self.max_body_bytes = max_body_bytes
        self.trace_timeout_s = _positive_number("trace_timeout_s", trace_timeout_s)
        if sampler is None:
            sampler = CodeCarbonSampler(
                tracking_mode=tracking_mode, measure_power_secs=measure_power_secs
            )
        elif not all(callable(getattr(sampler, m, None)) for m in ("start", "stop", "close")):
            raise TypeError("sampler must have start(), stop() and close() (an EnergySampler)")
        self._worker = _Worker(_Ledger(sampler))
        self._ids = itertools.count(1)

    # -- lifecycle ----------------------------------------------------------------------------
    def warm(self, *, wait_s: float = 0.0) -> None:
        """Get the meter ready now (hardware detection) rather than at the first request.

        ASGI lifespan startup does this in the background; ``wait_s`` waits for it, bounded.
        """
        future: concurrent.futures.Future[_Share | None] = concurrent.futures.Future()
        self._worker.submit(_Event("warm", future=future))
        if wait_s > 0:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(timeout=wait_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop measuring until the next request (blocking; lifespan shutdown does it in the background)."""
        future: concurrent.futures.Future[_Share | None] = concurrent.futures.Future()
        self._worker.submit(_Event("close", future=future))
        try:
            future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            log.warning("carbonpipe: the energy sampler did not close within %g s", timeout_s)

    def totals(self) -> TraceTotals:
        """Return what was measured and reported so far (see :class:`TraceTotals`)."""
        return self._worker.ledger.totals()

    # -- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, next(self._ids), send)
        try:
            await self._begin(exchange.rid)
            await self.app(scope, receive, exchange.send)
        finally:
            exchange.finish()
            if exchange.trace is not None:
                self._count(scope, exchange)

    def _count(self, scope: Scope, exchange: _Exchange) -> None:
        """Add the request to OpenTelemetry's ``carbonpipe.request.*``, if the process set it up."""
        provider = otel_provider()
        if provider is None or exchange.trace is None:
            return
        route = getattr(scope.get("route"), "path", None) or scope.get("path") or ""
        attrs: dict[str, str | int] = {"http.route": str(route)}
        attrs.update({k: str(v) for k, v in self._cloud.items() if v})
        if scope.get("method"):
            attrs["http.request.method"] = str(scope["method"])
        if exchange._start is not None and exchange._start.get("status") is not None:
            attrs["http.response.status_code"] = int(exchange._start["status"])
        try:
            from carbonpipe.exporters.otel import record_request

            record_request(provider, exchange.trace, attrs)
        except Exception as exc:
            log.warning("carbonpipe: request metrics not recorded: %r", exc)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                self.warm()
            elif kind == "lifespan.shutdown":
                self._worker.submit(_Event("close"))
            return message

        return wrapped

    async def _begin(self, rid: int) -> None:
        """Put the request in flight; wait (briefly) until the meter runs for it."""
        future: concurrent.futures.Future[_Share | None] = concurrent.futures.Future()
        self._worker.submit(_Event("begin", rid, future=future))
        # Never hold a request up for a meter that is starting (hardware detection) or stuck:
        # past this wait it runs anyway, and its trace says it was not fully measured.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(future), _LATE_BEGIN_S)

    def _end(self, rid: int, *, report: bool) -> concurrent.futures.Future[_Share | None]:
        future: concurrent.futures.Future[_Share | None] = concurrent.futures.Future()
        self._worker.submit(_Event("end", rid, report=report, future=future))
        return future

    def _peek(self, rid: int) -> concurrent.futures.Future[_Share | None]:
        future: concurrent.futures.Future[_Share | None] = concurrent.futures.Future()
        self._worker.submit(_Event("peek", rid, future=future))
        return future

    async def _wait(self, future: concurrent.futures.Future[_Share | None]) -> _Share | None:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.trace_timeout_s)
        except asyncio.TimeoutError:
            log.warning(
                "carbonpipe: no energy figures within %g s; response sent untracked",
                self.trace_timeout_s,
            )
        except Exception as exc:
            log.warning("carbonpipe: no energy figures (%r); response sent untracked", exc)
        return None

    def _trace(self, share: _Share | None, duration_s: float, *, streaming: bool) -> dict[str, Any]:
        """Build the trace of one request from its share of the measured energy."""
        if share is None:
            share = _Share(0.0, 0.0, 0.0, 0, ok=False, measured=False)
        energy = share.energy_kwh

        def watts(kwh: float) -> float:
            return kwh * _KWH_TO_J / duration_s if duration_s > 0 else 0.0

        trace: dict[str, Any] = {
            "emissions_g_co2": energy * self.pue * self.intensity_g_per_kwh,
            "energy_consumed_wh": energy * 1000.0,
            "cpu_energy_wh": share.cpu_energy_kwh * 1000.0,
            "gpu_energy_wh": share.gpu_energy_kwh * 1000.0,
            "ram_energy_wh": share.ram_energy_kwh * 1000.0,
            "duration_seconds": duration_s,
            "cpu_power_watts": watts(share.cpu_energy_kwh),
            "gpu_power_watts": watts(share.gpu_energy_kwh),
            "ram_power_watts": watts(share.ram_energy_kwh),
            "measured": share.measured,
            "tracking_active": share.ok,
            "tracking_method": "codecarbon",
            "carbon_intensity_g_per_kwh": self.intensity_g_per_kwh,
            "pue": self.pue,
            "concurrent_requests": share.max_in_flight,
        }
        if streaming:
            trace["streaming"] = True
        return trace


class _Exchange:
    """One HTTP request in the middleware: holds the response start until its trace is known."""

    def __init__(self, middleware: CarbonTraceMiddleware, rid: int, send: Send) -> None:
        self._mw = middleware
        self.rid = rid
        self._downstream = send
        self._started = time.perf_counter()
        self._start: Message | None = None
        self._json = False
        self._parts: list[bytes] = []
        self._size = 0
        self._flushed = False
        self._ended = False
        self.trace: dict[str, Any] | None = None  # what the response reported, once it did

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if self._flushed or (self._start is None and kind != "http.response.start"):
            await self._downstream(message)
            if self._flushed and _ends_body(message):
                self.finish()
            return
        if kind == "http.response.start":
            self._start = message
            self._json = _rewritable_json(message.get("headers") or [])
            return
        if kind == "http.response.body":
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self._json and self._size + len(body) <= self._mw.max_body_bytes:
                self._parts.append(body)
                self._size += len(body)
                if not more:
                    await self._flush_json()
                return
            await self._flush_with_header(message, complete=not more)
            return
        # Trailers, pathsend and other extensions: the headers must go first, as they are now.
        await self._flush_with_header(message, complete=False)

    def finish(self) -> None:
        """Take the request out of the ledger if the response did not (error, disconnect)."""
        if not self._ended:
            self._ended = True
            self._mw._end(self.rid, report=False)

    async def _flush_json(self) -> None:
        self._ended = True
        share = await self._mw._wait(self._mw._end(self.rid, report=True))
        start, body = self._held_start(), b"".join(self._parts)
        try:
            trace = self._mw._trace(share, self._elapsed(), streaming=False)
            self.trace = trace
            spliced = _splice(body, trace)
            if spliced is None:
                start = _with_header(start, trace)
            else:
                start = _with_content_length(start, len(spliced))
                body = spliced
        except Exception as exc:
            log.warning("carbonpipe: response sent without x_carbon_trace: %r", exc)
            start, body = self._held_start(), b"".join(self._parts)
        self._flushed = True
        await self._downstream(start)
        await self._downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def _flush_with_header(self, message: Message, *, complete: bool) -> None:
        """Send the held start with the trace header, then what was held, then ``message``.

        ``complete``: the body ends with ``message``, so the trace covers the whole request;
        otherwise the response streams on and the trace covers it until now.
        """
        if complete:
            self._ended = True
            future = self._mw._end(self.rid, report=True)
        else:
            future = self._mw._peek(self.rid)
        share = await self._mw._wait(future)
        start = self._held_start()
        try:
            trace = self._mw._trace(share, self._elapsed(), streaming=not complete)
            self.trace = trace
            start = _with_header(start, trace)
        except Exception as exc:
            log.warning("carbonpipe: response sent without X-Carbon-Trace: %r", exc)
            start = self._held_start()
        self._flushed = True
        await self._downstream(start)
        if self._parts:
            body, self._parts = b"".join(self._parts), []
            await self._downstream({"type": "http.response.body", "body": body, "more_body": True})
        await self._downstream(message)
        if _ends_body(message):
            self.finish()

    def _held_start(self) -> Message:
        assert self._start is not None
        return self._start

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started


def _ends_body(message: Message) -> bool:
    return message.get("type") == "http.response.body" and not message.get("more_body", False)


def _rewritable_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    content_type = encoding = None
    for name, value in headers:
        lower = bytes(name).lower()
        if lower == b"content-type":
            content_type = bytes(value).decode("latin-1")
        elif lower == b"content-encoding":
            encoding = bytes(value).decode("latin-1").strip().lower()
    if encoding not in (None, "", "identity"):
        return False
    if not _is_json(content_type):
        return False
    assert content_type is not None
    charset = content_type.lower().partition("charset=")[2].strip(" \"'")
    return charset in ("", "utf-8", "utf8")


def _splice(body: bytes, trace: Mapping[str, Any]) -> bytes | None:
    """Add the trace as the last key of a JSON object body, keeping the app's own bytes as they are."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict) or TRACE_KEY in document:
        return None
    text = body.rstrip()
    if not text.endswith(b"}"):
        return None
    separator = b"," if document else b""
    encoded = json.dumps(trace, separators=(",", ":"), allow_nan=False).encode("ascii")
    return text[:-1] + separator + b'"' + TRACE_KEY.encode() + b'":' + encoded + b"}"


def _with_header(start: Message, trace: Mapping[str, Any]) -> Message:
    value = json.dumps(trace, separators=(",", ":"), allow_nan=False).encode("ascii")
    headers = [
        (n, v) for n, v in start.get("headers") or [] if bytes(n).lower() != b"x-carbon-trace"
    ]
    return {**start, "headers": [*headers, (b"x-carbon-trace", value)]}


def _with_content_length(start: Message, length: int) -> Message:
    headers = [
        (n, v) for n, v in start.get("headers") or [] if bytes(n).lower() != b"content-length"
    ]
    return {**start, "headers": [*headers, (b"content-length", str(length).encode("ascii"))]}
