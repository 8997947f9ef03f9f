"""A record outlives its worker: Airflow keeps a copy in XCom, and a sweep delivers it once.

The store is down while the DAG runs and the worker's spool is thrown away after it (as a pod's
is); ``carbonpipe flush --from airflow:`` (run where Airflow's database is, as the ``airflow``
CLI is) then delivers each task's record exactly once, however often it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from tests.object_servers import S3_BUCKET, STORE_PREFIX, free_port
from tests.operators.conftest import task_states, xcom_value

pytestmark = pytest.mark.timeout(180)

DAG_SOURCE = """
from datetime import datetime, timezone
from airflow.sdk import DAG
from carbonpipe.operators import CarbonTrackedOperator

def work(n):
    return sum(i * i for i in range(n)) % 1000

with DAG("{dag_id}", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), schedule=None) as dag:
    first = CarbonTrackedOperator(
        task_id="first", python_callable=work, op_args=[20000], store={store!r},
        project="durable", cloud_provider="gcp", cloud_region="europe-west1",
    )
    second = CarbonTrackedOperator(
        task_id="second", python_callable=work, op_args=[30000], store={store!r},
        project="durable", cloud_provider="gcp", cloud_region="europe-west1",
    )
    first >> second
"""


def _flush(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbonpipe", "flush", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(out.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"not JSON on stdout: {out.stdout!r}; stderr: {out.stderr[-2000:]}"
        ) from exc


def test_records_a_down_store_never_got_are_swept_from_xcom_once(
    run_dag: Callable[..., Any],
    tmp_path: Path,
    s3_store: Any,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"s3://{S3_BUCKET}/{STORE_PREFIX}"
    worker_spool = tmp_path / "worker-spool"
    monkeypatch.setenv("CARBONPIPE_SPOOL_DIR", str(worker_spool))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # store down
    monkeypatch.setenv("CARBONPIPE_STORE_TIMEOUT_S", "2")
    dr = run_dag(DAG_SOURCE.format(dag_id="cp_durable", store=uri), "cp_durable")
    assert task_states(dr) == {"first": "success", "second": "success"}
    copies = [Record.from_dict(xcom_value(dr, t, key="carbon_record")) for t in ("first", "second")]
    assert [r.step for r in copies] == ["first", "second"] and list(s3_store.list("records/")) == []
    shutil.rmtree(worker_spool, ignore_errors=True)  # the worker pods are gone, and their spools

    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_endpoint, "CARBONPIPE_STORE": uri}
    env["CARBONPIPE_SPOOL_DIR"] = str(tmp_path / "sweeper-spool")
    first = _flush("--from", "airflow:cp_durable", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    [swept] = _json(first)["swept"]
    assert (swept["found"], swept["delivered"], swept["duplicates"]) == (2, 2, 0)
    again = _flush("--from", "airflow:cp_durable", env=env)
    [swept] = _json(again)["swept"]
    assert (swept["found"], swept["delivered"], swept["duplicates"]) == (2, 0, 2)

    stored = [Record.from_json(s3_store.get(k).data) for k in s3_store.list("records/v2/")]
    assert sorted(r.record_id for r in stored) == sorted(r.record_id for r in copies)
    assert {r.run_id for r in stored} == {dr.run_id} and {r.status for r in stored} == {"succeeded"}
