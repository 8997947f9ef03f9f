"""The nightly ESG pipeline: kfp.local runs on local and S3 stores, compile, and the lazy module."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from carbonpipe.integrations.kfp import tracked as kfp_tracked
from carbonpipe.stores.base import Store
from carbonpipe.stores.opener import open_store
from tests.pipelines.conftest import artifact_metadata, run_dir

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

PERIOD = f"{datetime.now(timezone.utc):%Y-%m}"


def seed_records(store_uri: str, steps: tuple[str, ...] = ("prep", "train")) -> None:
    """Two tracked steps of one run, recorded the way a component records them."""
    for step in steps:
        kfp_tracked.run_tracked_step(
            lambda: sum(i * i for i in range(300_000)),  # enough work to emit whole micrograms
            {},
            config={"project": "esg-test", "cloud_provider": "gcp", "cloud_region": "europe-west1"},
            identity={
                "carbon_store": store_uri,
                "carbon_pipeline": "train-pipe",
                "carbon_run_id": "r1",
                "carbon_task": step,
            },
        )


def run(tmp_path: Path, store: str) -> None:
    from carbonpipe.components import run_local
    from carbonpipe.pipelines.nightly_esg import nightly_esg_pipeline

    run_local(nightly_esg_pipeline, pipeline_root=tmp_path / "outputs", store=store, period=PERIOD)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_nightly_report_is_written_to_the_store_and_published(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store = (
        request.getfixturevalue("s3_store")
        if backend == "s3"
        else open_store(str(tmp_path / "store"))
    )
    seed_records(store.uri)
    run(tmp_path, store.uri)

    totals = artifact_metadata(tmp_path / "outputs", "esg-aggregate", "totals")
    assert totals["step_attempts"] == 2
    assert totals["total_emissions_kg_co2e"] > 0
    assert totals["total_emissions_g_co2e"] == pytest.approx(
        totals["total_emissions_kg_co2e"] * 1000
    )
    task_dir = run_dir(tmp_path / "outputs") / "esg-aggregate"
    assert "<html" in (task_dir / "report").read_text().lower()
    summary = json.loads((task_dir / "summary").read_text())
    assert summary["totals"]["step_attempts"] == 2
    assert any(k.startswith(f"esg/{PERIOD}/report.html") for k in store.list("esg/"))


def test_cli_compiles_the_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "nightly.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "carbonpipe.pipelines.nightly_esg", "--compile", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load(out.read_text())
    assert spec["pipelineInfo"]["name"] == "nightly-esg"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"store", "period", "sweep_from"}
    outputs = spec["components"]["comp-esg-aggregate"]["outputDefinitions"]["artifacts"]
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["totals"]["artifactType"]["schemaTitle"] == "system.Metrics"


def test_module_builds_the_pipeline_lazily_and_offers_the_airflow_dag() -> None:
    code = (
        "import sys, carbonpipe.pipelines.nightly_esg as m;"
        "assert 'kfp' not in sys.modules and 'airflow' not in sys.modules;"
        "assert callable(m.nightly_esg_dag);"
        "p = m.nightly_esg_pipeline; assert 'kfp' in sys.modules;"
        "assert p.name == 'nightly-esg' and m.nightly_esg_pipeline is p;"
        "import carbonpipe.pipelines as pkg; assert pkg.nightly_esg_pipeline is p;"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_nightly_esg_dag_delegates_to_the_airflow_factory() -> None:
    pytest.importorskip("airflow")
    from carbonpipe.pipelines import nightly_esg

    dag = nightly_esg.nightly_esg_dag(store="s3://acme/prod")
    assert dag.dag_id == "carbonpipe_nightly_esg"
