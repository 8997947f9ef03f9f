"""What carbonpipe's Kubeflow components run inside their container, without importing kfp.

The components in :mod:`carbonpipe.components` are interfaces only (a signature and a
docstring KFP reads into the spec); each body is one call into this module:

* :func:`run_tracked_step`   the body of a ``@carbon_component``: gate, measure and record the
  user's function, and publish its figures to the step's ``Output[Metrics]``.
* :func:`run_budget_gate`    the ``budget_gate`` component: does the next step fit its budget?
* :func:`run_esg_aggregate`  the ``esg_aggregate`` component: the nightly ESG report.
* :func:`main`               ``python -m carbonpipe.step_runtime command ...``, the entry point of
  the ``tracked_command`` container component (``carbonpipe run`` plus KFP's metrics file).

KFP artifacts are duck-typed here (``log_metric``, ``path``, ``metadata``), so this module, like
the rest of the core, never imports kfp. The pipeline's identity arrives as plain strings that
the components fill from KFP's own placeholders (run id, run name, task name); an empty string
or an unresolved ``{{$...}}`` placeholder counts as not given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from carbonpipe.errors import BudgetExceeded

if TYPE_CHECKING:
    from carbonpipe.budget import Budget
    from carbonpipe.tracker import CarbonMetrics, CarbonTracker

log = logging.getLogger("carbonpipe")

#: The output every tracked step adds to its user's signature.
METRICS_OUTPUT = "carbon_metrics"
#: Inputs a tracked step adds, filled by the component from KFP placeholders or the pipeline.
IDENTITY_INPUTS = (
    "carbon_store",
    "carbon_pipeline",
    "carbon_run_id",
    "carbon_run_name",
    "carbon_task",
)
#: Settings a ``@carbon_component`` may fix at decoration time (see :func:`step_config`).
CONFIG_KEYS = (
    "project",
    "experiment",
    "pipeline",
    "team",
    "step",
    "store",
    "budget",
    "cloud_provider",
    "cloud_region",
    "country_iso_code",
    "tracking_mode",
    "labels",
    "function",
    "returns_value",
)
# Retries of one task share the run id and the task name; the attempt number is found from the
# records already in the store, looking no further than this.
_MAX_ATTEMPTS = 100
ATTEMPT_ENV = "CARBONPIPE_ATTEMPT"


class MetricsArtifact(Protocol):
    """What we use of ``kfp.dsl.Metrics``."""

    def log_metric(self, metric: str, value: float) -> None: ...


class StepSkipped(BudgetExceeded):
    """A step whose budget says ``skip`` was not run, but its component must return a value."""


# ---------------------------------------------------------------------------------------------
# Identity and configuration


def _given(value: object) -> str | None:
    """Return ``value`` as a string, or ``None`` when empty or an unresolved KFP placeholder."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or (text.startswith("{{$") and text.endswith("}}")):
        return None
    return text


@dataclass(frozen=True)
class KfpContext:
    """Where a step runs, from KFP placeholders or the pipeline's parameters (all optional)."""

    store: str | None = None
    pipeline: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    task: str | None = None

    @classmethod
    def from_inputs(cls, values: Mapping[str, object] | None = None) -> KfpContext:
        """Build from a mapping keyed ``store``, ``pipeline``, ``run_id``, ``run_name``, ``task``
        (or the same names prefixed ``carbon_``)."""
        values = dict(values or {})

        def get(key: str) -> str | None:
            return _given(values.get(key, values.get(f"carbon_{key}")))

        return cls(
            store=get("store"),
            pipeline=get("pipeline"),
            run_id=get("run_id"),
            run_name=get("run_name"),
            task=get("task"),
        )

    def native(self) -> dict[str, str | None]:
        """KFP's own names for the attempt, labelled ``kfp_<name>`` on the record."""
        return {
            "run_name": self.run_name,
            "task": self.task,
            "pod": os.environ.get("KFP_POD_NAME") or None,
        }


