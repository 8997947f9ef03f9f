"""A reservation is a lease: sized from the step's last run, renewed while the step lives.

A killed step's reservation frees when its lease runs out (seconds here, minutes by default),
and a long live step keeps its own however long it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.lease import MIN_LEASE_S, lease_for
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.status import StepEstimate
from carbonpipe.stores.local import LocalStore
from carbonpipe.tracker import CarbonTracker
from tests.budgets.test_ledger import _Clock, _record

WHERE = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


def _budget(**kwargs: object) -> Budget:
    return Budget(
        scope="pipeline:leases",
        period="month",
        limit_kg_co2e=1.0,
        default_step_estimate_kg=0.1,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_lease_is_sized_from_the_last_run_else_the_budget_default() -> None:
    budget = _budget(lease_s=600)
    assert lease_for(budget, StepEstimate(0.1, "default")) == 600
    assert lease_for(budget, StepEstimate(0.1, "last_run", 1800.0)) == 1800 * 2 + 60
    assert lease_for(budget, StepEstimate(0.1, "last_run", 1.0)) == MIN_LEASE_S


def test_the_gate_reserves_for_a_lease_from_the_steps_last_charged_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    clock = _Clock()
    ledger = BudgetLedger(store, clock=clock)
    gate = BudgetGate(ledger, _budget(lease_s=300))
    first = gate.reserve("leases", "train", reservation_id="r1")
    assert (first.expires_at - first.created_at).total_seconds() == 300  # nothing known yet

    # The ledger pipeline of the test records is "train"; this step ran 1000 s last time.
    record = _record("r1", kg=0.05)
    object.__setattr__(record, "duration_s", 1000.0)
    gate.settle(first, record)
    second = BudgetGate(ledger, _budget(lease_s=300)).reserve(
        record.pipeline, record.step, reservation_id="r2"
    )
    assert second.estimate_source == "last_run"
    assert (second.expires_at - second.created_at).total_seconds() == 1000 * 2 + 60


def test_renewing_extends_a_live_lease_but_never_revives_a_lapsed_one(tmp_path: Path) -> None:
    clock = _Clock()
    ledger = BudgetLedger(LocalStore(tmp_path / "store"), clock=clock)
    budget = _budget()
    held = ledger.reserve(budget, 0.2, reservation_id="r1", ttl_s=60)
    clock.advance(50)
    assert ledger.renew(held, 60)
    clock.advance(50)  # 100 s after the reservation, 50 s into the renewed lease
    assert ledger.status(budget).reserved_kg == pytest.approx(0.2)
    clock.advance(61)
    assert ledger.status(budget).reserved_kg == 0.0
    assert not ledger.renew(held, 60)  # its slice may be another step's by now
    assert ledger.status(budget).reserved_kg == 0.0


def test_a_long_live_step_keeps_its_reservation_past_its_lease(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    budget = _budget(lease_s=1.5)
    tracker = CarbonTracker(
        project_name="p", pipeline="leases", output_dir=str(store_dir), budget=budget, **WHERE
    )
    ledger = BudgetLedger(LocalStore(store_dir))
    with tracker.start_tracking("train") as handle:
        time.sleep(5)  # more than three leases
        assert ledger.status(budget).reserved_kg == pytest.approx(0.1)
        assert handle.lease is not None and handle.lease.renewals >= 3
    status = ledger.status(budget)
    assert status.reserved_kg == 0.0 and status.used_kg > 0


_KILLED_STEP = """
import sys, time
from carbonpipe import Budget, CarbonTracker
budget = Budget(scope="pipeline:leases", period="month", limit_kg_co2e=1.0,
                default_step_estimate_kg=0.1, lease_s=2.0)
tracker = CarbonTracker(project_name="p", pipeline="leases", output_dir=sys.argv[1],
                        budget=budget, cloud_provider="gcp", cloud_region="europe-west1")
with tracker.start_tracking("train"):
    print("running", flush=True)
    time.sleep(120)
"""


def test_a_killed_steps_reservation_frees_when_its_lease_runs_out(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_STEP, str(store_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        ledger = BudgetLedger(LocalStore(store_dir))
        budget = _budget(lease_s=2.0)
        time.sleep(3)  # alive past its first lease: renewed
        assert ledger.status(budget).reserved_kg == pytest.approx(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while ledger.status(budget).reserved_kg and time.monotonic() < deadline:
            time.sleep(0.25)
        freed_after = 30 - (deadline - time.monotonic())
        assert ledger.status(budget).reserved_kg == 0.0
        assert freed_after < 10  # one lease (2 s) after the last renewal, not six hours
    finally:
        if proc.poll() is None:
            proc.kill()
