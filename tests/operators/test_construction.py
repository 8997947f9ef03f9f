"""Building operators: argument checks, no I/O, and a wrapped operator leaving its DAG."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from carbonpipe.budgets.budget import Budget

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _noop() -> None:
    return None


def test_tracked_operator_needs_exactly_one_of_callable_and_operator() -> None:
    from airflow.providers.standard.operators.bash import BashOperator

    from carbonpipe.operators import CarbonTrackedOperator

    with pytest.raises(TypeError, match="exactly one"):
        CarbonTrackedOperator(task_id="t")
    with pytest.raises(TypeError, match="exactly one"):
        CarbonTrackedOperator(
            task_id="t",
            python_callable=_noop,
            operator=BashOperator(task_id="b", bash_command="true"),
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"on_exceed": "warn"}, ValueError, "on_exceed must be one of fail, skip", id="on_exceed"
        ),
        pytest.param(
            {
                "budget": Budget(scope="pipeline:p", period="month", limit_kg_co2e=1.0),
                "carbon_budget_g": 5.0,
            },
            ValueError,
            "not both",
            id="two-budgets",
        ),
    ],
)
def test_tracked_operator_rejects_bad_arguments_naming_them(
    kwargs: dict, error: type, match: str
) -> None:
    from carbonpipe.operators import CarbonTrackedOperator

    with pytest.raises(error, match=match):
        CarbonTrackedOperator(task_id="t", python_callable=_noop, **kwargs)


def test_building_operators_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from carbonpipe.operators import (
        CarbonBudgetGateOperator,
        CarbonBudgetSensor,
        CarbonTrackedOperator,
    )

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("an operator opened a connection while being built")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    budget = Budget(scope="pipeline:p", period="month", limit_kg_co2e=1.0)
    store = "s3://nowhere-bucket/prefix"
    CarbonTrackedOperator(task_id="a", python_callable=_noop, store=store, budget=budget)
    CarbonBudgetGateOperator(task_id="b", budget=budget, store=store)
    CarbonBudgetSensor(task_id="c", budget=budget, store=store, deferrable=True)


def test_wrapped_operator_leaves_the_dag_and_lends_its_task_id() -> None:
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG, TaskGroup

    from carbonpipe.operators import CarbonTrackedOperator

    with DAG("wrap", start_date=START, schedule=None) as dag, TaskGroup("prep"):
        wrapped = CarbonTrackedOperator(
            operator=BashOperator(task_id="clean", bash_command="echo {{ ds }}")
        )
    assert list(dag.task_dict) == ["prep.clean"]
    assert dag.task_dict["prep.clean"] is wrapped
    assert isinstance(wrapped, CarbonTrackedOperator)
    assert isinstance(wrapped.operator, BashOperator)
    assert wrapped.operator.bash_command == "echo {{ ds }}"


def test_wrapped_operator_with_dependencies_is_refused() -> None:
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from carbonpipe.operators import CarbonTrackedOperator

    with DAG("wrap_deps", start_date=START, schedule=None):
        bash = BashOperator(task_id="b", bash_command="true")
        EmptyOperator(task_id="e") >> bash
        with pytest.raises(ValueError, match="already has dependencies"):
            CarbonTrackedOperator(task_id="t", operator=bash)


def test_gate_guards_its_only_downstream_step_by_default() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from carbonpipe.operators import CarbonBudgetGateOperator
    from carbonpipe.operators.gate import guarded_step

    budget = Budget(scope="pipeline:p", period="month", limit_kg_co2e=1.0)
    with DAG("guard", start_date=START, schedule=None):
        gate = CarbonBudgetGateOperator(task_id="gate", budget=budget)
        gate >> EmptyOperator(task_id="train")
        alone = CarbonBudgetGateOperator(task_id="alone", budget=budget)
    assert guarded_step(gate, None) == "train"
    assert guarded_step(gate, "evaluate") == "evaluate"
    assert guarded_step(alone, None) == "alone"
