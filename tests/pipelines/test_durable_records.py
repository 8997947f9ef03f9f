"""A record outlives its pod: KFP keeps a copy in the pipeline root, and a sweep delivers it once.

The store refuses every write while the pipeline runs and the pod's spool is thrown away after
it (as a pod's is); ``carbonpipe flush --from <pipeline root>`` then delivers each step's record
exactly once, however often it runs. (No ``from __future__ import annotations`` here: KFP reads
the pipeline function's annotations as types.)
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from tests.object_servers import S3_BUCKET, STORE_PREFIX, free_port

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _pipeline() -> Any:
    from kfp import dsl

    from carbonpipe.components import carbon_component

    @carbon_component(project="durable", cloud_provider="gcp", cloud_region="europe-west1")
    def crunch(n: int) -> int:
        return sum(i * i for i in range(n)) % 10_000

    @dsl.pipeline(name="durable-records")
    def durable(store: str) -> None:
        first = crunch(n=20_000, carbon_store=store)
        crunch(n=first.outputs["Output"], carbon_store=store)

    return durable


def _flush(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbonpipe", "flush", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _records(store: Store) -> list[Record]:
    return [Record.from_json(store.get(k).data) for k in store.list("records/v2/")]


def test_records_of_a_run_whose_store_refused_them_are_swept_from_the_pipeline_root_once(
    tmp_path: Path, s3_store: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carbonpipe.components import run_local

    uri = f"s3://{S3_BUCKET}/{STORE_PREFIX}"
    root = tmp_path / "pipeline-root"
    pod_spool = tmp_path / "pod-spool"
    monkeypatch.setenv("CARBONPIPE_SPOOL_DIR", str(pod_spool))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # store down
    run_local(_pipeline(), pipeline_root=root, store=uri)
    assert _records(s3_store) == []
    copies = sorted(root.rglob("carbon_record"))
    assert len(copies) == 2
    steps = {Record.from_json(p.read_bytes()).record_id for p in copies}
    shutil.rmtree(pod_spool)  # the pods are gone, and their spools with them

    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_endpoint, "CARBONPIPE_STORE": uri}
    env["CARBONPIPE_SPOOL_DIR"] = str(tmp_path / "sweeper-spool")
    first = _flush("--from", str(root), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    [swept] = json.loads(first.stdout)["swept"]
    assert (swept["found"], swept["delivered"], swept["duplicates"]) == (2, 2, 0)
    again = _flush("--from", str(root), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    [swept] = json.loads(again.stdout)["swept"]
    assert (swept["found"], swept["delivered"], swept["duplicates"]) == (2, 0, 2)

    recs = _records(s3_store)
    assert {r.record_id for r in recs} == steps and len(recs) == 2
    assert {r.status for r in recs} == {"succeeded"} and {r.project for r in recs} == {"durable"}
    charges = [k for k in s3_store.list("budgets/") if "/charges/" in k]
    assert len(charges) == 2  # each swept record is charged to its pipeline, once


def test_a_step_that_reached_its_store_is_a_duplicate_when_swept(tmp_path: Path) -> None:
    from carbonpipe.components import run_local
    from carbonpipe.stores.opener import open_store

    store = open_store(str(tmp_path / "store"))
    root = tmp_path / "pipeline-root"
    run_local(_pipeline(), pipeline_root=root, store=store.uri)
    before = sorted(store.list(""))
    env = {**os.environ, "CARBONPIPE_STORE": store.uri}
    out = _flush("--from", str(root), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    [swept] = json.loads(out.stdout)["swept"]
    assert (swept["found"], swept["delivered"], swept["duplicates"]) == (2, 0, 2)
    assert sorted(store.list("")) == before  # nothing new: same ids, same bytes


def test_a_sweep_reports_what_is_not_a_record_and_exits_non_zero(tmp_path: Path) -> None:
    root = tmp_path / "root" / "run" / "task"
    root.mkdir(parents=True)
    (root / "carbon_record").write_text('{"schema": "carbonpipe.record/1", "record_id": 7}')
    env = {**os.environ, "CARBONPIPE_STORE": str(tmp_path / "store")}
    out = _flush("--from", str(tmp_path / "root"), env=env)
    assert out.returncode == 1
    [swept] = json.loads(out.stdout)["swept"]
    assert swept["found"] == 1 and swept["delivered"] == 0
    assert "carbon_record" in swept["invalid"][0]
    assert not (tmp_path / "store" / "records").exists()


def test_an_unknown_source_scheme_is_refused_naming_the_accepted_ones(tmp_path: Path) -> None:
    env = {**os.environ, "CARBONPIPE_STORE": str(tmp_path / "store")}
    out = _flush("--from", "kubeflow:run-42", env=env)
    assert out.returncode == 2
    assert "s3://bucket/prefix" in out.stderr and "airflow:" in out.stderr
