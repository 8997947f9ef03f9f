"""The nightly ESG DAG rolls up carbon.yaml's budgets after compacting; a rollup that fails is
noted in the task's result and log, and the report is still written."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from carbonpipe.budgets.charges import scope_key
from carbonpipe.budgets.rollup import closed_before
from carbonpipe.stores.local import LocalStore
from tests.budgets.test_rollup_cli import CONFIG, TEAM, TRAIN, _charged, _rollups
from tests.operators.conftest import load_dag_file, task_states, xcom_value
from tests.operators.test_airflow_dags import EXAMPLES

pytestmark = pytest.mark.timeout(120)


def _nightly(dags_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    pytest.importorskip("carbonpipe.esg.aggregation")
    config = tmp_path / "carbon.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("CARBONPIPE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(config))
    path = dags_folder / "carbonpipe_nightly_esg.py"
    shutil.copy(EXAMPLES / path.name, path)
    return load_dag_file(path, "carbonpipe_nightly_esg").test()


def test_the_nightly_dag_rolls_up_every_configured_budget(
    dags_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(timezone.utc)
    days = _charged(tmp_path / "store", now)

    dr = _nightly(dags_folder, tmp_path, monkeypatch)

    assert task_states(dr) == {"esg_report": "success"}
    rollups = xcom_value(dr, "esg_report")["rollups"]
    assert rollups["failed"] == 0 and rollups["error"] is None
    done = {(s["scope"], s["period"]): s for s in rollups["scopes"]}
    assert set(done) == {(TRAIN, "total"), (TEAM, "month")}
    closed = (closed_before(now) - days[0]).days
    assert done[(TRAIN, "total")]["days_listed"] == closed
    assert len(_rollups(tmp_path / "store", TRAIN)) == closed


def test_a_rollup_that_fails_is_noted_and_the_report_still_written(
    dags_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "store"
    _charged(root, datetime.now(timezone.utc))
    (root / f"budgets/{scope_key(TRAIN)}/rollups").write_text("a file where the folder goes")

    with caplog.at_level(logging.WARNING, logger="carbonpipe.esg.nightly"):
        dr = _nightly(dags_folder, tmp_path, monkeypatch)

    assert task_states(dr) == {"esg_report": "success"}
    result = xcom_value(dr, "esg_report")
    assert result["rollups"]["failed"] == 1
    [train] = [s for s in result["rollups"]["scopes"] if s["scope"] == TRAIN]
    assert train["days_unwritten"] == train["days_listed"] > 0
    assert "budget rollups incomplete for pipeline:train [total]" in caplog.text
    assert any(k.endswith("report.html") for k in LocalStore(root).list("esg/"))
