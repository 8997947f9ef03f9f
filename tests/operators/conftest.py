"""Airflow for the operator tests: a throw-away AIRFLOW_HOME, a SQLite DB reset once per session,
and a ``run_dag`` fixture that writes a DAG file into the DAGS_FOLDER and runs it with
``dag.test()`` (Airflow 3.3 only runs DAGs its bundle has parsed).

Airflow reads its configuration when it is first imported, so the environment is set here, at
import time, before any test module imports ``airflow``.
"""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_env import AIRFLOW_HOME, DAGS_FOLDER

# What the web stack of the execution API server that dag.test() runs in-process emits (starlette's
# test client warns about httpx); none of it is ours, and `filterwarnings = error` would fail it.
_THIRD_PARTY_WARNINGS = (
    "ignore::Warning:fastapi.*",
    "ignore::Warning:starlette.*",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            for spec in _THIRD_PARTY_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata DB, created once for the session."""
    from airflow.utils.db import resetdb

    resetdb()
    return AIRFLOW_HOME


@pytest.fixture
def dags_folder(airflow_db: Path) -> Iterator[Path]:
    """The DAGS_FOLDER, emptied after each test so dag.test() parses only that test's DAGs."""
    yield DAGS_FOLDER
    for path in DAGS_FOLDER.iterdir():
        if path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def load_dag_file(path: Path, dag_id: str) -> Any:
    """Import a DAG file the way a test can hold on to, and return its DAG."""
    spec = importlib.util.spec_from_file_location(f"carbonpipe_test_dag_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dags = [v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id]
    assert dags, f"{path} defines no DAG {dag_id!r}"
    return dags[0]


@pytest.fixture
def run_dag(dags_folder: Path) -> Callable[..., Any]:
    """``run_dag(source, dag_id)``: write the DAG file, run it with ``dag.test()``, return the run."""

    def run(source: str, dag_id: str, **test_kwargs: Any) -> Any:
        path = dags_folder / f"{dag_id}.py"
        path.write_text(textwrap.dedent(source))
        dag = load_dag_file(path, dag_id)
        return dag.test(**test_kwargs)

    return run


def task_states(dag_run: Any) -> dict[str, str]:
    """Map each task_id of a run to its final state."""
    return {ti.task_id: getattr(ti.state, "value", ti.state) for ti in dag_run.get_task_instances()}


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """Read an XCom of a finished run from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)
