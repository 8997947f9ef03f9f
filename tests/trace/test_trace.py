"""x_carbon_trace: a real uvicorn server with the middleware, real clients inside tracked steps."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from carbonpipe.errors import InvalidCarbonTrace
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.trace.client import CodeCarbonMetrics, attribute, extract_carbon_metrics
from carbonpipe.trace.hooks import httpx_hooks, requests_hook
from carbonpipe.trace.ledger import _Event, _Ledger, _Share
from carbonpipe.trace.middleware import CarbonTraceMiddleware
from carbonpipe.trace.sampler import Segment
from carbonpipe.tracker import CarbonTracker

LOCATION: dict[str, Any] = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}
KWH_PER_WH = 1e-3


# -- the model server ---------------------------------------------------------------------------


async def json_endpoint(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("sleep", "0")))
    return JSONResponse({"answer": 42, "text": "héllo"})


async def text_endpoint(request: Request) -> Response:
    return PlainTextResponse("hello")


async def stream_endpoint(request: Request) -> Response:
    async def chunks() -> Any:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"chunk{i}\n"

    return StreamingResponse(chunks(), media_type="text/plain")


async def list_endpoint(request: Request) -> Response:
    return JSONResponse([1, 2, 3])


async def forwarded_endpoint(request: Request) -> Response:
    return JSONResponse({"x_carbon_trace": {"energy_consumed_wh": 1.0, "emissions_g_co2": 0.1}})


async def failing_endpoint(request: Request) -> Response:
    raise RuntimeError("the model crashed")


def model_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/json", json_endpoint),
            Route("/text", text_endpoint),
            Route("/stream", stream_endpoint),
            Route("/list", list_endpoint),
            Route("/forwarded", forwarded_endpoint),
            Route("/boom", failing_endpoint),
        ]
    )


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="critical", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def hardware_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hw-cache")


@pytest.fixture(autouse=True)
def _shared_hardware_profile(hardware_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Detect CodeCarbon's hardware once per module, not once per test (~1.5 s each)."""
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(hardware_cache))


@pytest.fixture(scope="module")
def middleware() -> Iterator[CarbonTraceMiddleware]:
    mw = CarbonTraceMiddleware(model_app(), **LOCATION)
    mw.warm(wait_s=30)
    yield mw
    mw.close()


@pytest.fixture(scope="module")
def base_url(middleware: CarbonTraceMiddleware) -> Iterator[str]:
    with serve(middleware) as url:
        yield url


@pytest.fixture
def tracker(tmp_path: Path) -> CarbonTracker:
    return CarbonTracker(project_name="trace", output_dir=str(tmp_path), **LOCATION)


def header_trace(response: httpx.Response | requests.Response) -> dict[str, Any]:
    value = response.headers["x-carbon-trace"]
    trace = json.loads(value)
    assert isinstance(trace, dict)
    return trace


def trace_kwh(trace: dict[str, Any]) -> float:
    return float(trace["energy_consumed_wh"]) * KWH_PER_WH


GCP_EUROPE_WEST1 = lookup_intensity("gcp", "europe-west1").intensity_g_per_kwh


# -- server: what the responses carry -----------------------------------------------------------


def test_json_response_gets_the_trace_spliced_in_with_a_fixed_content_length(
    base_url: str,
) -> None:
    response = httpx.get(f"{base_url}/json")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert "x-carbon-trace" not in response.headers
    body = response.json()
    assert body["answer"] == 42 and body["text"] == "héllo"
    trace = body["x_carbon_trace"]
    assert trace["tracking_active"] is True and trace["measured"] is True
    assert trace["tracking_method"] == "codecarbon"
    assert trace["energy_consumed_wh"] > 0
    parts = trace["cpu_energy_wh"] + trace["gpu_energy_wh"] + trace["ram_energy_wh"]
    assert trace["energy_consumed_wh"] == pytest.approx(parts)
    assert trace["carbon_intensity_g_per_kwh"] == GCP_EUROPE_WEST1
    assert trace["emissions_g_co2"] == pytest.approx(trace_kwh(trace) * GCP_EUROPE_WEST1)
    assert trace["duration_seconds"] > 0
    watts = trace["ram_energy_wh"] * 3600 / trace["duration_seconds"]
    assert trace["ram_power_watts"] == pytest.approx(watts, rel=1e-6)


