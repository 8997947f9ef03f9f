"""``carbonpipe run`` with a budget: it fails closed when the ledger is down, and it estimates the
step as the tracker does (baseline, last run, then ``--budget-estimate-kg``) instead of
reserving 0. A real subprocess, moto's S3 behind a FaultProxy, and a local store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.period import period_window
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from tests.fault_proxy import FaultProxy
from tests.object_servers import S3_BUCKET, STORE_PREFIX

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
S3_URI = f"s3://{S3_BUCKET}/{STORE_PREFIX}"


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def _writes(marker: Path) -> list[str]:
    return ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]


@pytest.fixture
def down_s3(
    s3_store: Store, s3_endpoint: str, fault_proxy: Callable[..., FaultProxy]
) -> tuple[FaultProxy, dict[str, str]]:
    """moto's S3 behind a proxy that is down, and the environment that reaches it."""
    proxy = fault_proxy(s3_endpoint, "s3")
    proxy.down()
    return proxy, {**os.environ, "AWS_ENDPOINT_URL_S3": proxy.url}


@pytest.mark.parametrize(
    ("on_exceed", "code", "said"),
    [
        pytest.param("fail", 3, "not started", id="fail"),
        pytest.param("skip", 0, "skipped", id="skip"),
    ],
)
def test_run_fails_closed_when_the_budget_ledger_is_down(
    down_s3: tuple[FaultProxy, dict[str, str]],
    tmp_path: Path,
    on_exceed: str,
    code: int,
    said: str,
) -> None:
    _, env = down_s3
    marker = tmp_path / "ran"
    budget = ["--budget-scope", "pipeline:g", "--budget-kg", "1", "--on-exceed", on_exceed]
    out = _run(
        ["run", "--store", S3_URI, "--pipeline", "g", *WHERE, *budget, *_writes(marker)], env
    )
    assert out.returncode == code, out.stderr
    assert not marker.exists()
    assert said in out.stderr
    assert "ledger unavailable" in out.stderr and "StoreUnavailable" in out.stderr
    assert "pipeline:g" in out.stderr


def test_run_with_when_unavailable_run_runs_and_its_flushed_record_says_so(
    down_s3: tuple[FaultProxy, dict[str, str]], s3_store: Store, tmp_path: Path
) -> None:
    proxy, env = down_s3
    cfg = tmp_path / "carbon.yaml"
    cfg.write_text(
        f"store: {S3_URI}\nproject: g\n"
        "budgets:\n  - {scope: 'pipeline:g', period: month, limit_kg_co2e: 1,"
        " when_unavailable: run}\n"
    )
    env["CARBONPIPE_CONFIG"] = str(cfg)
    marker = tmp_path / "ran"
    out = _run(["run", *WHERE, "--step", "train", *_writes(marker)], env)
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "ran"
    assert "spooled" in out.stderr

    proxy.up()
    flushed = _run(["flush", "--json"], env)
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["remaining"] == 0
    [key] = list(s3_store.list("records/v2/"))
    record = Record.from_json(s3_store.get(key).data)
    assert (record.pipeline, record.step, record.status) == ("g", "train", "succeeded")
    [note] = [e for e in record.tracking_errors if "ran ungated" in e]
    assert "pipeline:g" in note and "StoreUnavailable" in note
    assert record.energy_kwh["total"] > 0  # the record's usual fields are all there


def _reservations(store: Path, pipeline: str) -> list[dict[str, Any]]:
    window = period_window("month", datetime.now(timezone.utc))
    key = f"budgets/pipeline={pipeline}/{window.key_part}/reservations.json"
    return list(json.loads(LocalStore(store).get(key).data)["reservations"])


def test_run_estimates_like_the_tracker_and_refuses_to_reserve_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    marker = tmp_path / "ran"
    gated = ["run", "--store", str(store), "--pipeline", "g", "--step", "train", *WHERE]
    gated += ["--budget-scope", "pipeline:g", "--budget-kg", "1"]

    first = _run([*gated, *_writes(marker)])
    assert first.returncode == 2, first.stderr
    assert "--budget-estimate-kg" in first.stderr and "no baseline, no earlier run" in first.stderr
    assert not marker.exists()

    second = _run([*gated, "--budget-estimate-kg", "0.25", *_writes(marker)])
    assert second.returncode == 0, second.stderr
    assert marker.exists()
    [held] = _reservations(store, "g")
    assert (held["estimate_kg"], held["estimate_source"]) == (0.25, "default")

    third = _run([*gated, "--", sys.executable, "-c", "pass"])  # its last run is the estimate
    assert third.returncode == 0, third.stderr
    sources = {r["estimate_source"] for r in _reservations(store, "g")}
    assert "last_run" in sources


def test_concurrent_first_runs_are_held_back_by_their_estimates(tmp_path: Path) -> None:
    store = tmp_path / "store"
    go = tmp_path / "go"
    gated = ["run", "--store", str(store), "--pipeline", "g", *WHERE]
    gated += ["--budget-scope", "pipeline:g", "--budget-kg", "1", "--budget-estimate-kg", "0.6"]
    waits = (
        "import os, sys, time\nprint('started', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\n"
    )
    first = subprocess.Popen(
        CLI + [*gated, "--step", "a", "--", sys.executable, "-c", waits],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "started"
        marker = tmp_path / "b-ran"
        second = _run([*gated, "--step", "b", *_writes(marker)])
        assert second.returncode == 3, second.stderr  # 0.6 reserved + 0.6 > 1 kg
        assert "reserved 0.6 kg" in second.stderr and not marker.exists()
    finally:
        go.write_text("go")
        first.wait(timeout=60)
    assert first.returncode == 0


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        pytest.param(
            ["--budget-estimate-kg", "0.1"], "--budget-estimate-kg: no budget", id="no-budget"
        ),
        pytest.param(
            ["--budget-scope", "pipeline:g", "--budget-kg", "1", "--budget-estimate-kg=-1"],
            "--budget-estimate-kg: must be a finite kg CO2e >= 0",
            id="negative-estimate",
        ),
        pytest.param(
            ["--budget-scope", "pipeline:g", "--budget-kg", "1", "--budget-gate-timeout-s", "0"],
            "--budget-gate-timeout-s: must be > 0 and <= 600",
            id="zero-timeout",
        ),
        pytest.param(
            ["--budget-scope", "pipeline:g", "--budget-kg", "1", "--budget-when-unavailable", "x"],
            "--budget-when-unavailable",
            id="bad-choice",
        ),
    ],
)
def test_run_refuses_bad_budget_options_before_the_command_starts(
    tmp_path: Path, extra: list[str], said: str
) -> None:
    marker = tmp_path / "ran"
    out = _run(["run", "--store", str(tmp_path / "s"), *WHERE, *extra, *_writes(marker)])
    assert out.returncode == 2 and said in out.stderr, out.stderr
    assert not marker.exists()


def test_the_gate_deadline_option_bounds_a_hung_ledger(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts, never answers
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        marker = tmp_path / "ran"
        budget = [
            "--budget-scope",
            "pipeline:g",
            "--budget-kg",
            "1",
            "--budget-gate-timeout-s",
            "1",
        ]
        started = time.monotonic()
        out = _run(["run", "--store", S3_URI, *WHERE, *budget, *_writes(marker)], env)
        elapsed = time.monotonic() - started
    assert out.returncode == 3, out.stderr
    assert "no answer within the gate's deadline of 1 s" in out.stderr
    assert not marker.exists()
    assert elapsed < 30  # 1 s of gate plus interpreter start-up, with a wide margin
