"""CarbonBudgetSensor and its trigger: defer, wait in the triggerer, fire or report an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.record import Record, make_record_id, utc_iso
from carbonpipe.stores.local import LocalStore

pytestmark = pytest.mark.timeout(60)


def _budget(**overrides: Any) -> Budget:
    fields: dict[str, Any] = {"scope": "pipeline:train", "period": "month", "limit_kg_co2e": 1.0}
    return Budget(**{**fields, **overrides})


def _spend(store: LocalStore, kg: float) -> None:
    """Charge one finished step of ``kg`` to ``pipeline:train``."""
    now = utc_iso(datetime.now(timezone.utc))
    record = Record(
        record_id=make_record_id("default", "train", "run-1", "fit", 1),
        project="default",
        experiment="",
        pipeline="train",
        run_id="run-1",
        step="fit",
        team="",
        attempt=1,
        started_at=now,
        ended_at=now,
        duration_s=1.0,
        status="succeeded",
        energy_kwh={"cpu": 1.0, "gpu": 0.0, "ram": 0.0, "remote": 0.0, "total": 1.0},
        power_w={"cpu": 1.0, "gpu": 0.0, "ram": 0.0},
        pue=1.0,
        intensity_g_per_kwh=kg * 1000.0,
        emissions_kg_co2e=kg,
        location={"provider": None, "region": None, "country_iso": None, "detected_by": "world"},
        intensity_source={"name": "test", "vintage": "2026", "kind": "annual"},
        measurement={"method": "estimate"},
    )
    BudgetLedger(store).charge(record)


def _trigger(store: Path, **overrides: Any) -> Any:
    from carbonpipe.operators import CarbonBudgetTrigger

    kwargs: dict[str, Any] = {
        "budget": asdict(_budget()),
        "pipeline": "train",
        "step": "fit",
        "estimate_kg": 0.5,
        "store": str(store),
        "aws_conn_id": None,
        "gcp_conn_id": None,
        "azure_conn_id": None,
        "poke_interval": 0.05,
    }
    return CarbonBudgetTrigger(**{**kwargs, **overrides})


def _first_event(trigger: Any, timeout_s: float) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        return None

    return asyncio.run(asyncio.wait_for(first(), timeout_s))


def test_trigger_serialises_every_argument_and_rebuilds_from_them(tmp_path: Path) -> None:
    from airflow.sdk._shared.module_loading import import_string

    trigger = _trigger(tmp_path, aws_conn_id="carbon_s3", estimate_kg=None)
    classpath, kwargs = trigger.serialize()
    assert classpath == "carbonpipe.operators.triggers.CarbonBudgetTrigger"
    assert kwargs == {
        "budget": asdict(_budget()),
        "pipeline": "train",
        "step": "fit",
        "estimate_kg": None,
        "store": str(tmp_path),
        "aws_conn_id": "carbon_s3",
        "gcp_conn_id": None,
        "azure_conn_id": None,
        "poke_interval": 0.05,
    }
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)


def test_trigger_fires_at_once_when_the_step_fits(tmp_path: Path) -> None:
    event = _first_event(_trigger(tmp_path / "store"), timeout_s=10)
    assert event.payload["status"] == "success"
    assert event.payload["decision"]["allowed"] is True
    assert event.payload["decision"]["estimate_kg"] == pytest.approx(0.5)


def test_trigger_waits_while_the_budget_is_spent_then_fires_when_it_frees_up(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    _spend(store, 0.9)

    async def scenario() -> Any:
        run = _trigger(tmp_path / "store").run()
        first = asyncio.ensure_future(run.__anext__())
        await asyncio.sleep(0.3)
        assert not first.done(), "fired while 0.9 + 0.5 kg > 1 kg"
        for key in list(store.list("budgets/")):  # the period rolls over: nothing used any more
            store.delete(key)
        return await asyncio.wait_for(first, 10)

    event = asyncio.run(scenario())
    assert event.payload["status"] == "success"
    assert event.payload["decision"]["used_kg"] == 0


def test_trigger_reports_failure_as_an_error_event(tmp_path: Path) -> None:
    event = _first_event(
        _trigger(tmp_path, budget={"scope": "nonsense", "period": "month"}), timeout_s=10
    )
    assert event.payload["status"] == "error"
    assert "scope" in event.payload["message"]


def _sensor(store: Path, **overrides: Any) -> Any:
    from carbonpipe.operators import CarbonBudgetSensor

    kwargs: dict[str, Any] = {
        "task_id": "wait_for_budget",
        "budget": _budget(),
        "pipeline": "train",
        "step": "fit",
        "estimate_kg": 0.5,
        "store": str(store),
        "deferrable": True,
        "poke_interval": 30,
        "timeout": 3600,
    }
    return CarbonBudgetSensor(**{**kwargs, **overrides})


_CONTEXT: Any = {"ti": SimpleNamespace(dag_id="train", task_id="wait_for_budget")}


def test_sensor_defers_to_the_trigger_when_the_budget_is_spent(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from carbonpipe.operators import CarbonBudgetTrigger

    _spend(LocalStore(tmp_path / "store"), 0.9)
    with pytest.raises(TaskDeferred) as deferred:
        _sensor(tmp_path / "store").execute(_CONTEXT)
    assert isinstance(deferred.value.trigger, CarbonBudgetTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=3600)
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["step"], kwargs["estimate_kg"], kwargs["poke_interval"]) == ("fit", 0.5, 30)


def test_sensor_does_not_defer_when_the_step_already_fits(tmp_path: Path) -> None:
    decision = _sensor(tmp_path / "store").execute(_CONTEXT)
    assert decision["allowed"] is True


def test_sensor_pokes_when_not_deferrable(tmp_path: Path) -> None:
    sensor = _sensor(tmp_path / "store", deferrable=False)
    assert sensor.poke(_CONTEXT).is_done is True
    _spend(LocalStore(tmp_path / "store"), 0.9)
    assert sensor.poke(_CONTEXT).is_done is False


def test_execute_complete_raises_on_an_error_event_and_returns_the_decision_otherwise(
    tmp_path: Path,
) -> None:
    from airflow.sdk.exceptions import AirflowException

    sensor = _sensor(tmp_path)
    with pytest.raises(AirflowException, match="store unreachable"):
        sensor.execute_complete(_CONTEXT, {"status": "error", "message": "store unreachable"})
    with pytest.raises(AirflowException):
        sensor.execute_complete(_CONTEXT, None)
    decision = {"allowed": True, "message": "fits"}
    assert (
        sensor.execute_complete(_CONTEXT, {"status": "success", "decision": decision}) == decision
    )


def test_deferred_sensor_resumes_from_its_trigger_in_a_dag_run(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    from tests.operators.conftest import task_states, xcom_value

    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, PokeReturnValue
        from airflow.providers.standard.operators.empty import EmptyOperator
        from carbonpipe.budgets.budget import Budget
        from carbonpipe.operators import CarbonBudgetSensor

        class NotYetSensor(CarbonBudgetSensor):
            def poke(self, context):  # the worker's first look says "not yet": defer
                return PokeReturnValue(is_done=False)

        with DAG("cp_deferred", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            NotYetSensor(
                task_id="wait",
                budget=Budget(scope="pipeline:cp_deferred", period="month", limit_kg_co2e=1.0),
                estimate_kg=0.5,
                store={str(tmp_path / "store")!r},
                deferrable=True,
                poke_interval=1,
                timeout=60,
            ) >> EmptyOperator(task_id="train")
        """,
        "cp_deferred",
    )
    assert task_states(dr) == {"wait": "success", "train": "success"}
    decision = xcom_value(dr, "wait")
    assert (decision["allowed"], decision["scope"]) == (True, "pipeline:cp_deferred")
