"""A strict budget whose ledger cannot be read refuses the step; ``when_unavailable="run"`` runs it.

Real stores behind a :class:`~tests.fault_proxy.FaultProxy` (moto's S3, fake-gcs-server), a
loopback server that accepts and never answers, and the tracker as users call it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbonpipe import Budget, BudgetExceeded, BudgetUnavailable, CarbonTracker
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.period import period_window
from carbonpipe.errors import BudgetError, ConfigError
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from tests.fault_proxy import Flaky, unreachable_store

SCOPE = "pipeline:guarded"


def _budget(**overrides: object) -> Budget:
    fields: dict[str, object] = {"scope": SCOPE, "period": "month", "limit_kg_co2e": 1.0}
    return Budget(**{**fields, **overrides})  # type: ignore[arg-type]


def _tracker(store: Store, budget: Budget) -> CarbonTracker:
    return CarbonTracker(
        project_name="guarded",
        output_dir=store,
        budget=budget,
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )


def _run_step(tracker: CarbonTracker, marker: Path) -> None:
    with tracker.start_tracking("train"):
        marker.write_text("the step ran")


@pytest.mark.parametrize(
    "on_exceed", [pytest.param("fail", id="fail"), pytest.param("skip", id="skip")]
)
def test_a_strict_budget_refuses_the_step_when_its_store_is_down(
    flaky_store: Flaky, tmp_path: Path, on_exceed: str
) -> None:
    flaky_store.proxy.down()
    marker = tmp_path / "ran"
    tracker = _tracker(flaky_store.store, _budget(on_exceed=on_exceed))
    with pytest.raises(BudgetUnavailable) as refused:
        _run_step(tracker, marker)
    assert not marker.exists()
    # Existing `except BudgetExceeded` handlers refuse (fail) or skip it, as for an overrun.
    assert isinstance(refused.value, BudgetExceeded)
    assert refused.value.on_exceed == on_exceed
    assert refused.value.scope == SCOPE
    assert "StoreUnavailable" in refused.value.store_error
    assert "ledger unavailable" in str(refused.value) and "StoreUnavailable" in str(refused.value)
    # The step was refused, not left open: the next attempt can start once the store is back.
    flaky_store.proxy.up()
    _run_step(tracker, marker)
    assert marker.exists()


def test_a_ledger_that_refuses_our_credentials_refuses_the_step(
    flaky_store: Flaky, tmp_path: Path
) -> None:
    flaky_store.proxy.deny()
    marker = tmp_path / "ran"
    with pytest.raises(BudgetUnavailable, match="StorePermissionDenied"):
        _run_step(_tracker(flaky_store.store, _budget()), marker)
    assert not marker.exists()


def test_when_unavailable_run_runs_the_step_and_its_delivered_record_says_so(
    flaky_store: Flaky, tmp_path: Path
) -> None:
    flaky_store.proxy.down()
    marker = tmp_path / "ran"
    tracker = _tracker(flaky_store.store, _budget(when_unavailable="run"))
    _run_step(tracker, marker)
    assert marker.exists()
    metrics = tracker.stop_tracking("train")
    [note] = [e for e in metrics.tracking_errors if "ran ungated" in e]
    assert SCOPE in note and "StoreUnavailable" in note and "when_unavailable=run" in note

    flaky_store.proxy.up()
    flushed = subprocess.run(
        [sys.executable, "-m", "carbonpipe", "flush", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["remaining"] == 0
    [key] = list(flaky_store.direct.list("records/v2/"))
    record = Record.from_json(flaky_store.direct.get(key).data)
    assert record.record_id == metrics.record_id and record.status == "succeeded"
    assert note in record.tracking_errors
    assert record.energy_kwh["total"] > 0 and record.location["region"] == "europe-west1"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections and never answers a request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes the handshakes; nobody ever reads or replies
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_hung_store_holds_the_step_for_the_gate_deadline_not_a_minute(
    silent_endpoint: str, tmp_path: Path
) -> None:
    from carbonpipe.stores.s3 import S3Store

    # The client itself would wait 60 s per request: only the gate's deadline bounds the step.
    store = S3Store(
        "carbonpipe-test",
        "carbon",
        endpoint_url=silent_endpoint,
        max_attempts=1,
        connect_timeout_s=60,
        read_timeout_s=60,
    )
    marker = tmp_path / "ran"
    started = time.monotonic()
    with pytest.raises(BudgetUnavailable, match="no answer within the gate's deadline of 1 s"):
        _run_step(_tracker(store, _budget(gate_timeout_s=1.0)), marker)
    assert time.monotonic() - started < 15  # 1 s, with a wide margin for a loaded machine
    assert not marker.exists()


def test_a_reservation_is_never_written_after_the_deadline(local_store: Store) -> None:
    ledger = BudgetLedger(local_store)
    with pytest.raises(BudgetError, match="before the deadline"):
        ledger.reserve(_budget(), 0.1, reservation_id="late", deadline=time.monotonic() - 1)
    window = period_window("month", ledger._now())
    assert list(local_store.list(f"budgets/pipeline=guarded/{window.key_part}/")) == []


@pytest.mark.parametrize(
    ("when_unavailable", "allowed", "action"),
    [
        pytest.param("refuse", False, "skip", id="refuse"),
        pytest.param("run", True, "run", id="run"),
    ],
)
def test_check_answers_for_an_unreachable_ledger_without_raising(
    closed_port: int, when_unavailable: str, allowed: bool, action: str
) -> None:
    budget = _budget(on_exceed="skip", when_unavailable=when_unavailable)
    gate = BudgetGate(BudgetLedger(unreachable_store("s3", closed_port)), budget)
    decision = gate.check("guarded", "train", estimate_kg=0.2)
    assert (decision.allowed, decision.action, decision.unavailable) == (allowed, action, True)
    assert "StoreUnavailable" in decision.store_error and decision.estimate_kg == 0.2
    assert SCOPE in decision.message and "ledger unavailable" in decision.message


def test_a_strict_budget_with_nothing_to_reserve_names_where_an_estimate_comes_from(
    local_store: Store,
) -> None:
    gate = BudgetGate(BudgetLedger(local_store), _budget())
    with pytest.raises(ConfigError, match="give --my-estimate"):
        gate.reserve("guarded", "train", reservation_id="r1", estimate_option="--my-estimate")
    # Without an option to name, the tracker's behaviour is kept: the default (0) is reserved.
    assert gate.reserve("guarded", "train", reservation_id="r2").estimate_source == "default"
    # A skip budget, or one with a default, reserves as before.
    lenient = BudgetGate(BudgetLedger(local_store), _budget(on_exceed="skip"))
    assert (
        lenient.reserve("guarded", "t", reservation_id="r3", estimate_option="--x").estimate_kg == 0
    )
    given = BudgetGate(BudgetLedger(local_store), _budget(default_step_estimate_kg=0.1))
    assert (
        given.reserve("guarded", "t", reservation_id="r4", estimate_option="--x").estimate_kg == 0.1
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"when_unavailable": "maybe"},
            "budgets[0].when_unavailable: 'maybe' is not one of refuse, run",
            id="when-unavailable",
        ),
        pytest.param(
            {"gate_timeout_s": 0},
            "budgets[0].gate_timeout_s: must be a finite number > 0 and <= 600",
            id="timeout-zero",
        ),
        pytest.param(
            {"gate_timeout_s": "5"},
            "budgets[0].gate_timeout_s: must be a number",
            id="timeout-string",
        ),
    ],
)
def test_carbon_yaml_refuses_a_bad_unavailability_setting(
    fields: dict[str, object], message: str
) -> None:
    from carbonpipe.budgets.budget import load_budgets

    entry = {"scope": SCOPE, "period": "month", "limit_kg_co2e": 1.0, **fields}
    with pytest.raises(ConfigError) as info:
        load_budgets({"budgets": [entry]})
    assert str(info.value).startswith(message)


def test_carbon_yaml_reads_the_unavailability_settings(tmp_path: Path) -> None:
    from carbonpipe.budgets.budget import load_budgets

    cfg = tmp_path / "carbon.yaml"
    cfg.write_text(
        "budgets:\n"
        f"  - {{scope: '{SCOPE}', period: month, limit_kg_co2e: 1, when_unavailable: run,"
        " gate_timeout_s: 2.5}\n"
        "  - {scope: 'team:ml', period: month, limit_kg_co2e: 1}\n"
    )
    chosen, default = load_budgets(cfg)
    assert (chosen.when_unavailable, chosen.gate_timeout_s) == ("run", 2.5)
    assert (default.when_unavailable, default.gate_timeout_s) == ("refuse", 5.0)
