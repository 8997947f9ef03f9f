"""The kfp-free runtime the components call in their pod: tracked steps, the gate, commands."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.errors import BudgetExceeded
from carbonpipe.integrations.kfp import context as kfp_context
from carbonpipe.integrations.kfp import esg as kfp_esg
from carbonpipe.integrations.kfp import gate as kfp_gate
from carbonpipe.integrations.kfp import tracked as kfp_tracked
from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


class FakeMetrics:
    """Stands in for kfp.dsl.Metrics: what log_metric records."""

    def __init__(self) -> None:
        self.metadata: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.metadata[metric] = value


@dataclass(frozen=True)
class Spent:
    """A chargeable record of what a pipeline already emitted."""

    record_id: str
    pipeline: str
    step: str
    emissions_kg_co2e: float
    team: str = ""
    ended_at: str = ""
    run_id: str = "an-earlier-run"


def spend(store_uri: str, pipeline: str, kg: float, step: str = "train") -> None:
    ended = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    BudgetLedger(open_store(store_uri)).charge(
        Spent(f"spent-{pipeline}-{step}", pipeline, step, kg, ended_at=ended)
    )


def records(store_uri: str) -> list[Record]:
    store = open_store(store_uri)
    return [Record.from_json(store.get(k).data) for k in store.list("records/v2/")]


def _square(x: int) -> int:
    return x * x


def test_tracked_step_returns_the_result_records_it_and_publishes_metrics(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    metrics = FakeMetrics()
    identity = {
        "carbon_store": store,
        "carbon_pipeline": "pipe",
        "carbon_run_id": "run-1",
        "carbon_run_name": "pipe-2026",
        "carbon_task": "square",
    }
    result = kfp_tracked.run_tracked_step(
        _square,
        {"x": 7},
        config={"project": "proj", **LOCATION},
        metrics=metrics,
        identity=identity,
    )
    assert result == 49
    [rec] = records(store)
    assert (rec.project, rec.pipeline, rec.run_id, rec.step, rec.attempt, rec.status) == (
        "proj",
        "pipe",
        "run-1",
        "square",
        1,
        "succeeded",
    )
    assert rec.labels == {"kfp_run_name": "pipe-2026", "kfp_task": "square"}
    assert {"energy_kwh", "emissions_g_co2e", "intensity_g_per_kwh", "duration_s"} <= set(
        metrics.metadata
    )
    assert metrics.metadata["emissions_g_co2e"] == pytest.approx(rec.emissions_kg_co2e * 1000)
    assert metrics.metadata["intensity_g_per_kwh"] == rec.intensity_g_per_kwh


def test_unresolved_placeholders_count_as_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_STORE", str(tmp_path / "env-store"))
    identity = {
        "carbon_store": "",
        "carbon_pipeline": "",
        "carbon_run_id": "{{$.pipeline_job_uuid}}",
        "carbon_task": "{{$.pipeline_task_name}}",
    }
    kfp_tracked.run_tracked_step(
        _square, {"x": 2}, config={"function": "square", **LOCATION}, identity=identity
    )
    [rec] = records(str(tmp_path / "env-store"))
    assert rec.step == "square" and "{{" not in rec.run_id


def test_a_retry_in_the_same_run_is_the_next_attempt(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    identity = {
        "carbon_store": store,
        "carbon_pipeline": "pipe",
        "carbon_run_id": "run-1",
        "carbon_task": "flaky",
    }

    def flaky() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        kfp_tracked.run_tracked_step(flaky, {}, config=dict(LOCATION), identity=identity)
    kfp_tracked.run_tracked_step(lambda: None, {}, config=dict(LOCATION), identity=identity)
    got = sorted((r.attempt, r.status) for r in records(store))
    assert got == [(1, "failed"), (2, "succeeded")]


def test_budget_fail_stops_the_step_before_it_runs(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    spend(store, "pipe", 2.0)
    budget = {
        "scope": "pipeline:pipe",
        "period": "month",
        "limit_kg_co2e": 1.0,
        "on_exceed": "fail",
    }
    ran = []
    with pytest.raises(BudgetExceeded):
        kfp_tracked.run_tracked_step(
            lambda: ran.append(1),
            {},
            config={"budget": budget, **LOCATION},
            identity={"carbon_store": store, "carbon_pipeline": "pipe", "carbon_task": "train"},
        )
    assert ran == [] and records(store) == []


def test_budget_skip_skips_a_step_without_return_value_and_refuses_one_with(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    spend(store, "pipe", 2.0)
    budget = {
        "scope": "pipeline:pipe",
        "period": "month",
        "limit_kg_co2e": 1.0,
        "on_exceed": "skip",
    }
    identity = {"carbon_store": store, "carbon_pipeline": "pipe", "carbon_task": "train"}
    metrics = FakeMetrics()
    assert (
        kfp_tracked.run_tracked_step(
            _square,
            {"x": 3},
            config={"budget": budget, **LOCATION},
            metrics=metrics,
            identity=identity,
        )
        is None
    )
    assert metrics.metadata == {"skipped": 1.0}
    with pytest.raises(kfp_context.StepSkipped, match="budget_gate and dsl.If"):
        kfp_tracked.run_tracked_step(
            _square,
            {"x": 3},
            config={"budget": budget, "returns_value": True, **LOCATION},
            identity=identity,
        )


def test_budgeted_step_publishes_budget_percent(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    spend(store, "pipe", 0.25)
    budget = {"scope": "pipeline:pipe", "period": "month", "limit_kg_co2e": 1.0}
    metrics = FakeMetrics()
    kfp_tracked.run_tracked_step(
        _square,
        {"x": 3},
        config={"budget": budget, **LOCATION},
        metrics=metrics,
        identity={"carbon_store": store, "carbon_pipeline": "pipe", "carbon_task": "train"},
    )
    assert metrics.metadata["budget_percent"] == pytest.approx(25.0, abs=0.1)


@pytest.mark.parametrize(
    "spent_kg, strict, decision",
    [
        pytest.param(0.0, False, "run", id="fits"),
        pytest.param(2.0, False, "skip", id="spent-skips"),
    ],
)
def test_gate_decides_and_reports(
    tmp_path: Path, spent_kg: float, strict: bool, decision: str
) -> None:
    store = str(tmp_path / "store")
    if spent_kg:
        spend(store, "pipe", spent_kg)
    metrics = FakeMetrics()
    report = tmp_path / "report.json"
    outcome = kfp_gate.run_budget_gate(
        scope="pipeline:pipe",
        limit_kg_co2e=1.0,
        step="train",
        store=store,
        strict=strict,
        metrics=metrics,
        report_path=str(report),
    )
    assert (outcome.decision, outcome.fits) == (decision, decision == "run")
    body = json.loads(report.read_text())
    assert body["decision"] == decision and body["pipeline"] == "pipe"
    assert body["status"]["used_kg"] == pytest.approx(spent_kg)
    assert metrics.metadata["fits"] == (1.0 if decision == "run" else 0.0)
    assert metrics.metadata["budget_percent"] == pytest.approx(spent_kg * 100)


def test_strict_gate_fails_with_the_figures(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    spend(store, "pipe", 2.0)
    report = tmp_path / "report.json"
    with pytest.raises(
        BudgetExceeded,
        match=r"carbon budget gate \(strict\) refused step 'train'.*would be exceeded",
    ):
        kfp_gate.run_budget_gate(
            scope="pipeline:pipe",
            limit_kg_co2e=1.0,
            step="train",
            store=store,
            strict=True,
            report_path=str(report),
        )
    assert json.loads(report.read_text())["decision"] == "skip"  # the report is written first


def test_gate_uses_the_given_estimate(tmp_path: Path) -> None:
    outcome = kfp_gate.run_budget_gate(
        scope="team:ml", limit_kg_co2e=1.0, step="train", store=str(tmp_path), estimate_kg_co2e=1.5
    )
    assert outcome.decision == "skip" and "estimate 1.5 kg (given)" in outcome.message


def test_nightly_period_is_the_month_of_the_day_that_ended() -> None:
    assert kfp_esg.nightly_period(datetime(2026, 12, 1, 0, 30, tzinfo=timezone.utc)) == "2026-11"
    assert kfp_esg.nightly_period(datetime(2026, 12, 15, tzinfo=timezone.utc)) == "2026-12"


def _executor_input(tmp_path: Path) -> dict[str, Any]:
    return {
        "inputs": {"parameterValues": {}},
        "outputs": {
            "artifacts": {
                "metrics": {
                    "artifacts": [
                        {
                            "name": "metrics",
                            "uri": str(tmp_path / "metrics"),
                            "type": {"schemaTitle": "system.Metrics"},
                        }
                    ]
                }
            },
            "outputFile": str(tmp_path / "executor_output.json"),
        },
    }


def _command_args(
    tmp_path: Path, store: str, *extra: str, command: list[str] | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "carbonpipe.integrations.kfp.command",
        "command",
        "--executor-input",
        json.dumps(_executor_input(tmp_path)),
        "--metrics-output",
        "metrics",
        "--metrics-path",
        str(tmp_path / "metrics"),
        "--command-json",
        json.dumps(command or [sys.executable, "-c", "print('hello')"]),
        "--",
        "--step=hello",
        "--project=",
        f"--store={store}",
        "--pipeline=pipe",
        "--run-id=r1",
        "--provider=gcp",
        "--region=europe-west1",
        "--budget-scope=",
        "--budget-kg=0.0",
        *extra,
    ]


def test_command_runtime_tracks_the_command_and_writes_kfp_metrics(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    done = subprocess.run(
        _command_args(tmp_path, store), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout
    [rec] = records(store)
    assert (rec.pipeline, rec.run_id, rec.step, rec.status) == ("pipe", "r1", "hello", "succeeded")
    out = json.loads((tmp_path / "executor_output.json").read_text())
    [artifact] = out["artifacts"]["metrics"]["artifacts"]
    assert artifact["uri"] == str(tmp_path / "metrics")
    assert artifact["metadata"]["emissions_kg_co2e"] == pytest.approx(rec.emissions_kg_co2e)
    assert json.loads((tmp_path / "metrics").read_text())["record_id"] == rec.record_id


def test_command_runtime_keeps_the_exit_code_and_refuses_an_overrun(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    failing = [sys.executable, "-c", "raise SystemExit(5)"]
    assert (
        subprocess.run(
            _command_args(tmp_path, store, command=failing), capture_output=True, timeout=120
        ).returncode
        == 5
    )
    spend(store, "pipe", 2.0)
    refused = subprocess.run(
        _command_args(
            tmp_path, store, "--budget-scope=pipeline:pipe", "--budget-kg=1.0", "--on-exceed=fail"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 3, refused.stderr
    assert "not started" in refused.stderr
