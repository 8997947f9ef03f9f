"""KFP when the budget ledger is down: the budget_gate component answers skip (strict: fails the
run) unless the budget chose availability, and a tracked step is refused before it runs.

The store is ``s3://`` at a loopback port nothing listens on; kfp.local's tasks inherit
``AWS_ENDPOINT_URL_S3`` from this process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.errors import BudgetExceeded, BudgetUnavailable
from carbonpipe.integrations.kfp import tracked as kfp_tracked
from carbonpipe.record import Record
from carbonpipe.stores import spool
from tests.object_servers import S3_BUCKET, STORE_PREFIX

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

S3_URI = f"s3://{S3_BUCKET}/{STORE_PREFIX}"
LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}


@pytest.fixture
def ledger_down(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    return endpoint


def _gate_pipeline(**gate_args: Any) -> Any:
    from kfp import dsl

    from carbonpipe.components import budget_gate

    def pipe(store):  # type: ignore[no-untyped-def]
        return budget_gate(
            scope="pipeline:kfp-down", limit_kg_co2e=1.0, step="train", store=store, **gate_args
        ).outputs["decision"]

    # this module's annotations are strings (PEP 563); KFP reads real types
    pipe.__annotations__ = {"store": str, "return": str}
    return dsl.pipeline(name="kfp-down")(pipe)


def test_strict_gate_component_fails_the_run_when_the_ledger_is_down(
    ledger_down: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from carbonpipe.components import run_local

    with pytest.raises(RuntimeError, match="budget-gate"):
        run_local(_gate_pipeline(strict=True), pipeline_root=tmp_path / "out", store=S3_URI)
    printed = capsys.readouterr().out
    assert "carbon budget gate (strict) refused step 'train'" in printed
    assert "ledger unavailable" in printed and "StoreUnavailable" in printed


@pytest.mark.parametrize(
    ("when_unavailable", "decision"),
    [pytest.param("refuse", "skip", id="refuse"), pytest.param("run", "run", id="run")],
)
def test_gate_component_answers_skip_unless_the_budget_chose_availability(
    ledger_down: str, tmp_path: Path, when_unavailable: str, decision: str
) -> None:
    from carbonpipe.components import run_local

    task = run_local(
        _gate_pipeline(when_unavailable=when_unavailable),
        pipeline_root=tmp_path / "out",
        store=S3_URI,
    )
    assert task.output == decision


@pytest.mark.parametrize(
    "on_exceed", [pytest.param("fail", id="fail"), pytest.param("skip", id="skip")]
)
def test_tracked_step_is_refused_before_it_runs_when_the_ledger_is_down(
    ledger_down: str, on_exceed: str
) -> None:
    ran: list[int] = []
    budget = {"scope": "pipeline:pipe", "period": "month", "limit_kg_co2e": 1.0}
    identity = {"carbon_store": S3_URI, "carbon_pipeline": "pipe", "carbon_task": "train"}
    config = {"budget": {**budget, "on_exceed": on_exceed}, **LOCATION}
    if on_exceed == "fail":
        with pytest.raises(BudgetUnavailable) as refused:
            kfp_tracked.run_tracked_step(
                lambda: ran.append(1), {}, config=config, identity=identity
            )
        assert isinstance(refused.value, BudgetExceeded) and "StoreUnavailable" in str(
            refused.value
        )
    else:  # skipped, as an overrun would be: the function is not called, the task succeeds
        assert (
            kfp_tracked.run_tracked_step(
                lambda: ran.append(1), {}, config=config, identity=identity
            )
            is None
        )
    assert ran == []


def test_tracked_step_with_when_unavailable_run_runs_and_notes_it(ledger_down: str) -> None:
    budget = {
        "scope": "pipeline:pipe",
        "period": "month",
        "limit_kg_co2e": 1.0,
        "when_unavailable": "run",
    }
    identity = {"carbon_store": S3_URI, "carbon_pipeline": "pipe", "carbon_task": "train"}
    result = kfp_tracked.run_tracked_step(
        lambda: "trained", {}, config={"budget": budget, **LOCATION}, identity=identity
    )
    assert result == "trained"
    # The store is down: the record waits in the spool, saying the step ran ungated.
    [item] = [i for i in spool.pending() if i.key.startswith("records/")]
    record = Record.from_json(item.read_data())
    assert record.step == "train" and record.status == "succeeded"
    [note] = [e for e in record.tracking_errors if "ran ungated" in e]
    assert "pipeline:pipe" in note and "StoreUnavailable" in note


def test_tracked_command_passes_the_budget_estimate_and_unavailability_to_the_gate(
    tmp_path: Path,
) -> None:
    import subprocess

    from tests.components.test_step_runtime import _command_args

    store = str(tmp_path / "store")
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    budget = ("--budget-scope=pipeline:pipe", "--budget-kg=1.0", "--on-exceed=fail")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        args = _command_args(tmp_path, store, *budget, *extra, command=command)
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    # The component's defaults: no estimate (-1) for a step with no history: refused, exit 2.
    unknown = run("--budget-estimate-kg=-1.0", "--budget-when-unavailable=refuse")
    assert unknown.returncode == 2 and "--budget-estimate-kg" in unknown.stderr
    assert not marker.exists()
    given = run("--budget-estimate-kg=0.1", "--budget-when-unavailable=refuse")
    assert given.returncode == 0, given.stderr
    assert marker.exists()
