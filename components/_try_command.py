"""Try ``tracked_command`` on this machine, without Docker or a cluster.

KFP's ``SubprocessRunner`` only runs lightweight Python components; ``tracked_command`` is a
container component, which it refuses. :func:`run_tracked_command_locally` does what KFP's
launcher does in the pod: it builds the task's executor input from the component's spec,
resolves the placeholders of the container's command and arguments with kfp.local's own
resolver, and runs that exact command in a subprocess of this Python (which must have
carbonpipe installed, as the image has). The record goes to the store like in a cluster.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

TASK_NAME = "tracked-command"


@dataclass(frozen=True)
class LocalCommandRun:
    """What one local run of ``tracked_command`` gave."""

    returncode: int
    #: The step's figures (the ``metrics`` artifact; empty when the command was refused).
    metrics: dict[str, Any]
    #: The step's full record (the ``record`` artifact), or ``None``.
    record: dict[str, Any] | None
    #: The task's folder under the pipeline root (executor output, artifacts).
    task_root: Path
    #: The command that ran, placeholders resolved (``python`` is this interpreter).
    command: list[str] = field(default_factory=list)


def _read_json(path: str | None) -> Any:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _after(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg == flag:
            return args[i + 1]
    return None


def run_tracked_command_locally(
    command: Sequence[str],
    *,
    pipeline: str = "local",
    pipeline_root: str | os.PathLike[str] = "./local_outputs",
    run_id: str | None = None,
    step: str = TASK_NAME,
    capture_output: bool = False,
    timeout: float | None = None,
    **arguments: Any,
) -> LocalCommandRun:
    """Run ``tracked_command(command=command, **arguments)`` as a task of ``pipeline`` would.

    ``arguments`` are the component's other inputs (``store``, ``project``, ``cloud_region``,
    ``budget_scope``...). The run id is ``run_id`` or, like kfp.local's, random digits; the
    step is named ``step`` (in a pipeline: the task name). Returns the exit code (the
    command's, 3 when a ``fail`` budget refused it), the figures and the record.
    """
    from google.protobuf import json_format
    from kfp.local import executor_input_utils, placeholder_utils

    from .command import tracked_command

    if isinstance(command, str) or not command:
        raise ValueError("command must be a non-empty list of strings, e.g. ['python', 'eval.py']")
    spec = tracked_command.pipeline_spec
    component = spec.components["comp-tracked-command"]
    container = json_format.MessageToDict(spec.deployment_spec)["executors"][
        "exec-tracked-command"
    ]["container"]
    run_name = f"{pipeline}-{datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')}"
    root = Path(pipeline_root).resolve()
    task_root = root / run_name / TASK_NAME
    task_root.mkdir(parents=True, exist_ok=True)
    job_id = run_id or str(random.randint(0, 99_999_999))  # noqa: S311 - an id, as kfp.local's
    # what calling the component in a pipeline fills in: the run id from KFP's placeholder
    inputs = {
        "pipeline": pipeline,
        "step": step,
        "run_id": "{{$.pipeline_job_uuid}}",
        "command": list(command),
        **arguments,
    }
    executor_input = executor_input_utils.construct_executor_input(
        component, inputs, str(task_root), block_input_artifact=True
    )
    resolved = placeholder_utils.replace_placeholders(
        [*container["command"], *container["args"]],
        json_format.MessageToDict(executor_input),
        run_name,
        TASK_NAME,
        str(root),
        job_id,
    )
    if resolved[:1] == ["python"]:
        resolved = [sys.executable, *resolved[1:]]
    done = subprocess.run(resolved, capture_output=capture_output, text=True, timeout=timeout)
    metrics = _read_json(_after(resolved, "--metrics-path"))
    record = _read_json(_after(resolved, "--record-path"))
    return LocalCommandRun(
        returncode=done.returncode,
        metrics=metrics if isinstance(metrics, dict) else {},
        record=record if isinstance(record, dict) else None,
        task_root=task_root,
        command=resolved,
    )
