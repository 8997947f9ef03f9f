"""The budget-gated training pipeline, run end to end with kfp.local against real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.opener import open_store
from tests.pipelines.conftest import artifact_metadata, run_dir, task_output

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@dataclass(frozen=True)
class Spent:
    """An earlier run's charge, so the month's budget is already spent."""

    record_id: str = "an-earlier-training"
    pipeline: str = "gated-training"
    step: str = "train"
    run_id: str = "an-earlier-run"
    team: str = ""
    emissions_kg_co2e: float = 2.0
    ended_at: str = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def records(store: Store) -> list[Record]:
    return [Record.from_json(store.get(k).data) for k in store.list("records/v2/")]


def run(tmp_path: Path, **arguments: object) -> Any:
    from carbonpipe.components import run_local
    from carbonpipe.pipelines.gated_training import gated_training_pipeline

    return run_local(gated_training_pipeline, pipeline_root=tmp_path / "outputs", **arguments)


def test_budget_allows_training_records_every_tracked_step_of_the_run(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    task = run(tmp_path, store=store.uri, n_samples=50, epochs=20)
    assert task.output == "run"

    recs = sorted(records(store), key=lambda r: r.step)
    assert [r.step for r in recs] == ["evaluate", "preprocess", "train"]
    assert {r.pipeline for r in recs} == {"gated-training"}
    assert {r.project for r in recs} == {"carbonpipe-demo"}
    assert len({r.run_id for r in recs}) == 1 and recs[0].run_id.isdigit()  # kfp.local's job id
    assert {r.status for r in recs} == {"succeeded"} and {r.attempt for r in recs} == {1}
    run_name = run_dir(tmp_path / "outputs").name
    assert {r.labels["kfp_run_name"] for r in recs} == {run_name}
    assert all(
        r.location["provider"] == "gcp" and r.location["region"] == "europe-west1" for r in recs
    )

    outputs = tmp_path / "outputs"
    by_step = {r.step: r for r in recs}
    for step in ("preprocess", "train", "evaluate"):
        shown = artifact_metadata(outputs, step, "carbon_metrics")
        assert shown["emissions_g_co2e"] == pytest.approx(by_step[step].emissions_kg_co2e * 1000)
        assert shown["energy_kwh"] == pytest.approx(by_step[step].energy_kwh["total"])
        assert shown["intensity_g_per_kwh"] == by_step[step].intensity_g_per_kwh
        assert shown["duration_s"] >= 0
    gate = artifact_metadata(outputs, "budget-gate", "status")
    assert gate["fits"] == 1.0 and gate["limit_kg_co2e"] == 1.0
    # the ledger counts whole micrograms
    assert gate["used_kg_co2e"] == pytest.approx(by_step["preprocess"].emissions_kg_co2e, abs=1e-9)
    assert gate["budget_percent"] == pytest.approx(gate["used_kg_co2e"] * 100)
    assert artifact_metadata(outputs, "evaluate", "scores")["mse"] < 5
    assert task_output(outputs, "train")["parameterValues"]["Output"] < 5


def test_spent_budget_skips_training(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    BudgetLedger(store).charge(Spent())
    task = run(tmp_path, store=store.uri, budget_limit_kg=1.0, n_samples=20, epochs=5)
    assert task.output == "skip"
    assert [r.step for r in records(store)] == ["preprocess"]
    tasks = {p.name for p in run_dir(tmp_path / "outputs").iterdir()}
    assert "train" not in tasks and "evaluate" not in tasks and "training-skipped" in tasks
    said = task_output(tmp_path / "outputs", "training-skipped")["parameterValues"]["Output"]
    assert "would be exceeded" in said
    report = json.loads((run_dir(tmp_path / "outputs") / "budget-gate" / "report").read_text())
    assert report["decision"] == "skip" and report["status"]["exceeded"] is True


def test_strict_mode_fails_the_run_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(str(tmp_path / "store"))
    BudgetLedger(store).charge(Spent())
    with pytest.raises(RuntimeError, match="budget-gate"):
        run(tmp_path, store=store.uri, strict=True, n_samples=20, epochs=5)
    printed = capsys.readouterr().out
    assert "carbon budget gate (strict) refused step 'train'" in printed
    assert "pipeline:gated-training" in printed and "would be exceeded" in printed
    assert [r.step for r in records(store)] == ["preprocess"]


def test_records_land_in_s3(tmp_path: Path, s3_store: Store) -> None:
    # The endpoint reaches the tasks through the environment they inherit (AWS_ENDPOINT_URL_S3).
    task = run(tmp_path, store=s3_store.uri, n_samples=20, epochs=5)
    assert task.output == "run"
    recs = records(s3_store)
    assert sorted(r.step for r in recs) == ["evaluate", "preprocess", "train"]
    assert len({r.run_id for r in recs}) == 1
    assert list(s3_store.list("budgets/pipeline=gated-training/charges/"))


def test_cli_compiles_the_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "gated.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "carbonpipe.pipelines.gated_training", "--compile", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load(out.read_text())
    assert spec["pipelineInfo"]["name"] == "gated-training"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"store", "budget_scope", "budget_limit_kg", "strict"} <= set(params)
    assert all(p.get("description") for p in params.values())
    assert params["budget_scope"]["defaultValue"] == "pipeline:gated-training"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    from carbonpipe.components import RELEASE_IMAGE

    assert images == {RELEASE_IMAGE}
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"].values()
    assert {b["taskInfo"]["name"] for b in branches} == {"budget-allows-training", "budget-spent"}


def test_cli_runs_the_pipeline_locally(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "carbonpipe.pipelines.gated_training",
            "--run-local",
            "--store",
            str(store),
            "--pipeline-root",
            str(tmp_path / "outputs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "decision=run" in done.stdout
    assert len(records(open_store(str(store)))) == 3