def test_plain_text_response_carries_the_trace_in_a_header(base_url: str) -> None:
    response = requests.get(f"{base_url}/text", timeout=10)
    assert response.text == "hello"
    trace = header_trace(response)
    assert trace["tracking_active"] is True
    assert trace["energy_consumed_wh"] >= 0
    assert "streaming" not in trace


def test_streaming_response_gets_the_header_and_an_untouched_body(base_url: str) -> None:
    with httpx.stream("GET", f"{base_url}/stream") as response:
        trace = header_trace(response)
        body = response.read()
    assert body == b"chunk0\nchunk1\nchunk2\n"
    assert trace["streaming"] is True
    assert trace["tracking_active"] is True


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/list", id="json-array"),
        pytest.param("/forwarded", id="json-that-already-has-a-trace"),
    ],
)
def test_json_the_trace_cannot_join_gets_the_header_and_keeps_its_body(
    base_url: str, path: str
) -> None:
    direct = model_app()
    with serve(direct) as plain_url:
        expected = httpx.get(f"{plain_url}{path}").content
    response = httpx.get(f"{base_url}{path}")
    assert response.content == expected
    assert header_trace(response)["tracking_active"] is True


def test_endpoint_that_raises_still_answers_500_and_leaves_nothing_in_flight(
    base_url: str, middleware: CarbonTraceMiddleware
) -> None:
    response = httpx.get(f"{base_url}/boom")
    assert response.status_code == 500
    assert header_trace(response)["tracking_active"] is True
    deadline = time.monotonic() + 5
    while middleware.totals().in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert middleware.totals().in_flight == 0


class FailingSampler:
    """A meter that cannot start: every request must still be served."""

    measured = True

    def start(self) -> None:
        raise RuntimeError("no RAPL, no psutil, nothing")

    def stop(self) -> Segment:
        raise AssertionError("never started")

    def close(self) -> None:
        pass


def test_tracking_failure_leaves_the_response_intact_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mw = CarbonTraceMiddleware(model_app(), sampler=FailingSampler(), **LOCATION)
    with caplog.at_level(logging.WARNING, logger="carbonpipe"), serve(mw) as url:
        json_response = httpx.get(f"{url}/json")
        text_response = httpx.get(f"{url}/text")
    body = json_response.json()
    assert body["answer"] == 42
    assert body["x_carbon_trace"]["tracking_active"] is False
    assert body["x_carbon_trace"]["energy_consumed_wh"] == 0
    assert text_response.text == "hello"
    assert header_trace(text_response)["tracking_active"] is False
    assert "energy sampler failed" in caplog.text
    assert mw.totals().failures >= 1


