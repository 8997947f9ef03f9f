"""``x_carbon_trace``: model servers report what each request cost, clients charge it to their step.

The format is the one self-hosted model servers instrumented with CodeCarbon already use (see
``shared/reference/x-carbon-trace.md``): a JSON response carries a top-level ``x_carbon_trace``
object; other responses carry the same object, compact, in an ``X-Carbon-Trace`` header::

    {"emissions_g_co2": 0.00052, "energy_consumed_wh": 0.0015, "cpu_energy_wh": 0.0005,
     "gpu_energy_wh": 0.0008, "ram_energy_wh": 0.0002, "duration_seconds": 0.5,
     "cpu_power_watts": 85.0, "gpu_power_watts": 250.0, "ram_power_watts": 15.0,
     "measured": true, "tracking_active": true}

**Server side.** :class:`CarbonTraceMiddleware` wraps any ASGI app (FastAPI, Starlette, ...)::

    app = CarbonTraceMiddleware(app, cloud_provider="gcp", cloud_region="europe-west1")

JSON responses (``application/json`` or ``+json``, not compressed, an object, at most
``max_body_bytes``) get the trace spliced in as their last key and a corrected Content-Length;
every other response gets the header. A streaming response gets the header only, with the
energy used until its headers left (``"streaming": true``): what it uses afterwards is
measured but cannot be reported. A JSON body that already carries an ``x_carbon_trace`` (a
gateway forwarding a model server's) keeps it, and ours goes in the header. Emissions are priced with carbonpipe's intensity of the
configured location (:func:`carbonpipe.intensity.lookup_intensity`), never CodeCarbon's own.
Tracking never breaks a request: if measuring fails, the response still goes out, with
``"tracking_active": false`` and a logged warning.

Energies are the request's share of the machine (see below), powers are that share's mean
power (its energy over its duration), and ``concurrent_requests`` is the most requests that were
in flight with it. ``measured`` is false when part of the request went unmeasured (the meter
was still starting, or failed).

**Concurrency model.** CodeCarbon 3.3's task API measures one task at a time per tracker:
``start_task`` while a task runs only logs "A task is already under measure" and returns, and
the next ``stop_task`` ends whichever task is active. One task per request is therefore wrong as
soon as two requests overlap. Instead one long-lived ``OfflineEmissionsTracker`` measures the
machine in *segments*, cut with ``stop_task``/``start_task`` whenever the set of requests in
flight changes (a request starts or ends). Within a segment the set is constant, so its energy
is split equally among the requests in flight, which is splitting each interval's energy in
proportion to each request's time in flight. Energy is conserved: the traces add up to the
energy CodeCarbon measured over the busy periods (:meth:`CarbonTraceMiddleware.totals`); idle
time is not measured at all (no task runs). All cuts happen on one worker thread, off the event
loop; events that queue while a cut runs are applied together at the next cut, so a burst costs
one CodeCarbon sample, not one per request. A request waits at most 50 ms for the meter at its
start; if the meter is slower (still detecting hardware) the request goes ahead and its trace
is not ``measured``. CodeCarbon measures nothing for about a millisecond at each cut. The
middleware needs an asyncio server (uvicorn, hypercorn's asyncio worker). In ``machine`` mode each process meters the whole
machine: run one server process per machine (or use ``tracking_mode="process"``), or the
machine's energy is counted once per process.

**Client side.** :func:`extract_carbon_metrics` (or :meth:`CodeCarbonMetrics.from_response`)
reads a trace from an ``httpx``/``requests`` response, a dict or JSON text, normalised to kWh
and kg. A missing trace gives ``None``; a malformed one raises :class:`InvalidCarbonTrace`
naming the field, or with ``strict=False`` gives a result flagged ``partial`` with its
``problems``.

**Attribution.** Inside a tracked step (:meth:`carbonpipe.CarbonTracker.start_tracking`), what a
model server reports is charged to the step's record (``energy_kwh.remote`` and ``remote``) and
so to its budget. Pick one way per client:

* automatic: ``httpx.Client(event_hooks=httpx_hooks())``,
  ``httpx.AsyncClient(event_hooks=httpx_hooks(asynchronous=True))`` or
  ``session.hooks["response"].append(requests_hook())``;
* explicit: ``attribute(response)`` or ``extract_carbon_metrics(response, attribute=True)``.

A response is charged at most once, however many of these see it. The server is named by the
response's URL as ``scheme://host:port``. The step is found through a context variable:
asyncio tasks and ``asyncio.to_thread`` see it, plain threads and thread pools do not (run them
in ``contextvars.copy_context()`` to charge their calls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from carbonpipe.errors import InvalidCarbonTrace

__all__ = [
    "TRACE_HEADER",
    "TRACE_KEY",
    "CarbonTraceMiddleware",
    "CodeCarbonMetrics",
    "CodeCarbonSampler",
    "EnergySampler",
    "Segment",
    "TraceTotals",
    "attribute",
    "extract_carbon_metrics",
    "httpx_hooks",
    "requests_hook",
]

log = logging.getLogger("carbonpipe.trace")

TRACE_KEY = "x_carbon_trace"
TRACE_HEADER = "x-carbon-trace"

_KWH_TO_J = 3.6e6
# A request whose start reached the meter later than this was partly unmeasured.
_LATE_BEGIN_S = 0.05
_ATTRIBUTED = "_carbonpipe_attributed_trace"

# -- client: reading a trace ------------------------------------------------------------------

_ENERGY_UNITS = {"wh": 1e-3, "kwh": 1.0, "j": 1 / _KWH_TO_J}
_MASS_UNITS = {
    "g_co2": 1e-3,
    "g_co2e": 1e-3,
    "g_co2eq": 1e-3,
    "kg_co2": 1.0,
    "kg_co2e": 1.0,
    "kg_co2eq": 1.0,
}
_POWER_UNITS = {"watts": 1.0, "w": 1.0, "kw": 1e3}
_TIME_UNITS = {"seconds": 1.0, "s": 1.0, "ms": 1e-3}
# (key prefix, CodeCarbonMetrics field, units): a key "<prefix><unit>" with an unknown unit is
# an error, so a server reporting "energy_consumed_mwh" is refused, not silently misread.
_FAMILIES: tuple[tuple[str, str, Mapping[str, float]], ...] = (
    ("energy_consumed_", "energy_kwh", _ENERGY_UNITS),
    ("cpu_energy_", "cpu_energy_kwh", _ENERGY_UNITS),
    ("gpu_energy_", "gpu_energy_kwh", _ENERGY_UNITS),
    ("ram_energy_", "ram_energy_kwh", _ENERGY_UNITS),
    ("emissions_", "gwp_kgco2eq", _MASS_UNITS),
    ("cpu_power_", "cpu_power_watts", _POWER_UNITS),
    ("gpu_power_", "gpu_power_watts", _POWER_UNITS),
    ("ram_power_", "ram_power_watts", _POWER_UNITS),
    ("duration_", "duration_s", _TIME_UNITS),
)
# Keys that share a family's prefix but are other quantities (CodeCarbon's emissions rate).
_NOT_FAMILY = ("emissions_rate",)
_FLAGS = ("measured", "tracking_active")


@dataclass(frozen=True)
class CodeCarbonMetrics:
    """What a model server reported for one request, normalised to kWh, kg CO2e, W and s.

    ``None`` means the server did not report that figure (or, in a ``partial`` result, that it
    was malformed). ``energy_kwh`` is always a number: given, else the sum of the per-device
    figures, else 0 (with a problem recorded unless ``tracking_active`` is false).
    """

    energy_kwh: float
    gwp_kgco2eq: float | None = None
    cpu_energy_kwh: float | None = None
    gpu_energy_kwh: float | None = None
    ram_energy_kwh: float | None = None
    cpu_power_watts: float | None = None
    gpu_power_watts: float | None = None
    ram_power_watts: float | None = None
    duration_s: float | None = None
    measured: bool = True
    tracking_active: bool = True
    server: str | None = None
    partial: bool = False
    problems: tuple[str, ...] = ()
    tracking_method: str = "codecarbon"

    @property
    def emissions_kg_co2e(self) -> float | None:
        """Alias of ``gwp_kgco2eq`` with the unit name carbonpipe's records use."""
        return self.gwp_kgco2eq

    @classmethod
    def from_response(cls, obj: object, *, strict: bool = True) -> CodeCarbonMetrics | None:
        """Read the trace of a response, dict or JSON text; see :func:`extract_carbon_metrics`."""
        return _extract(obj, strict=strict, read_body=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready values."""
        return {
            "energy_kwh": self.energy_kwh,
            "gwp_kgco2eq": self.gwp_kgco2eq,
            "cpu_energy_kwh": self.cpu_energy_kwh,
            "gpu_energy_kwh": self.gpu_energy_kwh,
            "ram_energy_kwh": self.ram_energy_kwh,
            "cpu_power_watts": self.cpu_power_watts,
            "gpu_power_watts": self.gpu_power_watts,
            "ram_power_watts": self.ram_power_watts,
            "duration_s": self.duration_s,
            "measured": self.measured,
            "tracking_active": self.tracking_active,
            "server": self.server,
            "partial": self.partial,
            "problems": list(self.problems),
            "tracking_method": self.tracking_method,
        }


def extract_carbon_metrics(
    obj: object,
    *,
    strict: bool = True,
    attribute: bool = False,
    server: str | None = None,
) -> CodeCarbonMetrics | None:
    """Read the ``x_carbon_trace`` of a response and, optionally, charge it to the running step.

    Args:
        obj: An ``httpx.Response`` or ``requests.Response`` (its JSON body's ``x_carbon_trace``,
            else its ``X-Carbon-Trace`` header), a dict holding ``x_carbon_trace``, JSON text or
            bytes of such a dict, or a :class:`CodeCarbonMetrics` (returned as is).
        strict: Raise :class:`InvalidCarbonTrace` on a malformed trace; with ``False``, return a
            result flagged ``partial`` whose ``problems`` name the bad fields.
        attribute: Also charge the trace to the running tracked step, as :func:`attribute` does.
        server: The server's name for the step's ``remote`` list; default the response's URL.

    Returns:
        The metrics, or ``None`` when there is no trace (or no JSON, with ``strict=False``).

    Raises:
        InvalidCarbonTrace: The trace (or JSON text) is malformed and ``strict`` is true.
        TypeError: ``obj`` is none of the accepted kinds.
    """
    if attribute:
        return _attribute(obj, server=server, strict=strict, read_body=True)
    metrics = _extract(obj, strict=strict, read_body=True)
    if metrics is not None and server is not None:
        metrics = replace(metrics, server=server)
    return metrics


def _extract(obj: object, *, strict: bool, read_body: bool) -> CodeCarbonMetrics | None:
    if isinstance(obj, CodeCarbonMetrics):
        return obj
    if isinstance(obj, Mapping):
        return _from_body(obj, strict=strict, server=None)
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            body = json.loads(obj)
        except (ValueError, UnicodeDecodeError) as exc:
            if strict:
                raise InvalidCarbonTrace(f"response body is not JSON: {exc}") from None
            return None
        return _from_body(body, strict=strict, server=None)
    if hasattr(obj, "headers") and callable(getattr(obj, "json", None)):
        return _from_response(obj, strict=strict, read_body=read_body)
    raise TypeError(
        "expected an httpx or requests response, a dict, JSON text or CodeCarbonMetrics, "
        f"got {type(obj).__name__}"
    )


def _from_body(body: object, *, strict: bool, server: str | None) -> CodeCarbonMetrics | None:
    if not isinstance(body, Mapping):
        return None
    trace = body.get(TRACE_KEY)
    if trace is None:
        return None
    return _parse_trace(trace, strict=strict, server=server, where=TRACE_KEY)


def _from_response(resp: Any, *, strict: bool, read_body: bool) -> CodeCarbonMetrics | None:
    server = _server_of(resp)
    headers = resp.headers
    if read_body and _is_json(headers.get("content-type")):
        try:
            body = resp.json()
        except Exception:  # not read (streamed) or not JSON: the header may still carry a trace
            body = None
        found = _from_body(body, strict=strict, server=server)
        if found is not None:
            return found
    header = headers.get(TRACE_HEADER)
    if not header:
        return None
    where = "X-Carbon-Trace header"
    try:
        trace = json.loads(header)
    except ValueError as exc:
        if strict:
            raise InvalidCarbonTrace(f"{where}: not JSON ({exc})") from None
        return _unreadable(server, f"{where}: not JSON ({exc})")
    return _parse_trace(trace, strict=strict, server=server, where=where)


def _parse_trace(
    trace: object, *, strict: bool, server: str | None, where: str
) -> CodeCarbonMetrics:
    """Validate and normalise one trace object; every problem names its field."""
    problems: list[str] = []

    def bad(message: str) -> None:
        if strict:
            raise InvalidCarbonTrace(message)
        problems.append(message)

    if not isinstance(trace, Mapping):
        message = f"{where}: must be a JSON object, got {type(trace).__name__}"
        bad(message)
        return _unreadable(server, message)
    values: dict[str, float | None] = {}
    seen: dict[str, tuple[str, float]] = {}
    for key, raw in trace.items():
        if not isinstance(key, str):
            continue
        family = _family_of(key)
        if family is None:
            continue
        prefix, target, units = family
        unit = key[len(prefix) :]
        if unit not in units:
            bad(f"{where}.{key}: unknown unit {unit!r}; expected {prefix}{{{', '.join(units)}}}")
            continue
        number = _check_number(f"{where}.{key}", raw, bad)
        if number is None:
            continue
        value = number * units[unit]
        if target in seen:
            other_key, other = seen[target]
            if not math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-15):
                bad(f"{where}.{key}: disagrees with {other_key} (the same figure in another unit)")
                values[target] = None
            continue
        seen[target] = (key, value)
        values[target] = value
    flags: dict[str, bool] = {}
    for name in _FLAGS:
        raw = trace.get(name)
        if raw is None:
            flags[name] = True
        elif isinstance(raw, bool):
            flags[name] = raw
        else:
            bad(f"{where}.{name}: must be true or false, got {type(raw).__name__}")
            flags[name] = False
    energy = values.get("energy_kwh")
    if energy is None:
        parts = [values.get(f"{p}_energy_kwh") for p in ("cpu", "gpu", "ram")]
        known = [p for p in parts if p is not None]
        if known:
            energy = sum(known)
        else:
            energy = 0.0
            if flags["tracking_active"] and "energy_kwh" not in values:
                bad(f"{where}: no energy figure (energy_consumed_wh or energy_consumed_kwh)")
    return CodeCarbonMetrics(
        energy_kwh=energy,
        gwp_kgco2eq=values.get("gwp_kgco2eq"),
        cpu_energy_kwh=values.get("cpu_energy_kwh"),
        gpu_energy_kwh=values.get("gpu_energy_kwh"),
        ram_energy_kwh=values.get("ram_energy_kwh"),
        cpu_power_watts=values.get("cpu_power_watts"),
        gpu_power_watts=values.get("gpu_power_watts"),
        ram_power_watts=values.get("ram_power_watts"),
        duration_s=values.get("duration_s"),
        measured=flags["measured"],
        tracking_active=flags["tracking_active"],
        server=server,
        partial=bool(problems),
        problems=tuple(problems),
    )


def _family_of(key: str) -> tuple[str, str, Mapping[str, float]] | None:
    if key.startswith(_NOT_FAMILY):
        return None
    for family in _FAMILIES:
        if key.startswith(family[0]):
            return family
    return None


def _check_number(field: str, raw: object, bad: Callable[[str], None]) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        bad(f"{field}: must be a number, got {type(raw).__name__} {raw!r}")
        return None
    value = float(raw)
    if not math.isfinite(value):
        bad(f"{field}: must be finite, got {raw!r}")
        return None
    if value < 0:
        bad(f"{field}: must be >= 0, got {raw!r}")
        return None
    return value


def _unreadable(server: str | None, problem: str) -> CodeCarbonMetrics:
    return CodeCarbonMetrics(
        energy_kwh=0.0,
        measured=False,
        tracking_active=False,
        server=server,
        partial=True,
        problems=(problem,),
    )


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _server_of(resp: Any) -> str | None:
    """Return ``scheme://host:port`` of a response's URL, when it has one."""
    try:
        url = resp.url
    except Exception:  # an httpx.Response built without a request has no URL
        return None
    if url is None:
        return None
    try:
        parts = urlsplit(str(url))
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


# -- client: attribution ----------------------------------------------------------------------


def attribute(
    response_or_metrics: object, server: str | None = None, *, strict: bool = True
) -> CodeCarbonMetrics | None:
    """Charge a model server's reported energy and emissions to the running tracked step.

    Adds to the step's record ``energy_kwh.remote`` and its ``remote`` list (per server: count,
    kWh, kg CO2e) through :meth:`current_step().add_remote <carbonpipe.tracker._Step.add_remote>`,
    so the step's emissions and budget include what its calls cost. A response object is
    charged at most once (hooks and explicit calls can meet); a trace without emissions is
    priced at the world-average grid intensity, and a ``partial`` trace charges what was
    readable; both are noted in the record's ``tracking_errors``. Outside a tracked step
    nothing is charged.

    Args:
        response_or_metrics: Anything :func:`extract_carbon_metrics` reads.
        server: The server's name; default the response's ``scheme://host:port``, else
            ``"unknown"``.
        strict: As for :func:`extract_carbon_metrics`.

    Returns:
        The metrics read (charged or not), or ``None`` when there was no trace.
    """
    return _attribute(response_or_metrics, server=server, strict=strict, read_body=True)


def _attribute(
    obj: object, *, server: str | None, strict: bool, read_body: bool
) -> CodeCarbonMetrics | None:
    from carbonpipe.tracker import current_step

    charged = getattr(obj, _ATTRIBUTED, None)
    if isinstance(charged, CodeCarbonMetrics):
        return charged
    metrics = _extract(obj, strict=strict, read_body=read_body)
    if metrics is None:
        return None
    if server is not None:
        metrics = replace(metrics, server=server)
    step = current_step()
    if step is None:
        log.debug("carbonpipe: x_carbon_trace read outside a tracked step; not charged")
        return metrics
    name = metrics.server or "unknown"
    emissions = metrics.gwp_kgco2eq
    if emissions is None:
        from carbonpipe.intensity import lookup_intensity

        world = lookup_intensity(None, None, None).intensity_g_per_kwh
        emissions = metrics.energy_kwh * world / 1000.0
        step.errors.append(
            f"x_carbon_trace from {name} had no emissions; priced at the world average "
            f"({world:g} g/kWh)"
        )
    if metrics.partial:
        step.errors.append(
            f"x_carbon_trace from {name} was malformed, charged what was readable: "
            + "; ".join(metrics.problems)
        )
    step.add_remote(name, energy_kwh=metrics.energy_kwh, emissions_kg_co2e=emissions)
    # Dicts, text and frozen metrics cannot be marked: only response objects are charged once.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(obj, _ATTRIBUTED, metrics)
    return metrics


def _needs_body(response: Any) -> bool:
    headers = response.headers
    return not headers.get(TRACE_HEADER) and _is_json(headers.get("content-type"))


def httpx_hooks(
    *, asynchronous: bool = False, strict: bool = False
) -> dict[str, list[Callable[[Any], Any]]]:
    """Return ``event_hooks`` for an httpx client that charge every traced response to the step.

    ``httpx.Client(event_hooks=httpx_hooks())`` or, for ``httpx.AsyncClient``,
    ``httpx_hooks(asynchronous=True)``. Outside a tracked step the hook does nothing. A JSON
    response is read in the hook to find its trace (httpx calls hooks before the body is read);
    other responses are charged from their header without reading the body. A malformed trace
    is charged as far as it is readable (``strict=False``) and logged; the request never fails
    because of it.
    """
    from carbonpipe.tracker import current_step

    if asynchronous:

        async def on_response_async(response: Any) -> None:
            if current_step() is None:
                return
            try:
                if _needs_body(response):
                    await response.aread()
                _attribute(response, server=None, strict=strict, read_body=True)
            except Exception as exc:
                log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

        return {"response": [on_response_async]}

    def on_response(response: Any) -> None:
        if current_step() is None:
            return
        try:
            if _needs_body(response):
                response.read()
            _attribute(response, server=None, strict=strict, read_body=True)
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

    return {"response": [on_response]}


def requests_hook(*, strict: bool = False) -> Callable[..., None]:
    """Return a ``requests`` response hook that charges every traced response to the step.

    ``session.hooks["response"].append(requests_hook())`` or
    ``requests.get(url, hooks={"response": requests_hook()})``. With ``stream=True`` only the
    ``X-Carbon-Trace`` header is read (the body is the caller's to stream); call
    :func:`attribute` after reading such a response to charge a body trace. Never raises.
    """
    from carbonpipe.tracker import current_step

    def on_response(response: Any, *args: Any, **kwargs: Any) -> None:
        if current_step() is None:
            return
        try:
            _attribute(
                response, server=None, strict=strict, read_body=not kwargs.get("stream", False)
            )
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace not charged: %s", exc)

    return on_response


# -- server: energy segments ------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Energy the machine used between two cuts of an :class:`EnergySampler`, per device."""

    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    duration_s: float

    @property
    def energy_kwh(self) -> float:
        """Return CPU + GPU + RAM energy in kWh."""
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


class EnergySampler(Protocol):
    """A meter measured in segments: ``start()`` opens one, ``stop()`` closes it and says its energy.

    Calls come from one thread, alternate (start, stop, start, ...), and may block; the first
    ``start()`` may take seconds (hardware detection). ``measured`` says whether its figures
    are measurements (``True``) or estimates.
    """

    measured: bool

    def start(self) -> None:
        """Open a segment now."""

    def stop(self) -> Segment:
        """Close the open segment now and return its energy."""

    def close(self) -> None:
        """Release the meter (close an open segment, stop threads)."""


class CodeCarbonSampler:
    """Segments measured by one long-lived CodeCarbon ``OfflineEmissionsTracker``, as tasks.

    Each segment is one CodeCarbon task (``start_task``/``stop_task``): the scheduler stays
    paused, CodeCarbon's 1 s power monitor runs only while a segment is open, and its own
    intensity is never used (forced to 0; the middleware prices energy itself). The hardware
    profile carbonpipe saves for the step meter is reused, so a warm machine starts in
    milliseconds. Between two segments CodeCarbon measures nothing for about a millisecond.
    """

    measured = True

    def __init__(self, *, tracking_mode: str = "machine", measure_power_secs: float = 1.0) -> None:
        if tracking_mode not in ("machine", "process"):
            raise ValueError(f"tracking_mode must be 'machine' or 'process', got {tracking_mode!r}")
        if (
            isinstance(measure_power_secs, bool)
            or not isinstance(measure_power_secs, (int, float))
            or not 0 < measure_power_secs < math.inf
        ):
            raise ValueError(
                f"measure_power_secs must be a positive number of seconds, got {measure_power_secs!r}"
            )
        self.tracking_mode = tracking_mode
        self._measure_power_secs = float(measure_power_secs)
        self._tracker: Any = None
        self._task: str | None = None
        self._count = 0

    def _ensure_tracker(self) -> Any:
        if self._tracker is None:
            self._tracker = _new_codecarbon_tracker(self.tracking_mode, self._measure_power_secs)
        return self._tracker

    def start(self) -> None:
        """Open a segment: start a CodeCarbon task."""
        tracker = self._ensure_tracker()
        if self._task is not None:
            raise RuntimeError("a segment is already open")
        self._count += 1
        name = f"carbonpipe-segment-{self._count}"
        try:
            tracker.start_task(name)
            # start_task logs and returns instead of raising when it cannot start the task.
            if getattr(tracker, "_active_task", name) != name:
                raise RuntimeError("CodeCarbon did not start the measurement task (see its log)")
        except Exception:
            # A half-started tracker refuses every later task: the next start builds a new one.
            self._tracker = None
            raise
        self._task = name

    def stop(self) -> Segment:
        """Close the open segment: stop the task and return its energy."""
        if self._task is None or self._tracker is None:
            raise RuntimeError("no segment is open")
        name, self._task = self._task, None
        data = self._tracker.stop_task(name)
        # CodeCarbon keeps every finished task forever; a server cuts thousands an hour.
        tasks = getattr(self._tracker, "_tasks", None)
        if isinstance(tasks, dict):
            tasks.pop(name, None)
        if data is None:
            raise RuntimeError("CodeCarbon returned no data for the measurement task")
        return Segment(
            cpu_energy_kwh=float(data.cpu_energy),
            gpu_energy_kwh=float(data.gpu_energy),
            ram_energy_kwh=float(data.ram_energy),
            duration_s=float(data.duration),
        )

    def close(self) -> None:
        """Stop an open task; the tracker itself holds no other resource."""
        if self._task is not None:
            try:
                self.stop()
            except Exception as exc:
                log.debug("carbonpipe: closing the CodeCarbon sampler: %s", exc)


def _new_codecarbon_tracker(tracking_mode: str, measure_power_secs: float) -> Any:
    """Build the offline tracker, reusing (or saving) the machine's hardware profile."""
    from carbonpipe import hwprofile

    tracker = hwprofile.new_tracker(tracking_mode, measure_power_secs)
    path = None
    try:
        key = hwprofile.tracker_key(tracker)
        path = hwprofile.profile_path(None, key)
        plan = hwprofile.load_profile(path, key)
        if plan is not None:
            hwprofile.inject_plan(tracker, plan)
            return tracker
    except Exception as exc:
        log.debug("carbonpipe: hardware profile unusable, CodeCarbon detects: %s", exc)
        return tracker
    try:
        tracker._ensure_hardware_ready()
        plan = hwprofile.captured_plan(tracker)
        if plan is not None and path is not None:
            hwprofile.save_profile(path, hwprofile.tracker_key(tracker), plan)
    except Exception as exc:
        log.debug("carbonpipe: could not save the hardware profile: %s", exc)
    return tracker


# -- server: the ledger -----------------------------------------------------------------------


@dataclass(frozen=True)
class TraceTotals:
    """What the middleware measured and reported so far; ``busy`` = while a request was in flight.

    Conservation: ``busy_energy_kwh == reported_energy_kwh + unreported_energy_kwh`` plus what
    requests still in flight have accrued.
    """

    requests: int
    in_flight: int
    busy_s: float
    busy_energy_kwh: float
    busy_cpu_energy_kwh: float
    busy_gpu_energy_kwh: float
    busy_ram_energy_kwh: float
    reported_energy_kwh: float
    unreported_energy_kwh: float
    failures: int


@dataclass(frozen=True)
class _Share:
    """One request's accrued energy, as handed to the event loop."""

    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    max_in_flight: int
    ok: bool
    measured: bool

    @property
    def energy_kwh(self) -> float:
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


class _Account:
    """One request's running account in the ledger."""

    __slots__ = ("cpu", "gpu", "ram", "max_in_flight", "ok", "late", "reported")

    def __init__(self, ok: bool, late: bool) -> None:
        self.cpu = self.gpu = self.ram = 0.0
        self.max_in_flight = 0
        self.ok = ok
        self.late = late
        self.reported = 0.0

    def share(self, measured: bool) -> _Share:
        return _Share(
            self.cpu,
            self.gpu,
            self.ram,
            self.max_in_flight,
            self.ok,
            measured and self.ok and not self.late,
        )


@dataclass
class _Event:
    kind: str  # "begin" | "end" | "peek" | "warm" | "close"
    rid: int = 0
    report: bool = True
    future: concurrent.futures.Future[_Share | None] | None = None
    at: float = field(default_factory=time.perf_counter)


class _Ledger:
    """Splits each segment's energy equally among the requests in flight during it.

    Only the worker thread calls :meth:`apply`; :meth:`totals` may be called from anywhere.
    """

    def __init__(self, sampler: EnergySampler, *, retry_after_s: float = 30.0) -> None:
        self._sampler = sampler
        self._retry_after_s = retry_after_s
        self._running = False
        self._failed_at: float | None = None
        self._accounts: dict[int, _Account] = {}
        self._lock = threading.Lock()
        self._requests = 0
        self._busy_s = 0.0
        self._busy = [0.0, 0.0, 0.0]
        self._reported = 0.0
        self._unreported = 0.0
        self._failures = 0

    def apply(self, events: list[_Event]) -> None:
        """Cut the open segment once, charge it to the requests in flight, then apply ``events``."""
        if self._running and any(e.kind in ("begin", "end", "peek", "close") for e in events):
            self._cut()
        for event in events:
            if event.kind == "begin":
                # Queued behind a slow start (hardware detection): its first moments went
                # unmeasured, charged to whoever was in flight, so it is not "measured".
                late = time.perf_counter() - event.at > _LATE_BEGIN_S
                self._accounts[event.rid] = _Account(ok=self._usable(), late=late)
            elif event.kind == "end":
                account = self._accounts.pop(event.rid, None)
                if account is not None:
                    self._close_account(account, event.report)
                _resolve(event.future, account, self._sampler_measured())
            elif event.kind == "peek":
                account = self._accounts.get(event.rid)
                if account is not None:
                    with self._lock:
                        self._reported += account.cpu + account.gpu + account.ram - account.reported
                    account.reported = account.cpu + account.gpu + account.ram
                _resolve(event.future, account, self._sampler_measured())
            elif event.kind == "warm":
                self._warm()
                _resolve(event.future, None)
            elif event.kind == "close":
                self._close_sampler()
                _resolve(event.future, None)
        n = len(self._accounts)
        for account in self._accounts.values():
            account.max_in_flight = max(account.max_in_flight, n)
        closing = any(e.kind == "close" for e in events)
        if self._accounts and not self._running and not closing and self._usable():
            self._start()
        for event in events:  # the meter runs now: the requests may go ahead
            if event.kind == "begin":
                _resolve(event.future, None)

    def totals(self) -> TraceTotals:
        """Return a consistent snapshot of the counters."""
        with self._lock:
            cpu, gpu, ram = self._busy
            return TraceTotals(
                requests=self._requests,
                in_flight=len(self._accounts),
                busy_s=self._busy_s,
                busy_energy_kwh=cpu + gpu + ram,
                busy_cpu_energy_kwh=cpu,
                busy_gpu_energy_kwh=gpu,
                busy_ram_energy_kwh=ram,
                reported_energy_kwh=self._reported,
                unreported_energy_kwh=self._unreported,
                failures=self._failures,
            )

    def _sampler_measured(self) -> bool:
        return bool(getattr(self._sampler, "measured", True))

    def _close_account(self, account: _Account, report: bool) -> None:
        total = account.cpu + account.gpu + account.ram
        with self._lock:
            self._requests += 1
            if report:
                self._reported += total - account.reported
            else:
                self._unreported += total - account.reported

    def _usable(self) -> bool:
        return self._failed_at is None or time.monotonic() - self._failed_at >= self._retry_after_s

    def _start(self) -> None:
        try:
            self._sampler.start()
        except Exception as exc:
            self._fail("start", exc)
            return
        self._running = True
        self._failed_at = None

    def _cut(self) -> None:
        self._running = False
        try:
            segment = self._sampler.stop()
            parts = (segment.cpu_energy_kwh, segment.gpu_energy_kwh, segment.ram_energy_kwh)
            if not all(isinstance(p, (int, float)) and math.isfinite(p) and p >= 0 for p in parts):
                raise ValueError(f"the sampler returned an impossible segment: {segment!r}")
        except Exception as exc:
            self._fail("stop", exc)
            return
        accounts = list(self._accounts.values())
        if accounts:
            k = len(accounts)
            for account in accounts:
                account.cpu += parts[0] / k
                account.gpu += parts[1] / k
                account.ram += parts[2] / k
            with self._lock:
                self._busy_s += max(segment.duration_s, 0.0)
                for i in range(3):
                    self._busy[i] += parts[i]

    def _warm(self) -> None:
        if self._running or self._accounts or not self._usable():
            return
        try:
            self._sampler.start()
            self._sampler.stop()
        except Exception as exc:
            self._fail("warm up", exc)

    def _close_sampler(self) -> None:
        self._running = False
        try:
            self._sampler.close()
        except Exception as exc:
            log.debug("carbonpipe: closing the energy sampler: %s", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        self._running = False
        first = self._failed_at is None
        self._failed_at = time.monotonic()
        for account in self._accounts.values():
            account.ok = False
        with self._lock:
            self._failures += 1
        (log.warning if first else log.debug)(
            "carbonpipe: energy sampler failed to %s, requests are served untracked "
            "(retry in %g s): %r",
            what,
            self._retry_after_s,
            exc,
        )


def _resolve(
    future: concurrent.futures.Future[_Share | None] | None,
    account: _Account | None,
    measured: bool = True,
) -> None:
    if future is None:
        return
    # The waiter may have given up (timeout, disconnect) and cancelled it.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(None if account is None else account.share(measured))


class _Worker:
    """The one thread that talks to the sampler; drains the event queue in batches."""

    def __init__(self, ledger: _Ledger) -> None:
        self.ledger = ledger
        self._queue: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, event: _Event) -> None:
        """Queue ``event``; never raises (a waiter then gets ``None``: untracked)."""
        try:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    # Daemon: a wedged CodeCarbon must never keep the server process alive. It
                    # sleeps on the queue when idle, so it outlives a lifespan shutdown harmlessly.
                    self._thread = threading.Thread(
                        target=self._run, name="carbonpipe-trace", daemon=True
                    )
                    self._thread.start()
            self._queue.put(event)
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace accounting unavailable: %r", exc)
            _resolve(event.future, None)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.ledger.apply(batch)
            except Exception as exc:  # a bug here must not strand the waiters
                log.warning("carbonpipe: x_carbon_trace accounting failed: %r", exc)
                for event in batch:
                    _resolve(event.future, None)


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
        if intensity_g_per_kwh is None:
            from carbonpipe.intensity import lookup_intensity

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
    encoded = json.dumps(trace, separators=(",", ":")).encode("ascii")
    return text[:-1] + separator + b'"' + TRACE_KEY.encode() + b'":' + encoded + b"}"


def _with_header(start: Message, trace: Mapping[str, Any]) -> Message:
    value = json.dumps(trace, separators=(",", ":")).encode("ascii")
    headers = [
        (n, v) for n, v in start.get("headers") or [] if bytes(n).lower() != b"x-carbon-trace"
    ]
    return {**start, "headers": [*headers, (b"x-carbon-trace", value)]}


def _with_content_length(start: Message, length: int) -> Message:
    headers = [
        (n, v) for n, v in start.get("headers") or [] if bytes(n).lower() != b"content-length"
    ]
    return {**start, "headers": [*headers, (b"content-length", str(length).encode("ascii"))]}


def _positive_number(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ValueError(
            f"{name} must be a {'non-negative' if zero else 'positive'} number, got {value!r}"
        )
    return number
