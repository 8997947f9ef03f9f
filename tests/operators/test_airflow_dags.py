"""The DAG factories of carbonpipe.pipelines.airflow_dags and the example DAG files."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import carbonpipe.pipelines
from carbonpipe.stores.local import LocalStore
from tests.operators.conftest import load_dag_file, task_states, xcom_value

EXAMPLES = Path(carbonpipe.pipelines.__file__).parent / "example_dags"

pytestmark = pytest.mark.timeout(120)


def test_example_dag_files_parse_into_the_dags_they_name(dags_folder: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, dags_folder)
    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["carbonpipe_gated_training", "carbonpipe_nightly_esg"]


def test_nightly_esg_dag_is_daily_and_takes_dag_arguments() -> None:
    from carbonpipe.pipelines.airflow_dags import nightly_esg_dag

    dag = nightly_esg_dag("esg_weekly", schedule="@weekly", store="s3://acme/prod", tags=["esg"])
    assert (dag.dag_id, list(dag.task_dict), dag.tags) == ("esg_weekly", ["esg_report"], {"esg"})
    assert nightly_esg_dag().dag_id == "carbonpipe_nightly_esg"


@pytest.mark.parametrize(
    ("context", "month"),
    [
        pytest.param(
            {"data_interval_start": datetime(2026, 11, 30, tzinfo=timezone.utc)},
            "2026-11",
            id="interval",
        ),
        pytest.param(
            {"logical_date": datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)},
            "2026-03",
            id="logical",
        ),
    ],
)
def test_report_month_is_the_month_of_the_runs_data_interval(
    context: dict[str, Any], month: str
) -> None:
    from carbonpipe.pipelines.airflow_dags import month_of

    assert month_of(context) == month


def test_report_month_without_a_data_interval_is_the_month_of_the_day_that_just_ended() -> None:
    from carbonpipe.integrations.kfp.esg import nightly_period
    from carbonpipe.pipelines.airflow_dags import month_of

    assert month_of({"data_interval_start": None, "logical_date": None}) == nightly_period()


def test_nightly_esg_dag_runs_the_nightly_report(
    dags_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("carbonpipe.esg.aggregation")
    monkeypatch.setenv("CARBONPIPE_STORE", str(tmp_path / "store"))
    path = dags_folder / "carbonpipe_nightly_esg.py"
    shutil.copy(EXAMPLES / path.name, path)
    dr = load_dag_file(path, "carbonpipe_nightly_esg").test()
    assert task_states(dr) == {"esg_report": "success"}
    assert isinstance(xcom_value(dr, "esg_report"), dict)


def test_gated_training_example_gates_tracks_and_reports(
    dags_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("CARBONPIPE_STORE", str(store))
    path = dags_folder / "carbonpipe_gated_training.py"
    shutil.copy(EXAMPLES / path.name, path)
    dr = load_dag_file(path, "carbonpipe_gated_training").test()
    assert task_states(dr) == {"budget_gate": "success", "train": "success", "report": "success"}
    report = xcom_value(dr, "report")
    assert report["model"]["slope"] == pytest.approx(3.0, abs=0.1)
    assert report["carbon"]["step"] == "train"
    (key,) = LocalStore(store).list("records/")
    assert "pipeline_key=carbonpipe_gated_training" in key
