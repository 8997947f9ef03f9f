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
configured location (:func:`carbonpipe.intensity.table.lookup_intensity`), never CodeCarbon's own.
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

Modules: ``client`` (reading a trace; :func:`attribute`), ``hooks`` (httpx and requests hooks),
``middleware`` (the ASGI middleware), ``sampler`` (the segmenting CodeCarbon meter), ``ledger``
(splitting energy between concurrent requests).

May import: everything below the tracker, and ``step`` (the running step) for attribution.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "CodeCarbonMetrics": "carbonpipe.trace.client",
    "TRACE_HEADER": "carbonpipe.trace.client",
    "TRACE_KEY": "carbonpipe.trace.client",
    "attribute": "carbonpipe.trace.client",
    "extract_carbon_metrics": "carbonpipe.trace.client",
    "httpx_hooks": "carbonpipe.trace.hooks",
    "requests_hook": "carbonpipe.trace.hooks",
    "TraceTotals": "carbonpipe.trace.ledger",
    "CarbonTraceMiddleware": "carbonpipe.trace.middleware",
    "CodeCarbonSampler": "carbonpipe.trace.sampler",
    "EnergySampler": "carbonpipe.trace.sampler",
    "Segment": "carbonpipe.trace.sampler",
}

__all__ = [
    "CarbonTraceMiddleware",
    "CodeCarbonMetrics",
    "CodeCarbonSampler",
    "EnergySampler",
    "Segment",
    "TRACE_HEADER",
    "TRACE_KEY",
    "TraceTotals",
    "attribute",
    "extract_carbon_metrics",
    "httpx_hooks",
    "requests_hook",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.trace.client import (
        TRACE_HEADER,
        TRACE_KEY,
        CodeCarbonMetrics,
        attribute,
        extract_carbon_metrics,
    )
    from carbonpipe.trace.hooks import httpx_hooks, requests_hook
    from carbonpipe.trace.ledger import TraceTotals
    from carbonpipe.trace.middleware import CarbonTraceMiddleware
    from carbonpipe.trace.sampler import CodeCarbonSampler, EnergySampler, Segment
