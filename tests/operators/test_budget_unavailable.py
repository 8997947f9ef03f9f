"""Airflow when the budget ledger is down: the gate and the tracked step refuse (or skip), the
sensor keeps waiting, and a budget with ``when_unavailable="run"`` lets the step run, noted.

The store is ``s3://`` at a loopback port nothing listens on (``AWS_ENDPOINT_URL_S3``), so every
ledger read is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.budget import Budget
from tests.object_servers import S3_BUCKET, STORE_PREFIX
from tests.operators.conftest import task_states, xcom_value

pytestmark = pytest.mark.timeout(180)

S3_URI = f"s3://{S3_BUCKET}/{STORE_PREFIX}"

_HEADER = f"""
from datetime import datetime, timezone
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from carbonpipe.budgets.budget import Budget
from carbonpipe.operators import CarbonBudgetGateOperator, CarbonBudgetSensor, CarbonTrackedOperator

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STORE = {S3_URI!r}
MARKER = {{marker!r}}

def train():
    open(MARKER, "w").write("ran")
    return "trained"
"""


@pytest.fixture
def ledger_down(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every s3:// store of the test at a port that refuses connections."""
    endpoint = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    return endpoint


@pytest.mark.parametrize(
    ("on_exceed", "expected"),
    [
        pytest.param(
            "fail",
            {"gate": "failed", "train": "upstream_failed", "publish": "upstream_failed"},
            id="fail",
        ),
        pytest.param(
            "skip",
            {"gate": "skipped", "train": "skipped", "publish": "skipped"},
            id="skip",
        ),
    ],
)
def test_gate_operator_refuses_when_the_ledger_is_down(
    run_dag: Callable[..., Any],
    ledger_down: str,
    tmp_path: Path,
    on_exceed: str,
    expected: dict[str, str],
) -> None:
    marker = tmp_path / "ran"
    dag_id = f"cp_ledger_down_{on_exceed}"
    dr = run_dag(
        _HEADER.format(marker=str(marker))
        + f"""
budget = Budget(scope="pipeline:{dag_id}", period="month", limit_kg_co2e=1.0, on_exceed={on_exceed!r})
with DAG({dag_id!r}, start_date=START, schedule=None) as dag:
    gate = CarbonBudgetGateOperator(task_id="gate", budget=budget, store=STORE, aws_conn_id=None)
    step = CarbonTrackedOperator(
        task_id="train", python_callable=train, budget=budget, store=STORE, aws_conn_id=None,
        country_iso_code="FRA",
    )
    gate >> step >> EmptyOperator(task_id="publish")
""",
        dag_id,
    )
    assert task_states(dr) == expected
    assert not marker.exists()


def test_tracked_operator_refuses_a_strict_step_and_runs_one_that_chose_availability(
    run_dag: Callable[..., Any], ledger_down: str, tmp_path: Path
) -> None:
    strict_marker, lenient_marker = tmp_path / "strict-ran", tmp_path / "lenient-ran"
    dr = run_dag(
        _HEADER.format(marker=str(strict_marker))
        + f"""
def train_lenient():
    open({str(lenient_marker)!r}, "w").write("ran")

with DAG("cp_ledger_down_tracked", start_date=START, schedule=None) as dag:
    CarbonTrackedOperator(
        task_id="strict", python_callable=train, store=STORE, aws_conn_id=None,
        budget=Budget(scope="pipeline:cp_ledger_down_tracked", period="month", limit_kg_co2e=1.0),
        country_iso_code="FRA",
    )
    CarbonTrackedOperator(
        task_id="lenient", python_callable=train_lenient, store=STORE, aws_conn_id=None,
        budget=Budget(scope="pipeline:cp_ledger_down_tracked", period="month", limit_kg_co2e=1.0,
                      when_unavailable="run"),
        country_iso_code="FRA",
    )
""",
        "cp_ledger_down_tracked",
    )
    assert task_states(dr) == {"strict": "failed", "lenient": "success"}
    assert not strict_marker.exists() and lenient_marker.exists()
    metrics = xcom_value(dr, "lenient", key="carbon_metrics")
    [note] = [e for e in metrics["tracking_errors"] if "ran ungated" in e]
    assert "pipeline:cp_ledger_down_tracked" in note and "StoreUnavailable" in note


def _trigger(**budget_fields: Any) -> Any:
    from carbonpipe.operators import CarbonBudgetTrigger

    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0, **budget_fields)
    return CarbonBudgetTrigger(
        budget=asdict(budget),
        pipeline="train",
        step="fit",
        estimate_kg=0.1,
        store=S3_URI,
        aws_conn_id=None,
        gcp_conn_id=None,
        poke_interval=0.2,
    )


def _first_event(trigger: Any, timeout_s: float) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        return None

    return asyncio.run(asyncio.wait_for(first(), timeout_s))


def test_trigger_keeps_waiting_while_the_ledger_is_down(ledger_down: str) -> None:
    with pytest.raises(TimeoutError):  # no event at all: neither success nor error
        _first_event(_trigger(), timeout_s=3)


def test_trigger_fires_for_a_budget_that_chose_availability(ledger_down: str) -> None:
    event = _first_event(_trigger(when_unavailable="run"), timeout_s=30)
    assert event.payload["status"] == "success"
    decision = event.payload["decision"]
    assert decision["allowed"] is True and decision["unavailable"] is True
    assert "StoreUnavailable" in decision["store_error"]


def test_sensor_does_not_succeed_while_the_ledger_is_down(
    run_dag: Callable[..., Any], ledger_down: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    dr = run_dag(
        _HEADER.format(marker=str(tmp_path / "ran"))
        + """
with DAG("cp_ledger_down_sensor", start_date=START, schedule=None) as dag:
    CarbonBudgetSensor(
        task_id="wait", store=STORE, aws_conn_id=None, estimate_kg=0.1, deferrable=False,
        budget=Budget(scope="pipeline:cp_ledger_down_sensor", period="month", limit_kg_co2e=1.0),
        poke_interval=0.5, timeout=3, mode="poke",
    ) >> EmptyOperator(task_id="train")
""",
        "cp_ledger_down_sensor",
    )
    assert task_states(dr) == {"wait": "failed", "train": "upstream_failed"}
    assert time.monotonic() - started >= 3  # it kept poking until its timeout, then failed