def _raw_app(headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


JSON_BODY = b'{"a": 1}'


@pytest.mark.parametrize(
    ("headers", "body", "max_body_bytes"),
    [
        pytest.param(
            [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")],
            gzip.compress(JSON_BODY),
            1024,
            id="compressed-json",
        ),
        pytest.param([(b"content-type", b"application/json")], JSON_BODY, 4, id="json-too-big"),
        pytest.param(
            [(b"content-type", b"application/json; charset=utf-16")],
            JSON_BODY.decode().encode("utf-16"),
            1024,
            id="json-not-utf8",
        ),
        pytest.param([(b"content-type", b"application/json")], b"{oops", 1024, id="broken-json"),
    ],
)
def test_bodies_that_cannot_be_rewritten_go_out_byte_for_byte_with_a_header(
    headers: list[tuple[bytes, bytes]], body: bytes, max_body_bytes: int
) -> None:
    mw = CarbonTraceMiddleware(
        _raw_app(headers, body), sampler=ConstantPowerSampler(10.0), max_body_bytes=max_body_bytes
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(mw({"type": "http", "method": "GET", "path": "/"}, receive, send))
    mw.close()
    assert b"".join(m.get("body", b"") for m in sent[1:]) == body
    names = [name for name, _ in sent[0]["headers"]]
    assert b"x-carbon-trace" in names


# -- server: concurrency ------------------------------------------------------------------------


class ConstantPowerSampler:
    """A machine drawing a constant power: a segment's energy is power x its wall time."""

    measured = True

    def __init__(self, power_w: float) -> None:
        self.power_w = power_w
        self._opened: float | None = None

    def start(self) -> None:
        self._opened = time.perf_counter()

    def stop(self) -> Segment:
        assert self._opened is not None
        duration = time.perf_counter() - self._opened
        self._opened = None
        return Segment(self.power_w * duration / 3.6e6, 0.0, 0.0, duration)

    def close(self) -> None:
        self._opened = None


async def _get_json(client: httpx.AsyncClient, url: str, delay_s: float = 0.0) -> dict[str, Any]:
    await asyncio.sleep(delay_s)
    response = await client.get(url)
    trace = response.json()["x_carbon_trace"]
    assert isinstance(trace, dict)
    return trace


def test_concurrent_requests_split_the_measured_energy_and_conserve_it() -> None:
    mw = CarbonTraceMiddleware(model_app(), **LOCATION)
    mw.warm(wait_s=30)
    sleeps = [0.05, 0.1, 0.15, 0.2, 0.05, 0.1, 0.15, 0.2]

    async def burst(url: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(
                *(
                    _get_json(client, f"{url}/json?sleep={s}", delay_s=0.01 * i)
                    for i, s in enumerate(sleeps)
                )
            )

    with serve(mw) as url:
        before = mw.totals()
        traces = asyncio.run(burst(url))
        after = mw.totals()
    mw.close()
    assert after.requests - before.requests == len(sleeps)
    assert after.in_flight == 0
    assert all(t["tracking_active"] and t["measured"] for t in traces)
    assert max(t["concurrent_requests"] for t in traces) > 1
    reported = sum(trace_kwh(t) for t in traces)
    busy = after.busy_energy_kwh - before.busy_energy_kwh
    assert busy > 0
    assert reported == pytest.approx(busy, rel=1e-9)
    assert after.reported_energy_kwh - before.reported_energy_kwh == pytest.approx(busy, rel=1e-9)
    assert after.unreported_energy_kwh == before.unreported_energy_kwh


def test_each_request_is_charged_in_proportion_to_its_time_in_flight() -> None:
    power_w = 3600.0  # 1 Wh per second: a trace's Wh reads as seconds of the whole machine
    mw = CarbonTraceMiddleware(model_app(), sampler=ConstantPowerSampler(power_w), **LOCATION)

    async def overlap(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(
                _get_json(client, f"{url}/json?sleep=0.6"),
                _get_json(client, f"{url}/json?sleep=0.2", delay_s=0.2),
            )

    with serve(mw) as url:
        httpx.get(f"{url}/text")  # the app is warm
        before = mw.totals()
        long_trace, short_trace = asyncio.run(overlap(url))
        after = mw.totals()
    mw.close()
    # 0.2 s alone, 0.2 s shared with the short request, 0.2 s alone again.
    assert long_trace["energy_consumed_wh"] == pytest.approx(0.5, abs=0.05)
    assert short_trace["energy_consumed_wh"] == pytest.approx(0.1, abs=0.03)
    assert short_trace["concurrent_requests"] == 2
    busy_wh = (after.busy_energy_kwh - before.busy_energy_kwh) * 1000
    assert long_trace["energy_consumed_wh"] + short_trace["energy_consumed_wh"] == pytest.approx(
        busy_wh, rel=1e-9
    )
    assert busy_wh == pytest.approx(after.busy_s - before.busy_s, rel=1e-6)


class ScriptedSampler:
    """Hands out fixed segments, so the split can be checked exactly."""

    measured = True

    def __init__(self, energies_kwh: list[float]) -> None:
        self._energies = list(energies_kwh)
        self.open = False

    def start(self) -> None:
        assert not self.open
        self.open = True

    def stop(self) -> Segment:
        assert self.open
        self.open = False
        kwh = self._energies.pop(0)
        return Segment(kwh / 2, kwh / 4, kwh / 4, 1.0)

    def close(self) -> None:
        self.open = False


def _end(ledger: _Ledger, rid: int) -> _Share:
    future: Future[_Share | None] = Future()
    ledger.apply([_Event("end", rid, future=future)])
    share = future.result(timeout=0)
    assert share is not None
    return share


def test_ledger_splits_each_segment_equally_among_the_requests_in_flight() -> None:
    sampler = ScriptedSampler([10.0, 6.0, 4.0])
    ledger = _Ledger(sampler)
    ledger.apply([_Event("begin", 1)])  # opens segment 1: request 1 alone
    assert sampler.open
    ledger.apply([_Event("begin", 2)])  # 10 kWh to request 1; segment 2: both in flight
    first = _end(ledger, 1)  # 6 kWh split 3 + 3; segment 3: request 2 alone
    second = _end(ledger, 2)  # 4 kWh to request 2; nothing in flight: the meter stops
    assert not sampler.open
    assert first.energy_kwh == pytest.approx(13.0)
    assert second.energy_kwh == pytest.approx(7.0)
    assert first.cpu_energy_kwh == pytest.approx(6.5)
    assert (first.max_in_flight, second.max_in_flight) == (2, 2)
    totals = ledger.totals()
    assert totals.busy_energy_kwh == pytest.approx(20.0)
    assert totals.reported_energy_kwh == pytest.approx(20.0)
    assert totals.busy_s == pytest.approx(3.0)
    assert (totals.requests, totals.in_flight) == (2, 0)


def test_ledger_applies_a_burst_of_events_with_one_cut() -> None:
    sampler = ScriptedSampler([9.0, 1.0])
    ledger = _Ledger(sampler)
    ledger.apply([_Event("begin", 1), _Event("begin", 2), _Event("begin", 3)])
    futures: list[Future[_Share | None]] = [Future(), Future()]
    ledger.apply([_Event("end", 1, future=futures[0]), _Event("end", 2, future=futures[1])])
    third = _end(ledger, 3)
    shares = [f.result(timeout=0) for f in futures]
    assert [s.energy_kwh for s in shares if s] == pytest.approx([3.0, 3.0])
    assert third.energy_kwh == pytest.approx(4.0)


def test_streamed_energy_after_the_headers_is_counted_as_unreported() -> None:
    sampler = ScriptedSampler([2.0, 5.0])
    ledger = _Ledger(sampler)
    ledger.apply([_Event("begin", 1)])
    peek: Future[_Share | None] = Future()
    ledger.apply([_Event("peek", 1, future=peek)])
    shown = peek.result(timeout=0)
    assert shown is not None and shown.energy_kwh == pytest.approx(2.0)
    ledger.apply([_Event("end", 1, report=False)])
    totals = ledger.totals()
    assert totals.reported_energy_kwh == pytest.approx(2.0)
    assert totals.unreported_energy_kwh == pytest.approx(5.0)
    assert totals.busy_energy_kwh == pytest.approx(7.0)


# -- client: reading traces ---------------------------------------------------------------------

REFERENCE_TRACE = {
    "emissions_g_co2": 0.00052,
    "energy_consumed_wh": 0.0015,
    "cpu_energy_wh": 0.0005,
    "gpu_energy_wh": 0.0008,
    "ram_energy_wh": 0.0002,
    "duration_seconds": 0.5,
    "cpu_power_watts": 85.0,
    "gpu_power_watts": 250.0,
    "ram_power_watts": 15.0,
    "measured": True,
    "tracking_active": True,
}


def _httpx_response(**kwargs: Any) -> httpx.Response:
    return httpx.Response(200, request=httpx.Request("GET", "http://model:8000/v1/chat"), **kwargs)


def _requests_response(body: bytes, headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.headers.update(headers)
    response.url = "https://models.example.com/v1/generate"
    return response


@pytest.mark.parametrize(
    ("obj", "server"),
    [
        pytest.param({"x_carbon_trace": REFERENCE_TRACE, "text": "hi"}, None, id="dict"),
        pytest.param(json.dumps({"x_carbon_trace": REFERENCE_TRACE}), None, id="json-text"),
        pytest.param(json.dumps({"x_carbon_trace": REFERENCE_TRACE}).encode(), None, id="bytes"),
        pytest.param(
            _httpx_response(json={"x_carbon_trace": REFERENCE_TRACE}),
            "http://model:8000",
            id="httpx-json-body",
        ),
        pytest.param(
            _httpx_response(text="hi", headers={"X-Carbon-Trace": json.dumps(REFERENCE_TRACE)}),
            "http://model:8000",
            id="httpx-header",
        ),
        pytest.param(
            _requests_response(
                json.dumps({"x_carbon_trace": REFERENCE_TRACE}).encode(),
                {"Content-Type": "application/json"},
            ),
            "https://models.example.com:443",
            id="requests-json-body",
        ),
    ],
)
def test_extract_normalises_the_reference_trace_to_kwh_and_kg(
    obj: object, server: str | None
) -> None:
    metrics = extract_carbon_metrics(obj)
    assert metrics is not None
    assert metrics == CodeCarbonMetrics.from_response(obj)
    assert metrics.tracking_method == "codecarbon"
    assert metrics.energy_kwh == pytest.approx(1.5e-6)
    assert metrics.gwp_kgco2eq == pytest.approx(5.2e-7)
    assert metrics.cpu_energy_kwh == pytest.approx(5e-7)
    assert metrics.gpu_energy_kwh == pytest.approx(8e-7)
    assert metrics.ram_energy_kwh == pytest.approx(2e-7)
    assert (metrics.cpu_power_watts, metrics.gpu_power_watts, metrics.ram_power_watts) == (
        85.0,
        250.0,
        15.0,
    )
    assert metrics.duration_s == 0.5
    assert metrics.measured and metrics.tracking_active and not metrics.partial
    assert metrics.server == server


def test_other_units_are_normalised_too() -> None:
    trace = {"energy_consumed_kwh": 2e-6, "emissions_kg_co2eq": 1e-7, "duration_ms": 250}
    metrics = extract_carbon_metrics({"x_carbon_trace": trace})
    assert metrics is not None
    assert (metrics.energy_kwh, metrics.gwp_kgco2eq) == (2e-6, 1e-7)
    assert metrics.duration_s == pytest.approx(0.25)
    assert metrics.cpu_energy_kwh is None


def test_energy_defaults_to_the_sum_of_the_devices() -> None:
    metrics = extract_carbon_metrics(
        {"x_carbon_trace": {"cpu_energy_wh": 1.0, "ram_energy_wh": 0.5}}
    )
    assert metrics is not None and metrics.energy_kwh == pytest.approx(1.5e-3)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({}, id="dict-without-trace"),
        pytest.param({"x_carbon_trace": None}, id="null-trace"),
        pytest.param("[1, 2]", id="json-array"),
        pytest.param(_httpx_response(json={"text": "hi"}), id="httpx-json-without-trace"),
        pytest.param(_httpx_response(text="plain"), id="httpx-text-without-header"),
        pytest.param(
            _requests_response(b"<html/>", {"Content-Type": "text/html"}), id="requests-html"
        ),
    ],
)
def test_missing_trace_gives_none(obj: object) -> None:
    assert extract_carbon_metrics(obj) is None
    assert extract_carbon_metrics(obj, strict=False) is None


@pytest.mark.parametrize(
    ("trace", "field"),
    [
        pytest.param({"energy_consumed_wh": "1.5"}, "energy_consumed_wh", id="string-number"),
        pytest.param(
            {"energy_consumed_wh": 1, "cpu_energy_wh": True}, "cpu_energy_wh", id="bool-number"
        ),
        pytest.param(
            {"energy_consumed_wh": 1, "gpu_energy_wh": -0.1}, "gpu_energy_wh", id="negative"
        ),
        pytest.param({"energy_consumed_wh": math.nan}, "energy_consumed_wh", id="nan"),
        pytest.param(
            {"energy_consumed_wh": 1, "emissions_g_co2": math.inf}, "emissions_g_co2", id="infinite"
        ),
        pytest.param({"energy_consumed_mwh": 1}, "energy_consumed_mwh", id="unknown-energy-unit"),
        pytest.param(
            {"energy_consumed_wh": 1, "emissions_lb_co2": 1},
            "emissions_lb_co2",
            id="unknown-mass-unit",
        ),
        pytest.param(
            {"energy_consumed_wh": 1, "cpu_power_hp": 1}, "cpu_power_hp", id="unknown-power-unit"
        ),
        pytest.param({"energy_consumed_wh": 1, "measured": "yes"}, "measured", id="flag-not-bool"),
        pytest.param(
            {"energy_consumed_wh": 1, "energy_consumed_kwh": 1},
            "energy_consumed_kwh",
            id="units-disagree",
        ),
        pytest.param({"emissions_g_co2": 1}, "energy_consumed_wh", id="no-energy"),
        pytest.param([1, 2], "x_carbon_trace", id="trace-not-object"),
    ],
)
def test_malformed_trace_names_the_field_or_is_flagged_partial(trace: object, field: str) -> None:
    body = {"x_carbon_trace": trace, "text": "the answer"}
    with pytest.raises(InvalidCarbonTrace, match=field):
        extract_carbon_metrics(body)
    metrics = extract_carbon_metrics(body, strict=False)
    assert metrics is not None
    assert metrics.partial is True
    assert any(field in p for p in metrics.problems)
    assert math.isfinite(metrics.energy_kwh) and metrics.energy_kwh >= 0


def test_malformed_header_and_body_text() -> None:
    response = _httpx_response(text="hi", headers={"X-Carbon-Trace": "{oops"})
    with pytest.raises(InvalidCarbonTrace, match="X-Carbon-Trace header"):
        extract_carbon_metrics(response)
    partial = extract_carbon_metrics(response, strict=False)
    assert partial is not None and partial.partial and partial.energy_kwh == 0
    with pytest.raises(InvalidCarbonTrace, match="not JSON"):
        extract_carbon_metrics("not json")
    assert extract_carbon_metrics("not json", strict=False) is None


def test_unrelated_keys_are_ignored() -> None:
    trace = {**REFERENCE_TRACE, "emissions_rate_kg_per_s": 1e-9, "model": "llama", "pue": 1.2}
    metrics = extract_carbon_metrics({"x_carbon_trace": trace})
    assert metrics is not None and not metrics.partial


def test_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="httpx or requests response"):
        extract_carbon_metrics(42)


# -- attribution --------------------------------------------------------------------------------


def _remote(metrics: Any) -> tuple[float, list[dict[str, Any]]]:
    record = metrics.record
    return record.energy_kwh["remote"], record.remote


def _stored_record(tmp_path: Path, record_id: str) -> dict[str, Any]:
    (path,) = tmp_path.glob(f"records/v2/**/{record_id}.json")
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def test_httpx_hooks_charge_every_traced_response_to_the_running_step(
    base_url: str, tracker: CarbonTracker, tmp_path: Path
) -> None:
    traces = []
    with tracker.start_tracking("call-model"), httpx.Client(event_hooks=httpx_hooks()) as client:
        json_response = client.get(f"{base_url}/json")
        traces.append(json_response.json()["x_carbon_trace"])
        traces.append(header_trace(client.get(f"{base_url}/text")))
        with client.stream("GET", f"{base_url}/stream") as streamed:
            traces.append(header_trace(streamed))
            streamed.read()
    metrics = tracker.stop_tracking("call-model")
    remote_kwh, remote = _remote(metrics)
    assert remote_kwh == pytest.approx(sum(trace_kwh(t) for t in traces), rel=1e-9)
    assert remote_kwh > 0
    assert remote == [
        {
            "server": base_url,
            "count": 3,
            "energy_kwh": pytest.approx(remote_kwh),
            "emissions_kg_co2e": pytest.approx(sum(t["emissions_g_co2"] for t in traces) / 1000),
        }
    ]
    stored = _stored_record(tmp_path, metrics.record_id)
    assert stored["energy_kwh"]["remote"] == pytest.approx(remote_kwh)
    assert stored["remote"][0]["count"] == 3
    local = stored["energy_kwh"]["cpu"] + stored["energy_kwh"]["gpu"] + stored["energy_kwh"]["ram"]
    assert stored["energy_kwh"]["total"] == pytest.approx(local + remote_kwh)
    assert metrics.remote_energy_kwh == pytest.approx(remote_kwh)


def test_async_httpx_hooks_charge_concurrent_calls_once_each(
    base_url: str, tracker: CarbonTracker
) -> None:
    async def calls() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(event_hooks=httpx_hooks(asynchronous=True)) as client:
            return await asyncio.gather(
                *(_get_json(client, f"{base_url}/json?sleep=0.05") for _ in range(5))
            )

    with tracker.start_tracking("fan-out"):
        traces = asyncio.run(calls())
    remote_kwh, remote = _remote(tracker.stop_tracking("fan-out"))
    assert remote[0]["count"] == 5
    assert remote_kwh == pytest.approx(sum(trace_kwh(t) for t in traces), rel=1e-9)


def test_requests_hook_and_explicit_calls_charge_a_response_once(
    base_url: str, tracker: CarbonTracker
) -> None:
    with tracker.start_tracking("requests"), requests.Session() as session:
        session.hooks["response"].append(requests_hook())
        response = session.get(f"{base_url}/json", timeout=10)
        again = attribute(response)
        also = extract_carbon_metrics(response, attribute=True)
        text = session.get(f"{base_url}/text", timeout=10)
    remote_kwh, remote = _remote(tracker.stop_tracking("requests"))
    assert again is not None and also == again
    assert remote[0]["count"] == 2
    expected = trace_kwh(response.json()["x_carbon_trace"]) + trace_kwh(header_trace(text))
    assert remote_kwh == pytest.approx(expected, rel=1e-9)


def test_explicit_attribute_of_plain_traces_names_the_server(tracker: CarbonTracker) -> None:
    with tracker.start_tracking("explicit"):
        attribute({"x_carbon_trace": REFERENCE_TRACE}, server="grpc://llm:9000")
        attribute(json.dumps({"x_carbon_trace": REFERENCE_TRACE}), server="grpc://llm:9000")
        metrics = extract_carbon_metrics({"x_carbon_trace": REFERENCE_TRACE})
        assert metrics is not None
        attribute(metrics)
    _, remote = _remote(tracker.stop_tracking("explicit"))
    by_server = {r["server"]: r for r in remote}
    assert by_server["grpc://llm:9000"]["count"] == 2
    assert by_server["grpc://llm:9000"]["energy_kwh"] == pytest.approx(3e-6)
    assert by_server["unknown"]["emissions_kg_co2e"] == pytest.approx(5.2e-7)


def test_trace_without_emissions_is_priced_at_the_world_average(tracker: CarbonTracker) -> None:
    with tracker.start_tracking("no-emissions"):
        attribute({"x_carbon_trace": {"energy_consumed_kwh": 0.001}}, server="http://m:1")
    metrics = tracker.stop_tracking("no-emissions")
    world = lookup_intensity(None, None, None).intensity_g_per_kwh
    assert metrics.record.remote[0]["emissions_kg_co2e"] == pytest.approx(0.001 * world / 1000)
    assert any("world average" in e for e in metrics.tracking_errors)


def test_malformed_trace_seen_by_a_hook_never_breaks_the_call(
    tracker: CarbonTracker, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        bad = {"energy_consumed_wh": 0.5, "cpu_energy_wh": -1}
        return httpx.Response(200, json={"x_carbon_trace": bad, "text": "ok"})

    transport = httpx.MockTransport(handler)
    with (
        tracker.start_tracking("bad-server"),
        httpx.Client(transport=transport, event_hooks=httpx_hooks()) as client,
    ):
        assert client.get("http://bad:8080/").json()["text"] == "ok"
    metrics = tracker.stop_tracking("bad-server")
    assert metrics.record.remote[0]["energy_kwh"] == pytest.approx(0.5e-3)
    assert any("cpu_energy_wh" in e for e in metrics.tracking_errors)


def test_outside_a_step_nothing_is_charged_and_hooks_do_nothing(base_url: str) -> None:
    metrics = attribute({"x_carbon_trace": REFERENCE_TRACE})
    assert metrics is not None and metrics.energy_kwh == pytest.approx(1.5e-6)
    with httpx.Client(event_hooks=httpx_hooks()) as client:
        assert client.get(f"{base_url}/json").status_code == 200


def test_fastapi_app_takes_it_with_add_middleware() -> None:
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()

    @api.get("/predict")
    async def predict() -> dict[str, float]:
        return {"score": 0.9}

    api.add_middleware(CarbonTraceMiddleware, **LOCATION)
    with serve(api) as url:
        body = httpx.get(f"{url}/predict").json()
    assert body["score"] == 0.9
    assert body["x_carbon_trace"]["tracking_method"] == "codecarbon"


def test_importing_the_trace_module_loads_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, json, carbonpipe.trace.middleware;"
        "print(json.dumps(sorted(m for m in ('codecarbon', 'httpx', 'requests', 'starlette',"
        " 'optuna', 'pandas') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
