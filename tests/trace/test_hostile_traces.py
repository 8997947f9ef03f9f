"""Hostile x_carbon_trace input: only InvalidCarbonTrace or a flagged partial comes out.

The issue's cases run the way a user meets them: a model server on loopback (a raw socket
writing the response's exact bytes) answers an httpx client whose hooks charge the trace to a
tracked step; the record written must be strict JSON and its budget charge must be there.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe._safejson import UnsafeJSON, loads
from carbonpipe.errors import InvalidCarbonTrace
from carbonpipe.trace.client import (
    MAX_FIGURE,
    MAX_PROBLEMS,
    MAX_STEP_NOTES,
    CodeCarbonMetrics,
    extract_carbon_metrics,
)
from carbonpipe.trace.hooks import httpx_hooks
from carbonpipe.tracker import CarbonTracker

LOCATION: dict[str, Any] = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}

FOUR_HUNDRED_DIGITS = '{"energy_consumed_wh": ' + "9" * 400 + "}"
DEEP_2000 = "[" * 2000 + "]" * 2000  # 4,000 bytes: fits one header
SUM_TO_INF = json.dumps({"cpu_energy_kwh": 1e308, "gpu_energy_kwh": 1e308, "emissions_g_co2": 1})


class RawServer:
    """A loopback HTTP server that answers every request with the same raw bytes."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.response)

    def close(self) -> None:
        self._sock.close()


def http_response(body: bytes, headers: dict[str, bytes]) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Length: " + str(len(body)).encode()]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture
def tracker(tmp_path: Path) -> CarbonTracker:
    return CarbonTracker(project_name="hostile", output_dir=str(tmp_path), **LOCATION)


@pytest.fixture
def raw_server() -> Iterator[Any]:
    servers: list[RawServer] = []

    def start(response: bytes) -> RawServer:
        server = RawServer(response)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def strict_json(raw: bytes) -> Any:
    """Parse as JSON that holds no NaN or Infinity (what every other JSON reader expects)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a written JSON document")

    return json.loads(raw, parse_constant=refuse)


def stored(tmp_path: Path, record_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The record as written, and the budget charges written for it, all strictly parsed."""
    (record_path,) = tmp_path.glob(f"records/v2/**/{record_id}.json")
    record = strict_json(record_path.read_bytes())
    charges = [
        strict_json(p.read_bytes()) for p in tmp_path.glob(f"budgets/**/charges/**/{record_id}__*")
    ]
    return record, charges


def run_step_against(
    tracker: CarbonTracker, tmp_path: Path, url: str, step: str
) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    with tracker.start_tracking(step), httpx.Client(event_hooks=httpx_hooks()) as client:
        response = client.get(f"{url}/v1/generate")
        assert response.status_code == 200
    metrics = tracker.stop_tracking(step)
    record, charges = stored(tmp_path, metrics.record_id)
    return record, charges, metrics


# -- the issue's cases, as a user meets them ----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        pytest.param(FOUR_HUNDRED_DIGITS, "more than 30 digits", id="400-digit-integer"),
        pytest.param(DEEP_2000, "deeper than 32 levels", id="2000-deep-array"),
        pytest.param(SUM_TO_INF, "more than any request reports", id="parts-summing-to-inf"),
    ],
)
def test_issue_headers_through_the_hook_give_a_valid_record_and_its_charge(
    tracker: CarbonTracker, tmp_path: Path, raw_server: Any, header: str, problem: str
) -> None:
    assert len(DEEP_2000) == 4000
    server = raw_server(
        http_response(b"hello", {"Content-Type": b"text/plain", "X-Carbon-Trace": header.encode()})
    )
    record, charges, _ = run_step_against(tracker, tmp_path, server.url, "call")
    assert all(math.isfinite(record["energy_kwh"][k]) for k in record["energy_kwh"])
    assert math.isfinite(record["emissions_kg_co2e"])
    assert any(problem in e for e in record["tracking_errors"]), record["tracking_errors"]
    assert len(charges) == 1
    assert charges[0]["emissions_kg_co2e"] == pytest.approx(record["emissions_kg_co2e"])


@pytest.mark.parametrize("header", [FOUR_HUNDRED_DIGITS, DEEP_2000, SUM_TO_INF])
def test_issue_headers_read_directly_raise_invalid_carbon_trace_or_flag_partial(
    header: str,
) -> None:
    response = httpx.Response(
        200,
        text="hi",
        headers={"X-Carbon-Trace": header},
        request=httpx.Request("GET", "http://model:8000/"),
    )
    with pytest.raises(InvalidCarbonTrace, match="X-Carbon-Trace header"):
        extract_carbon_metrics(response)
    partial = extract_carbon_metrics(response, strict=False)
    assert partial is not None and partial.partial
    assert math.isfinite(partial.energy_kwh)


def test_two_finite_parts_summing_to_inf_are_never_a_clean_total() -> None:
    body = {"x_carbon_trace": json.loads(SUM_TO_INF)}
    with pytest.raises(InvalidCarbonTrace, match="cpu_energy_kwh"):
        extract_carbon_metrics(body)
    metrics = extract_carbon_metrics(body, strict=False)
    assert metrics is not None and metrics.partial
    assert metrics.energy_kwh == 0.0 and metrics.cpu_energy_kwh is None
    # Below the cap, parts sum to a finite total that is charged in full.
    fine = {"x_carbon_trace": {"cpu_energy_kwh": MAX_FIGURE, "gpu_energy_kwh": MAX_FIGURE}}
    total = extract_carbon_metrics(fine)
    assert total is not None and total.energy_kwh == 2 * MAX_FIGURE and not total.partial


