"""``python -m carbonpipe.integrations.kfp.command``: the ``tracked_command`` container component's
entry point, ``carbonpipe run`` plus KFP's executor output (the metrics file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from carbonpipe.integrations.kfp.context import _given, _numbers, _write_json

# ---------------------------------------------------------------------------------------------
# The tracked_command container component


def _executor_output(
    executor_input: Mapping[str, Any], output: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """KFP's executor output naming ``output``'s artifact with ``metadata`` (shown in the UI)."""
    artifacts = (
        executor_input.get("outputs", {}).get("artifacts", {}).get(output, {}).get("artifacts", [])
    )
    if not artifacts:
        return {}
    first = dict(artifacts[0])
    entry = {
        "name": first.get("name", output),
        "uri": first.get("uri", ""),
        "metadata": dict(metadata),
    }
    return {"artifacts": {output: {"artifacts": [entry]}}}


def run_command(
    run_args: Sequence[str],
    command: Sequence[str],
    *,
    executor_input: Mapping[str, Any] | None = None,
    metrics_output: str = "metrics",
    metrics_path: str | None = None,
    record_path: str | None = None,
) -> int:
    """Run ``command`` under ``carbonpipe run RUN_ARGS`` and hand its metrics to KFP.

    The metrics JSON is written to ``metrics_path`` (the artifact's file) and, as the artifact's
    metadata, to the executor output file the executor input names, so the KFP UI shows the
    figures. The full record goes to ``record_path`` (the ``record`` artifact's file), the copy
    KFP keeps in the pipeline root. Returns ``carbonpipe run``'s exit code (the command's, or 3
    for a refused budget).
    """
    from carbonpipe.cli.app import main as cli_main

    if not command:
        raise ValueError("command must name the program to run, e.g. ['python', 'train.py']")
    with tempfile.TemporaryDirectory(prefix="carbonpipe-cmd-") as tmp:
        metrics_json = os.path.join(tmp, "metrics.json")
        extra = ["--record-json", record_path] if record_path else []
        if record_path:
            os.makedirs(os.path.dirname(os.path.abspath(record_path)), exist_ok=True)
        code = cli_main(["run", *run_args, "--metrics-json", metrics_json, *extra, "--", *command])
        figures: dict[str, Any] = {}
        if os.path.exists(metrics_json):
            with open(metrics_json) as fh:
                figures = json.load(fh)
    numbers = {k: float(v) for k, v in _numbers(figures).items() if math.isfinite(float(v))}
    if figures:
        _write_json(metrics_path, figures)
    output_file = (executor_input or {}).get("outputs", {}).get("outputFile")
    if output_file and numbers:
        _write_json(output_file, _executor_output(executor_input or {}, metrics_output, numbers))
    return code


def _command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carbonpipe.integrations.kfp.command",
        description="Runtime of carbonpipe's KFP components (used inside their container).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    cmd = sub.add_parser("command", help="run a command under `carbonpipe run` for tracked_command")
    cmd.add_argument("--executor-input", default="", help="KFP's executor input JSON ({{$}})")
    cmd.add_argument("--metrics-output", default="metrics", help="name of the Metrics output")
    cmd.add_argument("--metrics-path", default="", help="local path of the Metrics artifact")
    cmd.add_argument("--record-path", default="", help="local path of the record artifact")
    cmd.add_argument("--command-json", required=True, help="the command, a JSON list of strings")
    cmd.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then `carbonpipe run` options")
    return parser


# `carbonpipe run` options the component passes as "--opt=VALUE"; an empty VALUE means not given.
_RUN_OPTIONS = (
    "--project",
    "--pipeline",
    "--team",
    "--run-id",
    "--store",
    "--step",
    "--provider",
    "--region",
    "--country",
    "--tracking-mode",
    "--budget-scope",
    "--budget-kg",
    "--budget-period",
    "--on-exceed",
    "--budget-estimate-kg",
    "--budget-when-unavailable",
)
_BUDGET_OPTIONS = _RUN_OPTIONS[-6:]


def _clean_run_args(args: Sequence[str]) -> list[str]:
    """Drop ``--opt=`` with empty or unresolved values, and a budget without scope or limit."""
    out: dict[str, str] = {}
    extra: list[str] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if sep and name in _RUN_OPTIONS:
            if _given(value) is not None:
                out[name] = value
        elif arg != "--":
            extra.append(arg)
    budget_kg = out.get("--budget-kg")
    if not out.get("--budget-scope") or budget_kg is None or float(budget_kg) <= 0:
        for name in _BUDGET_OPTIONS:
            out.pop(name, None)
    if out.get("--budget-estimate-kg", "").startswith("-"):
        del out["--budget-estimate-kg"]  # negative: no estimate given
    return [f"{k}={v}" for k, v in out.items()] + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m carbonpipe.integrations.kfp.command command --command-json '[...]' -- ...``."""
    from carbonpipe._optional import one_line_when_missing

    one_line_when_missing()  # a missing extra ends the task with one line, not a traceback
    args = _command_parser().parse_args(argv)
    try:
        command = json.loads(args.command_json)
    except ValueError as exc:
        print(f"carbonpipe: --command-json is not JSON: {exc}", file=sys.stderr)
        return 2
    if isinstance(command, str):
        command = ["sh", "-c", command]
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        print("carbonpipe: command must be a non-empty list of strings", file=sys.stderr)
        return 2
    executor_input = json.loads(args.executor_input) if _given(args.executor_input) else {}
    return run_command(
        _clean_run_args(args.run_args),
        command,
        executor_input=executor_input,
        metrics_output=args.metrics_output,
        metrics_path=_given(args.metrics_path),
        record_path=_given(args.record_path),
    )


if __name__ == "__main__":
    sys.exit(main())
