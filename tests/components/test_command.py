"""``tracked_command``, started the way KFP starts its container (no Docker needed).

kfp.local's subprocess runner refuses container components, so the test does what KFP's
launcher does: build the executor input from the component spec, resolve the placeholders of
its command and arguments (with kfp.local's own resolver), and run the result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def container_command(tmp_path: Path, **arguments: Any) -> list[str]:
    from google.protobuf import json_format
    from kfp import dsl
    from kfp.local import executor_input_utils, placeholder_utils

    from carbonpipe.components import tracked_command

    spec = tracked_command.pipeline_spec
    component = spec.components["comp-tracked-command"]
    container = json_format.MessageToDict(spec.deployment_spec)["executors"][
        "exec-tracked-command"
    ]["container"]
    # what calling the component inside a pipeline fills in
    arguments = {
        "pipeline": "cmd-pipe",
        "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        "step": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        **arguments,
    }
    executor_input = executor_input_utils.construct_executor_input(
        component, arguments, str(tmp_path / "task"), block_input_artifact=True
    )
    command = placeholder_utils.replace_placeholders(
        [*container["command"], *container["args"]],
        json_format.MessageToDict(executor_input),
        "cmd-pipe-run",
        "tracked-command",
        str(tmp_path),
        "4242",
    )
    assert command[:3] == ["python", "-m", "carbonpipe.integrations.kfp.command"]
    return [sys.executable, *command[1:]]


def test_tracked_command_runs_the_command_and_reports_metrics_to_kfp(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    (tmp_path / "task").mkdir()
    cmd = container_command(
        tmp_path,
        command=[sys.executable, "-c", "print('trained')"],
        store=store,
        project="cmd-proj",
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "trained" in done.stdout
    [key] = list(open_store(store).list("records/v2/"))
    rec = Record.from_json(open_store(store).get(key).data)
    assert (rec.project, rec.pipeline, rec.run_id, rec.step) == (
        "cmd-proj",
        "cmd-pipe",
        "4242",
        "tracked-command",
    )
    out = json.loads((tmp_path / "task" / "executor_output.json").read_text())
    [artifact] = out["artifacts"]["metrics"]["artifacts"]
    assert artifact["metadata"]["emissions_g_co2e"] == pytest.approx(rec.emissions_kg_co2e * 1000)
    assert artifact["metadata"]["intensity_g_per_kwh"] == rec.intensity_g_per_kwh
    assert json.loads((tmp_path / "task" / "metrics").read_text())["record_id"] == rec.record_id


def test_tracked_command_fails_with_the_commands_exit_code(tmp_path: Path) -> None:
    (tmp_path / "task").mkdir()
    cmd = container_command(
        tmp_path,
        command=[sys.executable, "-c", "raise SystemExit(7)"],
        store=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 7


def test_the_local_helper_runs_tracked_command_as_kfp_would(tmp_path: Path) -> None:
    from carbonpipe.components import run_tracked_command_locally

    store = str(tmp_path / "store")
    run = run_tracked_command_locally(
        [sys.executable, "-c", "print('evaluated')"],
        pipeline="eval-pipe",
        pipeline_root=tmp_path / "outputs",
        store=store,
        project="cmd-proj",
        cloud_provider="gcp",
        cloud_region="europe-west1",
        capture_output=True,
    )
    assert run.returncode == 0
    st = open_store(store)
    [key] = [k for k in st.list("records/") if k.endswith(".json")]
    rec = Record.from_json(st.get(key).data)
    assert (rec.project, rec.pipeline, rec.step, rec.status) == (
        "cmd-proj",
        "eval-pipe",
        "tracked-command",
        "succeeded",
    )
    assert rec.run_id.isdigit()  # a KFP-like job id, resolved from the placeholder
    assert run.record is not None and run.record["record_id"] == rec.record_id
    assert run.metrics["record_id"] == rec.record_id
    assert run.task_root.is_relative_to(tmp_path / "outputs")
    out = json.loads((run.task_root / "executor_output.json").read_text())
    [artifact] = out["artifacts"]["metrics"]["artifacts"]
    assert artifact["metadata"]["emissions_g_co2e"] == pytest.approx(rec.emissions_kg_co2e * 1000)


def test_the_local_helper_keeps_the_commands_exit_code(tmp_path: Path) -> None:
    from carbonpipe.components import run_tracked_command_locally

    run = run_tracked_command_locally(
        [sys.executable, "-c", "raise SystemExit(5)"],
        pipeline_root=tmp_path / "outputs",
        store=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        capture_output=True,
    )
    assert run.returncode == 5