def test_lenient_mode_copies_no_10_mb_bogus_field_into_the_record(
    tracker: CarbonTracker, tmp_path: Path, raw_server: Any
) -> None:
    bogus = "A" * (10 * 1024 * 1024)
    trace = {
        "energy_consumed_wh": 1.0,
        "emissions_g_co2": bogus,
        "cpu_energy_" + "x" * 100_000: 1,
        "measured": bogus,
    }
    body = json.dumps({"x_carbon_trace": trace, "text": "ok"}).encode()
    server = raw_server(http_response(body, {"Content-Type": b"application/json"}))
    record, charges, _ = run_step_against(tracker, tmp_path, server.url, "bogus")
    written = json.dumps(record)
    assert len(written) < 20_000, len(written)
    assert record["remote"][0]["energy_kwh"] == pytest.approx(1e-3)
    assert any("emissions_g_co2" in e for e in record["tracking_errors"])
    assert len(charges) == 1
    # The same body as text, read directly, gives the same short problems.
    metrics = extract_carbon_metrics(body, strict=False)
    assert metrics is not None and metrics.partial
    assert sum(len(p) for p in metrics.problems) < 2_000


def test_a_step_takes_a_bounded_number_of_trace_notes(tracker: CarbonTracker) -> None:
    bad = {"x_carbon_trace": {"energy_consumed_wh": 1, "cpu_energy_wh": -1}}
    many = {"x_carbon_trace": {f"cpu_power_x{i}": 1 for i in range(50)} | {"energy_consumed_wh": 1}}
    with tracker.start_tracking("chatty"):
        for _ in range(100):
            extract_carbon_metrics(dict(bad), strict=False, attribute=True, server="http://m:1")
        lenient = extract_carbon_metrics(many, strict=False)
    metrics = tracker.stop_tracking("chatty")
    notes = [e for e in metrics.tracking_errors if e.startswith("x_carbon_trace")]
    assert len(notes) == MAX_STEP_NOTES + 1
    assert notes[-1] == "x_carbon_trace: further notes on traces left out"
    assert metrics.record.remote[0]["count"] == 100  # every call is still charged
    assert lenient is not None and len(lenient.problems) == MAX_PROBLEMS + 1


# -- any input --------------------------------------------------------------------------------

FIGURE_KEYS = [
    "energy_consumed_wh",
    "energy_consumed_kwh",
    "cpu_energy_wh",
    "gpu_energy_kwh",
    "ram_energy_j",
    "emissions_g_co2",
    "emissions_kg_co2eq",
    "cpu_power_watts",
    "duration_seconds",
    "duration_ms",
    "measured",
    "tracking_active",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
traces = st.dictionaries(
    st.sampled_from(FIGURE_KEYS) | st.text(max_size=30), json_values, max_size=8
)


def _text_of(value: Any) -> str:
    return json.dumps(value)  # Python's json writes NaN, Infinity and huge ints: hostile text


hostile_text = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    traces.map(_text_of),
    st.builds(lambda n, k: "[" * n + "{" * k, st.integers(0, 3000), st.integers(0, 50)),
    st.builds(lambda d: '{"cpu_energy_wh": ' + "7" * d + "}", st.integers(1, 5000)),
)


def _check(result: CodeCarbonMetrics | None) -> None:
    if result is None:
        return
    for name in ("energy_kwh", "gwp_kgco2eq", "cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh"):
        value = getattr(result, name)
        assert value is None or (math.isfinite(value) and 0 <= value <= 3 * MAX_FIGURE)
    assert len(result.problems) <= MAX_PROBLEMS + 1
    assert all(len(p) <= 300 for p in result.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=hostile_text, strict=st.booleans())
def test_any_header_gives_a_finite_result_or_invalid_carbon_trace(
    header: str, strict: bool
) -> None:
    try:
        response = httpx.Response(
            200, text="hi", headers={"X-Carbon-Trace": header.encode("latin-1", "replace")}
        )
    except Exception:  # a header httpx itself refuses (a newline): no response to read
        return
    try:
        result = extract_carbon_metrics(response, strict=strict)
    except InvalidCarbonTrace:
        assert strict
        return
    _check(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        hostile_text,
        hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=300),
        traces.map(lambda t: _text_of({"x_carbon_trace": t})),
        traces.map(lambda t: {"x_carbon_trace": t}),
    ),
    strict=st.booleans(),
)
def test_any_body_gives_a_finite_result_or_invalid_carbon_trace(body: Any, strict: bool) -> None:
    try:
        result = extract_carbon_metrics(body, strict=strict)
    except InvalidCarbonTrace:
        assert strict
        return
    _check(result)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(hostile_text, st.binary(max_size=200)))
def test_safe_loads_raises_only_unsafe_json(data: str | bytes) -> None:
    try:
        value = loads(data, max_bytes=4096)
    except UnsafeJSON:
        return
    assert _text_of(value)  # what it returns is JSON again, with no NaN
    json.dumps(value, allow_nan=False)


def test_safe_loads_counts_brackets_inside_strings_as_text() -> None:
    deep_string = json.dumps({"text": "[" * 5000})
    assert loads(deep_string, max_bytes=10_000) == {"text": "[" * 5000}
    with pytest.raises(UnsafeJSON, match="deeper than 3"):
        loads('{"a": [[[1]]]}', max_bytes=100, max_depth=3)
    with pytest.raises(UnsafeJSON, match="larger than 10 bytes"):
        loads("[" + "1," * 10 + "1]", max_bytes=10)
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(UnsafeJSON, match="not a JSON number"):
            loads(f'{{"x": {constant}}}', max_bytes=100)
