"""SCI's functional unit in Airflow: functional_unit=, units_from_result, add_units inside the
callable, and @task.carbon_tracked, run as real DAGs with dag.test()."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.local import LocalStore
from tests.operators.conftest import task_states, xcom_value

pytestmark = pytest.mark.timeout(180)


def _grams(rec: Record) -> float:
    """O + M in grams: M is 0 where the record has no embodied figure."""
    return (rec.emissions_kg_co2e + (getattr(rec, "embodied_kg_co2e", None) or 0.0)) * 1000


def records(store: Path) -> dict[str, Record]:
    s = LocalStore(store)
    return {r.step: r for r in (Record.from_json(s.get(k).data) for k in s.list("records/"))}


def test_airflow_steps_declare_their_units(run_dag: Callable[..., Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    dr = run_dag(
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task
        from airflow.providers.standard.operators.bash import BashOperator
        from carbonpipe import current_step
        from carbonpipe.operators import CarbonTrackedOperator

        def serve():
            current_step().add_units(1000, "inference")

        def score():
            return {{"count": 20, "name": "batch job"}}

        common = dict(store={str(store)!r}, cloud_provider="gcp", cloud_region="europe-west1")
        with DAG("cp_sci", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                task_id="train", python_callable=lambda: None,
                functional_unit="training run", **common,
            )
            CarbonTrackedOperator(task_id="serve", python_callable=serve, **common)
            CarbonTrackedOperator(
                task_id="score", python_callable=score, units_from_result=True, **common
            )
            CarbonTrackedOperator(
                operator=BashOperator(task_id="bash", bash_command="echo working; echo 64"),
                functional_unit="token", units_from_result=True, **common,
            )

            @task.carbon_tracked(functional_unit="inference", units_from_result=True, **common)
            def decorated():
                return 5

            decorated()
        """,
        "cp_sci",
    )
    assert set(task_states(dr).values()) == {"success"}, task_states(dr)
    recs = records(store)
    expect = {
        "train": {"name": "training run", "count": 1.0},
        "serve": {"name": "inference", "count": 1000.0},
        "score": {"name": "batch job", "count": 20.0},
        "bash": {"name": "token", "count": 64.0},
        "decorated": {"name": "inference", "count": 5.0},
    }
    for step, units in expect.items():
        rec = recs[step]
        assert rec.functional_units == units, step
        assert rec.sci_g_per_unit is not None
        assert math.isclose(rec.sci_g_per_unit, _grams(rec) / units["count"])
    published = xcom_value(dr, "serve", key="carbon_metrics")
    assert published["sci_g_per_unit"] == recs["serve"].sci_g_per_unit
    assert published["functional_units"] == {"name": "inference", "count": 1000.0}
