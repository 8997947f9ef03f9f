"""OpenTelemetry metrics of finished steps and traced requests: the SDK's in-memory reader for
the values, and one real OTLP/HTTP export to a loopback receiver that decodes the protobuf."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.metrics import _internal as metrics_globals
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util._once import Once

from carbonpipe import CarbonTracker, open_store
from carbonpipe.exporters.registry import otel_provider
from carbonpipe.report import read_records, record_keys
from carbonpipe.trace.middleware import CarbonTraceMiddleware
from carbonpipe.trace.sampler import Segment

KWH_TO_J = 3.6e6


def _reset_globals() -> None:
    metrics_globals._METER_PROVIDER_SET_ONCE = Once()
    metrics_globals._METER_PROVIDER = None


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """A process-wide MeterProvider reading into memory, as a user's process would set one."""
    _reset_globals()
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    metrics.set_meter_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        _reset_globals()


def _points(reader: InMemoryMetricReader) -> dict[str, tuple[str, list[Any]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, tuple[str, list[Any]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                found[m.name] = (m.unit or "", list(m.data.data_points))
    return found


def test_no_configured_provider_means_no_sink() -> None:
    _reset_globals()
    assert otel_provider() is None  # the API's default proxy provider is not a configuration


def test_a_finished_step_adds_to_the_counters_and_the_histogram(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    tracker = CarbonTracker(
        project_name="p",
        experiment_name="e",
        pipeline="churn",
        team="ml-platform",
        output_dir=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        measure_power_secs=0.5,
    )
    for _ in range(2):
        with tracker.start_tracking("train"):
            sum(i * i for i in range(100_000))
    store = open_store(str(tmp_path / "store"))
    records = list(read_records(store, record_keys(store)))
    assert len(records) == 2 and all(not r.tracking_errors for r in records)
    points = _points(reader)
    want = {
        "pipeline": "churn",
        "step": "train",
        "team": "ml-platform",
        "status": "succeeded",
        "cloud.provider": "gcp",
        "cloud.region": "europe-west1",
    }
    unit, (energy,) = points["carbonpipe.step.energy"]
    assert unit == "J" and dict(energy.attributes) == want
    assert energy.value == pytest.approx(sum(r.energy_kwh["total"] for r in records) * KWH_TO_J)
    unit, (emissions,) = points["carbonpipe.step.emissions"]
    assert unit == "g" and dict(emissions.attributes) == want
    assert emissions.value == pytest.approx(sum(r.emissions_kg_co2e for r in records) * 1000)
    assert emissions.value > 0
    unit, (duration,) = points["carbonpipe.step.duration"]
    assert unit == "s" and duration.count == 2
    assert duration.sum == pytest.approx(sum(r.duration_s for r in records))


class _FixedSampler:
    """Every measured segment is 2 Wh of CPU energy."""

    measured = True

    def start(self) -> None:
        pass

    def stop(self) -> Segment:
        return Segment(0.002, 0.0, 0.0, 0.01)

    def close(self) -> None:
        pass


def test_the_trace_middleware_counts_each_route(reader: InMemoryMetricReader) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    mw = CarbonTraceMiddleware(
        app,
        cloud_provider="gcp",
        cloud_region="europe-west1",
        intensity_g_per_kwh=100.0,
        sampler=_FixedSampler(),
    )
    mw.warm(wait_s=10)

    async def call(path: str) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            pass

        await mw({"type": "http", "method": "POST", "path": path}, receive, send)

    for path in ("/predict", "/predict", "/health"):
        asyncio.run(call(path))
    mw.close()
    points = _points(reader)
    unit, energy = points["carbonpipe.request.energy"]
    by_route = {p.attributes["http.route"]: p for p in energy}
    assert unit == "J" and set(by_route) == {"/predict", "/health"}
    predict = by_route["/predict"]
    assert predict.attributes["http.response.status_code"] == 200
    assert predict.attributes["http.request.method"] == "POST"
    assert predict.attributes["cloud.region"] == "europe-west1"
    assert predict.value == pytest.approx(2 * 0.002 * KWH_TO_J)
    _, emissions = points["carbonpipe.request.emissions"]
    got = {p.attributes["http.route"]: p.value for p in emissions}
    assert got["/health"] == pytest.approx(0.002 * 100.0)
    _, durations = points["carbonpipe.request.duration"]
    assert sum(p.count for p in durations) == 3


# -- one real OTLP/HTTP export -------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_step_exports_over_otlp_http_to_a_loopback_receiver(tmp_path: Path) -> None:
    bodies: list[tuple[str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
    script = tmp_path / "step.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from opentelemetry import metrics
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            from carbonpipe import CarbonTracker

            exporter = OTLPMetricExporter(endpoint={endpoint!r}, timeout=10)
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
            provider = MeterProvider(metric_readers=[reader])
            metrics.set_meter_provider(provider)
            tracker = CarbonTracker(
                project_name="p", experiment_name="e", pipeline="churn", team="ml",
                output_dir={str(tmp_path / "store")!r},
                cloud_provider="aws", cloud_region="eu-west-1",
            )
            with tracker.start_tracking("evaluate"):
                sum(i * i for i in range(100_000))
            provider.shutdown()  # the last collection goes out now
            """
        )
    )
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 60
    finally:
        server.shutdown()
        server.server_close()
    assert bodies and all(path == "/v1/metrics" for path, _ in bodies)
    found: dict[str, Any] = {}
    for _, body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "carbonpipe"
                for m in sm.metrics:
                    found[m.name] = m
    store = open_store(str(tmp_path / "store"))
    (record,) = read_records(store, record_keys(store))
    energy = found["carbonpipe.step.energy"]
    assert energy.unit == "J" and energy.sum.is_monotonic
    (point,) = energy.sum.data_points
    attrs = {kv.key: kv.value.string_value for kv in point.attributes}
    assert attrs == {
        "pipeline": "churn",
        "step": "evaluate",
        "team": "ml",
        "status": "succeeded",
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
    }
    assert point.as_double == pytest.approx(record.energy_kwh["total"] * KWH_TO_J)
    (em,) = found["carbonpipe.step.emissions"].sum.data_points
    assert em.as_double == pytest.approx(record.emissions_kg_co2e * 1000)
    (dur,) = found["carbonpipe.step.duration"].histogram.data_points
    assert dur.count == 1 and dur.sum == pytest.approx(record.duration_s)


def test_without_a_sink_a_step_imports_no_exporter(tmp_path: Path) -> None:
    """No provider, no Pushgateway URL: a tracked step loads no sink and no metrics library."""
    code = textwrap.dedent(
        f"""
        import sys
        from carbonpipe import CarbonTracker

        tracker = CarbonTracker(project_name="p", experiment_name="e",
                                output_dir={str(tmp_path / "store")!r},
                                cloud_provider="gcp", cloud_region="europe-west1")
        with tracker.start_tracking("train"):
            pass
        loaded = [m for m in sys.modules if m.split(".")[0] in ("opentelemetry",
                  "prometheus_client") or m.startswith("carbonpipe.exporters.")]
        print(loaded)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
