"""The ``carbon`` OpenLineage run facet, emitted by the real OpenLineage provider under dag.test().

The provider reads its configuration once per process (cached), and registers its listener when
its plugin loads: each DAG runs in a child process with the file transport configured, against
the session's metadata DB, and the test reads the events the transport wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.local import LocalStore

pytest.importorskip("airflow.providers.openlineage")

pytestmark = pytest.mark.timeout(300)

_RUNNER = """
import importlib.util, json, sys
path, dag_id, states_file = sys.argv[1], sys.argv[2], sys.argv[3]
spec = importlib.util.spec_from_file_location("ol_dag_module", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
dag = next(v for v in vars(mod).values() if getattr(v, "dag_id", None) == dag_id)
dr = dag.test()
states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
with open(states_file, "w") as out:
    json.dump(states, out)
"""


def run_with_lineage(
    dags_folder: Path, tmp_path: Path, source: str, dag_id: str, **conf: str
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Run a DAG file with dag.test() in a child process; its task states and OL events."""
    path = dags_folder / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source))
    events_file = tmp_path / "ol.jsonl"
    states_file = tmp_path / "states.json"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "carbonpipe-test",
        # Emit from a thread with room to spare: a fork that outlives 10 s on a busy CI
        # machine is killed, and its event lost.
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "120",
        **{f"AIRFLOW__OPENLINEAGE__{k.upper()}": v for k, v in conf.items()},
    }
    out = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path), dag_id, str(states_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
        check=False,
    )
    assert states_file.exists(), out.stdout[-3000:] + out.stderr[-6000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return json.loads(states_file.read_text()), events


def task_event(events: list[dict[str, Any]], dag_id: str, task_id: str, kind: str) -> dict:
    """The one ``kind`` (COMPLETE, FAIL) event of a task."""
    found = [
        e for e in events if e["eventType"] == kind and e["job"]["name"] == f"{dag_id}.{task_id}"
    ]
    assert len(found) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    return found[0]


def records(store: Path) -> dict[str, Record]:
    """Every record in a local store, by step."""
    s = LocalStore(store)
    found = [Record.from_json(s.get(k).data) for k in s.list("records/")]
    return {r.step: r for r in found}


def assert_facet_of(event: dict[str, Any], record: Record, store: Path) -> None:
    from carbonpipe.operators.openlineage import SCHEMA_URL

    facet = event["run"]["facets"]["carbon"]
    assert facet["_schemaURL"] == SCHEMA_URL
    assert facet["record_id"] == record.record_id
    assert facet["status"] == record.status
    assert facet["energy_kwh"] == pytest.approx(record.energy_kwh)
    assert facet["emissions_kg_co2e"] == pytest.approx(record.emissions_kg_co2e)
    assert facet["intensity_g_per_kwh"] == pytest.approx(record.intensity_g_per_kwh)
    # OpenLineage's serializer leaves out what is None
    assert facet["intensity_source"] == _set(record.intensity_source)
    assert facet["location"] == _set(record.location)
    assert facet["method"] == record.measurement["method"]
    assert facet["record_key"] == record.key
    assert facet["store_uri"] == str(store)
    assert facet.get("embodied_kg_co2e") == record.embodied_kg_co2e
    assert facet.get("total_kg_co2e") == record.total_kg_co2e


def _set(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: _set(v) if isinstance(v, dict) else v for k, v in mapping.items() if v is not None}


def test_complete_and_fail_events_carry_the_records_carbon_facet(
    dags_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    states, events = run_with_lineage(
        dags_folder,
        tmp_path,
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task
        from carbonpipe.operators import CarbonTrackedOperator

        def train():
            return sum(range(1000))

        def broken():
            raise RuntimeError("diverged")

        with DAG("cp_ol", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
            CarbonTrackedOperator(
                task_id="train", python_callable=train, project="recsys",
                store={str(store)!r}, country_iso_code="FRA",
            )
            CarbonTrackedOperator(
                task_id="broken", python_callable=broken, project="recsys",
                store={str(store)!r}, country_iso_code="FRA", retries=0,
            )

            @task.carbon_tracked(project="recsys", store={str(store)!r}, country_iso_code="FRA")
            def evaluate():
                return 1

            evaluate()
        """,
        "cp_ol",
    )
    assert states == {"train": "success", "broken": "failed", "evaluate": "success"}
    by_step = records(store)
    assert_facet_of(task_event(events, "cp_ol", "train", "COMPLETE"), by_step["train"], store)
    assert_facet_of(task_event(events, "cp_ol", "evaluate", "COMPLETE"), by_step["evaluate"], store)
    fail = task_event(events, "cp_ol", "broken", "FAIL")
    assert_facet_of(fail, by_step["broken"], store)
    assert fail["run"]["facets"]["carbon"]["status"] == "failed"


def test_custom_run_facets_function_finds_any_tasks_record(
    dags_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    states, events = run_with_lineage(
        dags_folder,
        tmp_path,
        f"""
        from datetime import datetime, timezone
        from airflow.sdk import DAG, task

        with DAG("cp_ol_custom", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:

            @task
            def measured(ti=None):
                from carbonpipe import CarbonTracker

                tracker = CarbonTracker(
                    project_name="recsys", pipeline="cp_ol_custom", run_id=ti.run_id,
                    output_dir={str(store)!r}, country_iso_code="FRA",
                )
                with tracker.start_tracking("measured") as step:
                    sum(range(1000))
                ti.xcom_push(key="carbon_record", value=step.metrics.record.to_dict())

            @task
            def plain():
                return 1

            measured() >> plain()
        """,
        "cp_ol_custom",
        custom_run_facets="carbonpipe.operators.openlineage.carbon_run_facet",
    )
    assert states == {"measured": "success", "plain": "success"}
    (record,) = records(store).values()
    facet = task_event(events, "cp_ol_custom", "measured", "COMPLETE")["run"]["facets"]["carbon"]
    assert facet["record_id"] == record.record_id
    assert facet["emissions_kg_co2e"] == pytest.approx(record.emissions_kg_co2e)
    assert "store_uri" not in facet  # a task of its own: its store is not known
    assert "carbon" not in task_event(events, "cp_ol_custom", "plain", "COMPLETE")["run"]["facets"]
