"""Budgets in Airflow: a refused tracked step, and CarbonBudgetGateOperator failing or skipping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.stores.local import LocalStore
from tests.operators.conftest import task_states, xcom_value

pytestmark = pytest.mark.timeout(120)

_HEADER = """
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from carbonpipe.budgets.budget import Budget
from carbonpipe.operators import CarbonBudgetGateOperator, CarbonTrackedOperator

START = datetime(2026, 1, 1, tzinfo=timezone.utc)

def train():
    return "trained"
"""


def _budget(dag_id: str, on_exceed: str, estimate_kg: float) -> str:
    return (
        f"Budget(scope='pipeline:{dag_id}', period='month', limit_kg_co2e=0.5, "
        f"on_exceed={on_exceed!r}, default_step_estimate_kg={estimate_kg!r})"
    )


def test_tracked_step_over_budget_fails_without_retrying_or_spending(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        _HEADER
        + f"""
with DAG("cp_over_budget", start_date=START, schedule=None) as dag:
    CarbonTrackedOperator(
        task_id="train", python_callable=train, retries=2, retry_delay=timedelta(0),
        budget={_budget("cp_over_budget", "fail", 2.0)}, store={str(store)!r}, country_iso_code="FRA",
    )
""",
        "cp_over_budget",
    )
    assert task_states(dr) == {"train": "failed"}
    (ti,) = dr.get_task_instances()
    assert ti.try_number == 1  # AirflowFailException: no retry
    assert list(LocalStore(store).list("records/")) == []  # refused before it spent anything


def test_tracked_step_with_on_exceed_skip_skips_itself_and_downstream(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        _HEADER
        + f"""
with DAG("cp_skip_step", start_date=START, schedule=None) as dag:
    CarbonTrackedOperator(
        task_id="train", python_callable=train, on_exceed="skip",
        budget={_budget("cp_skip_step", "fail", 2.0)}, store={str(store)!r}, country_iso_code="FRA",
    ) >> EmptyOperator(task_id="publish")
""",
        "cp_skip_step",
    )
    assert task_states(dr) == {"train": "skipped", "publish": "skipped"}


@pytest.mark.parametrize(
    ("on_exceed", "expected"),
    [
        pytest.param(
            "skip",
            {"gate": "skipped", "train": "skipped", "publish": "skipped"},
            id="skip-downstream",
        ),
        pytest.param(
            "fail",
            {"gate": "failed", "train": "upstream_failed", "publish": "upstream_failed"},
            id="fail",
        ),
    ],
)
def test_gate_blocks_step_that_would_overrun_budget(
    run_dag: Callable[..., Any], tmp_path: Path, on_exceed: str, expected: dict[str, str]
) -> None:
    store = tmp_path / "store"
    dag_id = f"cp_gate_{on_exceed}"
    dr = run_dag(
        _HEADER
        + f"""
budget = {_budget(dag_id, on_exceed, 2.0)}
with DAG({dag_id!r}, start_date=START, schedule=None) as dag:
    gate = CarbonBudgetGateOperator(task_id="gate", budget=budget, store={str(store)!r})
    step = CarbonTrackedOperator(
        task_id="train", python_callable=train, budget=budget, store={str(store)!r}, country_iso_code="FRA"
    )
    gate >> step >> EmptyOperator(task_id="publish")
""",
        dag_id,
    )
    assert task_states(dr) == expected
    assert list(LocalStore(store).list("records/")) == []


def test_gate_lets_a_fitting_step_run_and_publishes_its_decision(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        _HEADER
        + f"""
budget = {_budget("cp_gate_fits", "skip", 0.001)}
with DAG("cp_gate_fits", start_date=START, schedule=None) as dag:
    gate = CarbonBudgetGateOperator(task_id="gate", budget=budget, store={str(store)!r})
    gate >> CarbonTrackedOperator(
        task_id="train", python_callable=train, budget=budget, store={str(store)!r}, country_iso_code="FRA"
    )
""",
        "cp_gate_fits",
    )
    assert task_states(dr) == {"gate": "success", "train": "success"}
    decision = xcom_value(dr, "gate")
    assert decision["allowed"] is True
    assert decision["scope"] == "pipeline:cp_gate_fits"
    assert decision["estimate_kg"] == pytest.approx(0.001)
    assert decision["estimate_source"] == "default"  # the guarded step, "train", has no history
    metrics = xcom_value(dr, "train", key="carbon_metrics")
    assert metrics["budget_percent"] is not None and metrics["budget_percent"] >= 0
