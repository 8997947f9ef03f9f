"""The README's main-job command, run as a user runs it (in a subprocess, on a fresh store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe.report import summarize
from carbonpipe.stores.opener import open_store
from tests.esg.sql_stores import report, sql_statements


def test_demo_runs_kfp_airflow_and_esg_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "carbon-artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARBONPIPE_CLOUD"))}
    out = subprocess.run(
        [sys.executable, "-m", "carbonpipe.pipelines.demo", "--store", str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "gate decided 'run'" in out.stdout and "gate decided 'skip'" in out.stdout
    gates = [line for line in out.stdout.splitlines() if "gate decided" in line]
    assert len(gates) == 3  # KFP within budget, KFP budget spent, the Airflow DAG's gate
    assert any(
        line.startswith("Airflow carbonpipe_demo_training: gate decided 'run'") for line in gates
    )
    for line in gates:  # each decision says what it was decided on
        assert all(word in line for word in ("used", "reserved", "estimate", "limit")), line
    # the terminal shows the summary; the runners' logs (KFP's executor JSON...) go to a file
    assert len(out.stdout.splitlines()) < 30, out.stdout
    assert "executor_input" not in out.stdout and "Executing task" not in out.stdout
    assert not out.stderr.strip(), out.stderr[-3000:]
    [log_line] = [line for line in out.stdout.splitlines() if line.startswith("logs:")]
    log = Path(log_line.split(None, 1)[1])
    assert log.is_relative_to(store) and "Executing task" in log.read_text()
    assert "'train': 'success'" in out.stdout
    summary = summarize(open_store(str(store)))
    assert set(summary.by_pipeline) == {"gated-training", "carbonpipe_demo_training"}
    assert summary.records >= 4 and summary.emissions_kg_co2e > 0
    for name in ("report.json", "report.csv", "report.html"):
        assert any(store.glob(f"esg/*/{name}")), name
    assert f"records:   {summary.records} in {store}" in out.stdout
    # The demo's store through the SQL `carbonpipe sql` ships: the same records, to the nanogram.
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for statement in sql_statements("duckdb", store):
        con.execute(statement)
    expected = report(store)
    totals = "SELECT COUNT(*), SUM(emissions_ng), SUM(energy_total_nwh) FROM carbon_records"
    assert con.execute(totals).fetchone() == (
        expected["records"],
        expected["emissions_ng"],
        expected["energy_nwh"],
    )