def budget_to_dict(budget: Budget | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate a :class:`~carbonpipe.Budget` (or the mapping of its fields) into a plain dict."""
    if budget is None:
        return None
    from carbonpipe.budget import Budget

    if isinstance(budget, Budget):
        return asdict(budget)
    if isinstance(budget, Mapping):
        return asdict(Budget(**dict(budget)))
    raise TypeError(
        f"budget must be a carbonpipe.Budget or a mapping of its fields, got {type(budget).__name__}"
    )


def step_config(**settings: Any) -> dict[str, Any]:
    """Return the JSON-ready settings a ``@carbon_component`` embeds in its source.

    Raises ``TypeError`` naming an unknown setting, and validates the budget and labels now, at
    pipeline-definition time, rather than in the pod.
    """
    unknown = set(settings) - set(CONFIG_KEYS)
    if unknown:
        raise TypeError(f"unknown step setting(s) {sorted(unknown)}; accepted: {list(CONFIG_KEYS)}")
    out = {k: v for k, v in settings.items() if v is not None}
    if "budget" in out:
        out["budget"] = budget_to_dict(out["budget"])
    labels = out.get("labels")
    if labels is not None and not (
        isinstance(labels, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise TypeError("labels must map strings to strings, e.g. {'model': 'bert'}")
    if "labels" in out:
        out["labels"] = dict(out["labels"])
    if "cloud_provider" in out:
        from carbonpipe.cloud import normalize_provider

        normalize_provider(out["cloud_provider"])
    json.dumps(out)  # everything here must survive being embedded in the component's source
    return out


# ---------------------------------------------------------------------------------------------
# Metrics


def step_metrics(metrics: CarbonMetrics) -> dict[str, float]:
    """The figures a tracked step shows in the KFP UI (numbers only, as KFP's Metrics wants)."""
    out = {
        "energy_kwh": metrics.energy_consumed_kwh,
        "cpu_energy_kwh": metrics.cpu_energy_kwh,
        "gpu_energy_kwh": metrics.gpu_energy_kwh,
        "ram_energy_kwh": metrics.ram_energy_kwh,
        "emissions_g_co2e": metrics.emissions_g_co2e,
        "emissions_kg_co2e": metrics.emissions_kg_co2e,
        "intensity_g_per_kwh": metrics.carbon_intensity_g_per_kwh,
        "duration_s": metrics.duration_s,
        "tracking_errors": float(len(metrics.tracking_errors)),
    }
    if metrics.budget_percent is not None:
        out["budget_percent"] = metrics.budget_percent
    return out


def publish_metrics(artifact: MetricsArtifact | None, values: Mapping[str, float | None]) -> None:
    """Log every finite number of ``values`` on a KFP ``Metrics`` artifact (if one is given)."""
    if artifact is None:
        return
    for name, value in values.items():
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            artifact.log_metric(name, number)


def _write_json(path: str | os.PathLike[str] | None, data: Any) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------------------
# Tracked steps


def make_tracker(config: Mapping[str, Any], identity: KfpContext) -> CarbonTracker:
    """Build the step's tracker: decoration-time settings, then the run's identity, then env."""
    from carbonpipe.budget import Budget
    from carbonpipe.tracker import CarbonTracker

    budget = config.get("budget")
    return CarbonTracker(
        project_name=config.get("project"),
        experiment_name=config.get("experiment"),
        # The pipeline's store parameter is the most specific: it names where this run records.
        output_dir=identity.store or config.get("store"),
        cloud_provider=config.get("cloud_provider"),
        cloud_region=config.get("cloud_region"),
        country_iso_code=config.get("country_iso_code"),
        tracking_mode=config.get("tracking_mode"),
        pipeline=config.get("pipeline") or identity.pipeline,
        team=config.get("team"),
        run_id=identity.run_id,
        budget=Budget(**budget) if budget else None,
    )


def resolve_attempt(tracker: CarbonTracker, step: str) -> int | None:
    """Return the attempt number of ``step`` in this run: ``CARBONPIPE_ATTEMPT``, else one more
    than the attempts already recorded today or yesterday (KFP retries reuse run and task).

    ``None`` (the tracker's default, 1) when the run id was not given or the store cannot say.
    """
    env = os.environ.get(ATTEMPT_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{ATTEMPT_ENV} must be an integer >= 1, got {env!r}") from None
        if value < 1:
            raise ValueError(f"{ATTEMPT_ENV} must be an integer >= 1, got {env!r}")
        return value
    if not tracker.settings.run_id:
        return None
    from carbonpipe.record import RECORDS_PREFIX, make_record_id, partition_value

    s = tracker.settings
    today = datetime.now(timezone.utc).date()
    try:
        seen: set[str] = set()
        for day in (today - timedelta(days=1), today):
            prefix = (
                f"{RECORDS_PREFIX}/date={day.isoformat()}/pipeline={partition_value(s.pipeline)}/"
            )
            seen.update(
                k.rsplit("/", 1)[-1].removesuffix(".json") for k in tracker.store.list(prefix)
            )
    except Exception as exc:  # the store is down: the record will be spooled as attempt 1
        log.debug("carbonpipe: cannot list earlier attempts of %s: %s", step, exc)
        return None
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        if make_record_id(s.project, s.pipeline, tracker.run_id, step, attempt) not in seen:
            return attempt
    return _MAX_ATTEMPTS + 1


def run_tracked_step(
    func: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    metrics: MetricsArtifact | None = None,
    identity: Mapping[str, object] | None = None,
) -> Any:
    """Run ``func(**kwargs)`` as one tracked step and return its result.

    The budget (if any) gates the step before it starts; ``BudgetExceeded`` propagates when its
    ``on_exceed`` is ``fail``. With ``skip`` the function is not called and ``None`` returned
    (a component that declares a return value cannot be skipped: :class:`StepSkipped`). The
    step's figures go to ``metrics`` and its record to the store; a tracking failure never
    changes the function's result or exception.
    """
    from carbonpipe.step_identity import step_identity

    ctx = KfpContext.from_inputs(identity)
    step = config.get("step") or ctx.task or config.get("function") or func.__name__
    tracker = make_tracker(config, ctx)
    who = step_identity(
        orchestrator="kfp",
        pipeline=tracker.settings.pipeline,
        run_id=tracker.run_id,
        task=step,
        attempt=resolve_attempt(tracker, step) or 1,
        native=ctx.native(),
        labels=config.get("labels"),
    )
    try:
        handle = tracker.start_tracking(who.step, attempt=who.attempt, labels=who.labels)
    except BudgetExceeded as exc:
        if exc.on_exceed != "skip":
            print(f"carbonpipe: {step} not started: {exc}", file=sys.stderr)
            raise
        if config.get("returns_value"):
            raise StepSkipped(
                f"{step} was skipped by its carbon budget ({exc}), but its component returns a "
                "value that the next steps need; gate it with budget_gate and dsl.If instead",
                scope=exc.scope,
                used_kg=exc.used_kg,
                reserved_kg=exc.reserved_kg,
                limit_kg=exc.limit_kg,
                estimate_kg=exc.estimate_kg,
                on_exceed="skip",
            ) from exc
        print(f"carbonpipe: skipped {step}: {exc}", file=sys.stderr)
        publish_metrics(metrics, {"skipped": 1.0})
        return None
    with handle:
        result = func(**kwargs)
    try:
        figures = tracker.stop_tracking(step)
        publish_metrics(metrics, step_metrics(figures))
        print(
            f"carbonpipe: step {who.step!r} attempt {who.attempt} of run {tracker.run_id} "
            f"recorded as {figures.record_id} in {tracker.settings.store}",
            file=sys.stderr,
        )
    except Exception as exc:  # the step succeeded; its figures are a by-product
        log.warning("carbonpipe: could not publish the metrics of %s: %s", step, exc)
        return result
    figures.raise_for_regression()  # only with `regression: fail`, after the record is written
    return result


# ---------------------------------------------------------------------------------------------
# Budget gate


@dataclass(frozen=True)
class GateOutcome:
    """What the ``budget_gate`` component returns: ``fits`` and ``decision`` (run or skip)."""

    fits: bool
    decision: str
    message: str
    report: dict[str, Any]


def run_budget_gate(
    *,
    scope: str,
    limit_kg_co2e: float,
    period: str = "month",
    step: str = "",
    estimate_kg_co2e: float = -1.0,
    default_step_estimate_kg: float = 0.0,
    warn_ratio: float = 0.8,
    strict: bool = False,
    store: str = "",
    pipeline: str = "",
    run_id: str = "",
    metrics: MetricsArtifact | None = None,
    report_path: str | None = None,
) -> GateOutcome:
    """Decide, without reserving, whether ``step`` fits ``scope``'s budget, and report it.

    The estimate is ``estimate_kg_co2e`` when >= 0, else the step's baseline, its last run, or
    ``default_step_estimate_kg``. Writes the budget status to ``metrics`` and a JSON report to
    ``report_path``. When it does not fit and ``strict`` is true, raises
    :class:`BudgetExceeded` with the figures (which fails the KFP task).
    """
    from carbonpipe.budget import Budget, BudgetGate, BudgetLedger
    from carbonpipe.config import resolve_settings
    from carbonpipe.store import open_store

    budget = Budget(
        scope=scope,
        period=period,
        limit_kg_co2e=float(limit_kg_co2e),
        warn_ratio=float(warn_ratio),
        on_exceed="fail" if strict else "skip",
        default_step_estimate_kg=float(default_step_estimate_kg),
    )
    settings = resolve_settings(store=_given(store), pipeline=_given(pipeline))
    if settings.sources.get("pipeline") == "project" and budget.scope_kind == "pipeline":
        pipeline_name = budget.scope_name  # no pipeline given: the budget names it
    else:
        pipeline_name = settings.pipeline
    step_name = _given(step) or "step"
    ledger = BudgetLedger(open_store(settings.store))
    gate = BudgetGate(ledger, budget)
    estimate = None if estimate_kg_co2e is None or estimate_kg_co2e < 0 else float(estimate_kg_co2e)
    decision = gate.check(pipeline_name, step_name, estimate_kg=estimate)
    status = ledger.status(budget)
    verdict = "run" if decision.allowed else "skip"
    report = {
        "fits": decision.allowed,
        "decision": verdict,
        "strict": bool(strict),
        "message": decision.message,
        "pipeline": pipeline_name,
        "step": step_name,
        "run_id": _given(run_id),
        "store": ledger.store.uri,
        "checked_at": datetime.now(timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "gate": asdict(decision),
        "status": status.to_dict(),
    }
    publish_metrics(
        metrics,
        {
            "fits": 1.0 if decision.allowed else 0.0,
            "budget_percent": status.percent,
            "used_kg_co2e": status.used_kg,
            "reserved_kg_co2e": status.reserved_kg,
            "remaining_kg_co2e": status.remaining_kg,
            "limit_kg_co2e": status.limit_kg,
            "estimate_kg_co2e": decision.estimate_kg,
            "burn_rate_kg_per_day": status.burn_rate_kg_per_day,
            "days_left": status.days_left,
        },
    )
    _write_json(report_path, report)
    print(
        f"carbonpipe: budget gate for {step_name}: {verdict}: {decision.message}", file=sys.stderr
    )
    if not decision.allowed and strict:
        raise BudgetExceeded(
            f"carbon budget gate (strict) refused step {step_name!r}: {decision.message}",
            scope=decision.scope,
            used_kg=decision.used_kg,
            reserved_kg=decision.reserved_kg,
            limit_kg=decision.limit_kg,
            estimate_kg=decision.estimate_kg,
            on_exceed="fail",
        )
    return GateOutcome(decision.allowed, verdict, decision.message, report)


# ---------------------------------------------------------------------------------------------
# ESG aggregation


def _numbers(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in mapping.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, Mapping) and not prefix:
            out.update(_numbers(value, f"{key}_"))
    return out


def run_esg_aggregate(
    *,
    store: str = "",
    period: str = "",
    metrics: MetricsArtifact | None = None,
    report_html_path: str | None = None,
    report_json_path: str | None = None,
) -> dict[str, Any]:
    """Run :func:`carbonpipe.esg.run_nightly` on ``store`` for ``period`` and publish the result.

    ``period`` is what ``run_nightly`` accepts (e.g. ``2026-11``); empty means
    :func:`nightly_period`.

    The totals go to ``metrics``; the HTML report is copied to ``report_html_path`` and the
    summary (artifact URIs and totals) written to ``report_json_path``. Returns the summary.
    """
    from carbonpipe.config import resolve_settings
    from carbonpipe.esg import run_nightly

    store_uri = resolve_settings(store=_given(store)).store
    period = _given(period) or nightly_period()
    with tempfile.TemporaryDirectory(prefix="carbonpipe-esg-") as out_dir:
        result = dict(run_nightly(store_uri, period, out_dir=out_dir))
        totals = result.get("totals")
        figures = _numbers(totals if isinstance(totals, Mapping) else {})
        if "total_emissions_kg_co2e" in figures:
            figures["total_emissions_g_co2e"] = figures["total_emissions_kg_co2e"] * 1000.0
        publish_metrics(metrics, figures)
        html = _find_html(result, Path(out_dir))
        if report_html_path:
            Path(report_html_path).parent.mkdir(parents=True, exist_ok=True)
            if html is not None:
                shutil.copyfile(html, report_html_path)
            else:
                Path(report_html_path).write_text(_fallback_html(result))
    _write_json(report_json_path, result)
    print(f"carbonpipe: ESG report for {period} written to {store_uri}", file=sys.stderr)
    return result


def nightly_period(now: datetime | None = None) -> str:
    """The month (``YYYY-MM``, UTC) a nightly run reports on: the day that just ended's.

    A run just after midnight on the 1st writes the final report of the month before, as the
    Airflow DAG does with its data interval.
    """
    day = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) - timedelta(days=1)
    return f"{day:%Y-%m}"


def _find_html(result: Mapping[str, Any], out_dir: Path) -> Path | None:
    """The local HTML report ``run_nightly`` produced, wherever its result says it is."""
    candidates: list[Any] = [result.get("html"), result.get("report_html")]
    for key in ("artifacts", "local", "files", "paths"):
        group = result.get(key)
        if isinstance(group, Mapping):
            candidates += [group.get("html"), group.get("report.html"), group.get("report_html")]
    for c in candidates:
        if isinstance(c, (str, os.PathLike)) and Path(c).is_file():
            return Path(c)
    found = sorted(out_dir.rglob("*.html"))
    return found[0] if found else None


def _fallback_html(result: Mapping[str, Any]) -> str:
    import html

    body = html.escape(json.dumps(result, indent=2, sort_keys=True, default=str))
    return f"<!doctype html><html><body><h1>carbonpipe ESG report</h1><pre>{body}</pre></body></html>\n"


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
) -> int:
    """Run ``command`` under ``carbonpipe run RUN_ARGS`` and hand its metrics to KFP.

    The metrics JSON is written to ``metrics_path`` (the artifact's file) and, as the artifact's
    metadata, to the executor output file the executor input names, so the KFP UI shows the
    figures. Returns ``carbonpipe run``'s exit code (the command's, or 3 for a refused budget).
    """
    from carbonpipe.cli import main as cli_main

    if not command:
        raise ValueError("command must name the program to run, e.g. ['python', 'train.py']")
    with tempfile.TemporaryDirectory(prefix="carbonpipe-cmd-") as tmp:
        metrics_json = os.path.join(tmp, "metrics.json")
        code = cli_main(["run", *run_args, "--metrics-json", metrics_json, "--", *command])
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
        prog="python -m carbonpipe.step_runtime",
        description="Runtime of carbonpipe's KFP components (used inside their container).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    cmd = sub.add_parser("command", help="run a command under `carbonpipe run` for tracked_command")
    cmd.add_argument("--executor-input", default="", help="KFP's executor input JSON ({{$}})")
    cmd.add_argument("--metrics-output", default="metrics", help="name of the Metrics output")
    cmd.add_argument("--metrics-path", default="", help="local path of the Metrics artifact")
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
)


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
        for name in ("--budget-scope", "--budget-kg", "--budget-period", "--on-exceed"):
            out.pop(name, None)
    return [f"{k}={v}" for k, v in out.items()] + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m carbonpipe.step_runtime command --command-json '[...]' -- ...``."""
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
    )


if __name__ == "__main__":
    sys.exit(main())
