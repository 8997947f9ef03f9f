"""CarbonTrackedOperator and @task.carbon_tracked, run as real DAGs with dag.test() on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.local import LocalStore
from tests.operators.conftest import task_states, xcom_value

pytestmark = pytest.mark.timeout(120)


def records(store: Path) -> list[Record]:
    """Every record in a local store, by (step, attempt)."""
    found = [
        Record.from_json(LocalStore(store).get(k).data) for k in LocalStore(store).list("records/")
    ]
    return sorted(found, key=lambda r: (r.step, r.attempt))


def test_tracked_callable_records_its_airflow_identity_and_publishes_metrics(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from carbonpipe.operators import CarbonTrackedOperator

        def train(n, when):
            return {{"n": n, "when": when}}

        with DAG("cp_callable", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                task_id="train",
                python_callable=train,
                op_args=[3],
                op_kwargs={{"when": "{{{{ run_id }}}}"}},
                project="recsys",
                team="ranking",
                store={str(store)!r},
                country_iso_code="FRA",
                labels={{"model": "bert"}},
            )
        """,
        "cp_callable",
    )
    assert task_states(dr) == {"train": "success"}
    assert xcom_value(dr, "train") == {"n": 3, "when": dr.run_id}

    (record,) = records(store)
    assert (record.project, record.pipeline, record.team) == ("recsys", "cp_callable", "ranking")
    assert (record.run_id, record.step, record.attempt, record.status) == (
        dr.run_id,
        "train",
        1,
        "succeeded",
    )
    assert record.labels["model"] == "bert"
    assert record.labels["airflow_dag_id"] == "cp_callable"
    assert record.labels["airflow_task_id"] == "train"
    assert record.labels["airflow_try_number"] == "1"
    assert "airflow_map_index" not in record.labels
    assert record.location["country_iso"] == "FRA"

    metrics = xcom_value(dr, "train", key="carbon_metrics")
    assert metrics["record_id"] == record.record_id
    assert metrics["energy_kwh"] == pytest.approx(record.energy_kwh["total"])
    assert metrics["emissions_kg_co2e"] == pytest.approx(record.emissions_kg_co2e)
    assert metrics["intensity_g_per_kwh"] == pytest.approx(record.intensity_g_per_kwh)
    assert "budget_percent" in metrics


def test_wrapped_bash_operator_runs_once_inside_the_wrapper_with_rendered_templates(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store, out = tmp_path / "store", tmp_path / "bash.out"
    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG
        from airflow.providers.standard.operators.bash import BashOperator
        from carbonpipe.operators import CarbonTrackedOperator

        with DAG("cp_bash", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                task_id="fit",
                operator=BashOperator(
                    task_id="fit_cmd",
                    bash_command="echo {{{{ ti.task_id }}}} {{{{ run_id }}}} >> {out} && echo done",
                ),
                store={str(store)!r},
                country_iso_code="DEU",
            )
        """,
        "cp_bash",
    )
    assert task_states(dr) == {"fit": "success"}
    assert out.read_text().splitlines() == [f"fit {dr.run_id}"]
    assert xcom_value(dr, "fit") == "done"
    (record,) = records(store)
    assert (record.pipeline, record.step, record.status) == ("cp_bash", "fit", "succeeded")
    assert xcom_value(dr, "fit", key="carbon_metrics")["record_id"] == record.record_id


def test_decorated_task_is_tracked_and_mapped_instances_are_distinct_steps(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task

        with DAG("cp_taskflow", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            @task.carbon_tracked(store={str(store)!r}, pipeline="search", country_iso_code="SWE")
            def double(x):
                return 2 * x

            @task.carbon_tracked(store={str(store)!r}, pipeline="search", country_iso_code="SWE")
            def total(values):
                return sum(values)

            total(double.expand(x=[1, 2]))
        """,
        "cp_taskflow",
    )
    assert set(task_states(dr).values()) == {"success"}
    assert xcom_value(dr, "total") == 6
    found = records(store)
    assert [(r.pipeline, r.step) for r in found] == [
        ("search", "double[0]"),
        ("search", "double[1]"),
        ("search", "total"),
    ]
    assert found[1].labels["airflow_map_index"] == "1"
    assert xcom_value(dr, "total", key="carbon_metrics")["step"] == "total"


def test_retry_is_a_second_attempt_with_a_record_of_its_own(
    run_dag: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        from datetime import datetime, timedelta, timezone
        from airflow.sdk import DAG
        from carbonpipe.operators import CarbonTrackedOperator

        def flaky(ti=None):
            if ti.try_number == 1:
                raise RuntimeError("first try fails")
            return ti.try_number

        with DAG("cp_retry", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                task_id="flaky",
                python_callable=flaky,
                retries=1,
                retry_delay=timedelta(0),
                store={str(store)!r},
                country_iso_code="FRA",
            )
        """,
        "cp_retry",
    )
    assert task_states(dr) == {"flaky": "success"}
    assert xcom_value(dr, "flaky") == 2
    first, second = records(store)
    assert (first.attempt, first.status) == (1, "failed")
    assert (second.attempt, second.status) == (2, "succeeded")
    assert first.run_id == second.run_id == dr.run_id
    assert first.record_id != second.record_id
    assert xcom_value(dr, "flaky", key="carbon_metrics")["record_id"] == second.record_id
