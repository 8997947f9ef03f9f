"""Budgets given in a DAG file leave their definitions in the store: the gate operator's, even
when it refuses the step, and the tracked operator's, so the ESG report and ``budget status``
can list them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.definitions import read_definitions
from carbonpipe.stores.local import LocalStore
from tests.operators.conftest import task_states

pytestmark = pytest.mark.timeout(120)


def test_gate_and_tracked_operators_record_their_budgets(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
from datetime import datetime, timezone
from airflow.sdk import DAG
from carbonpipe.budgets.budget import Budget
from carbonpipe.operators import CarbonBudgetGateOperator, CarbonTrackedOperator

def train():
    return "trained"

spent = Budget(scope="team:cp-def", period="year", limit_kg_co2e=1e-6, on_exceed="skip",
               default_step_estimate_kg=1.0)
fits = Budget(scope="pipeline:cp_def", period="month", limit_kg_co2e=0.5,
              default_step_estimate_kg=0.001)
with DAG("cp_def", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
    CarbonBudgetGateOperator(task_id="gate", budget=spent, store={str(store)!r})
    CarbonTrackedOperator(
        task_id="train", python_callable=train, budget=fits, store={str(store)!r},
        country_iso_code="FRA",
    )
""",
        "cp_def",
    )
    assert task_states(dr) == {"gate": "skipped", "train": "success"}
    got = [
        (d.budget.scope, d.budget.period, d.budget.limit_kg_co2e, d.step)
        for d in read_definitions(LocalStore(store))
    ]
    assert got == [
        ("pipeline:cp_def", "month", 0.5, "train"),
        ("team:cp-def", "year", 1e-6, "gate"),
    ]
