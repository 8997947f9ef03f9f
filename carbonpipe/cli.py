"""The ``carbonpipe`` command: run, detect, report, budget, flush, config (each with --json).

``carbonpipe run [options] -- CMD ARGS...`` runs any command as a tracked step: it forwards
signals to the command, exits with the command's exit code (128+N if it died of signal N),
prints a one-line summary to stderr and writes the record. Tracking problems never change
that exit code; only a budget gate does, on purpose:

* exit 3  (``EXIT_BUDGET_EXCEEDED``): the budget's ``on_exceed`` is ``fail`` and the step would
  overrun it; the command was not started.
* exit 0 with "skipped" on stderr: ``on_exceed`` is ``skip``; the command was not started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from carbonpipe.errors import BudgetExceeded, CarbonpipeError

EXIT_BUDGET_EXCEEDED = 3
_FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

log = logging.getLogger("carbonpipe")


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _add_identity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="project name (CARBONPIPE_PROJECT)")
    p.add_argument("--experiment", help="experiment name (CARBONPIPE_EXPERIMENT)")
    p.add_argument("--pipeline", help="pipeline name; default: the project (CARBONPIPE_PIPELINE)")
    p.add_argument("--team", help="team name for team budgets (CARBONPIPE_TEAM)")
    p.add_argument("--run-id", help="run id grouping the steps (CARBONPIPE_RUN_ID)")
    p.add_argument(
        "--store", help="folder, s3://bucket/prefix or gs://bucket/prefix (CARBONPIPE_STORE)"
    )
    p.add_argument("--config", help="carbon.yaml to read (CARBONPIPE_CONFIG)")


def _add_location(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", help="cloud provider: gcp, aws or azure (skip detection)")
    p.add_argument("--region", help="the provider's region, e.g. europe-west1")
    p.add_argument("--country", help="ISO country code when off-cloud, e.g. FR or FRA")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``carbonpipe`` command."""
    parser = argparse.ArgumentParser(
        prog="carbonpipe",
        description="Carbon accounting for ML pipeline steps (CodeCarbon inside).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a command as a tracked step: carbonpipe run [opts] -- CMD"
    )
    _add_identity(run)
    _add_location(run)
    run.add_argument("--step", default=None, help="step name (default: the command's name)")
    run.add_argument("--attempt", type=int, default=None, help="attempt number (retries)")
    run.add_argument("--tracking-mode", choices=["machine", "process", "offline"], default=None)
    run.add_argument("--budget-scope", help="budget scope, e.g. pipeline:train or team:ranking")
    run.add_argument("--budget-kg", type=float, help="budget limit in kg CO2e for --budget-scope")
    run.add_argument(
        "--budget-period", default="month", choices=["month", "quarter", "year", "total"]
    )
    run.add_argument("--on-exceed", default="fail", choices=["fail", "skip"])
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--metrics-json", help="also write the step's metrics as JSON to this file")
    run.add_argument("--json", action="store_true", help="print the metrics as JSON to stderr")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")

    det = sub.add_parser("detect", help="print where this machine is and its grid intensity")
    _add_location(det)
    det.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="summarise the records in a store")
    rep.add_argument("--store", help="store URI (default: CARBONPIPE_STORE or ./carbon-artifacts)")
    rep.add_argument("--pipeline")
    rep.add_argument("--start", type=date.fromisoformat, help="first UTC date, YYYY-MM-DD")
    rep.add_argument("--end", type=date.fromisoformat, help="last UTC date, YYYY-MM-DD")
    rep.add_argument("--json", action="store_true")

    bud = sub.add_parser("budget", help="carbon budgets")
    bsub = bud.add_subparsers(dest="budget_command", required=True)
    st = bsub.add_parser("status", help="used, reserved, remaining, burn rate of a budget")
    st.add_argument(
        "scope", nargs="?", help="pipeline:NAME or team:NAME (default: all in carbon.yaml)"
    )
    st.add_argument("--store")
    st.add_argument("--config")
    st.add_argument("--limit-kg", type=float, help="limit, when the scope is not in carbon.yaml")
    st.add_argument("--period", default=None, choices=["month", "quarter", "year", "total"])
    st.add_argument("--json", action="store_true")

    fl = sub.add_parser("flush", help="deliver records spooled while a store was down")
    fl.add_argument("--spool-dir")
    fl.add_argument("--json", action="store_true")

    cfg = sub.add_parser("config", help="show the resolved settings and where each came from")
    cfg.add_argument("--config")
    cfg.add_argument("--json", action="store_true")

    _register_extensions(sub)
    return parser


def _register_extensions(sub: Any) -> None:
    """Let optional modules (ESG, baselines, plots) add their subcommands."""
    for module in ("carbonpipe.esg_cli",):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)


# -- run ------------------------------------------------------------------------------------
def _labels(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CarbonpipeError(f"--label {pair!r} must be KEY=VALUE")
        out[key] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run ``args.cmd`` as a tracked step and return its exit code."""
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print(
            "carbonpipe run: give the command after --, e.g. carbonpipe run -- python train.py",
            file=sys.stderr,
        )
        return 2
    step = args.step or os.path.basename(cmd[0])
    from carbonpipe.tracker import CarbonTracker

    budget = None
    if args.budget_kg is not None or args.budget_scope is not None:
        from carbonpipe.budget import Budget

        if args.budget_kg is None or args.budget_scope is None:
            print("carbonpipe run: --budget-scope and --budget-kg go together", file=sys.stderr)
            return 2
        budget = Budget(
            scope=args.budget_scope,
            period=args.budget_period,
            limit_kg_co2e=args.budget_kg,
            on_exceed=args.on_exceed,
        )
    tracker = CarbonTracker(
        project_name=args.project,
        experiment_name=args.experiment,
        output_dir=args.store,
        cloud_provider=args.provider,
        cloud_region=args.region,
        country_iso_code=args.country,
        tracking_mode=args.tracking_mode,
        pipeline=args.pipeline,
        team=args.team,
        run_id=args.run_id,
        budget=budget,
        labels=_labels(args.label),
        config_file=args.config,
    )
    try:
        handle = tracker.start_tracking(step, attempt=args.attempt)
    except BudgetExceeded as exc:
        if exc.on_exceed == "skip":
            print(f"carbonpipe: skipped {step}: {exc}", file=sys.stderr)
            return 0
        print(f"carbonpipe: {step} not started: {exc}", file=sys.stderr)
        return EXIT_BUDGET_EXCEEDED

    # While the command runs, this process only waits: it resolves what the record needs then.
    code, status = _run_child(cmd, while_running=lambda: tracker._warm_stop_path(summary=True))
    try:
        metrics = tracker._finish(handle, status)
        print(metrics.summary_line(), file=sys.stderr)
        if args.json:
            print(json.dumps(metrics.to_dict(), sort_keys=True), file=sys.stderr)
        if args.metrics_json:
            with open(args.metrics_json, "w") as fh:
                json.dump(metrics.to_dict(), fh, indent=2, sort_keys=True)
    except Exception as exc:  # the command's exit code stands, whatever tracking did
        print(
            f"carbonpipe: tracking failed after the step ({exc!r}); exit code kept", file=sys.stderr
        )
    return code


def _run_child(
    cmd: list[str], *, while_running: Callable[[], None] | None = None
) -> tuple[int, str]:
    try:
        child = subprocess.Popen(cmd)
    except FileNotFoundError:
        print(f"carbonpipe run: command not found: {cmd[0]}", file=sys.stderr)
        return 127, "failed"
    except PermissionError:
        print(f"carbonpipe run: permission denied: {cmd[0]}", file=sys.stderr)
        return 126, "failed"

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {}
    for name in _FORWARDED_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, forward)
    try:
        if while_running is not None:
            with contextlib.suppress(Exception):  # never in the way of the command
                while_running()
        while True:
            try:
                rc = child.wait()
                break
            except KeyboardInterrupt:  # SIGINT already forwarded; keep waiting for the child
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if rc < 0:
        return 128 - rc, "killed"
    return rc, "succeeded" if rc == 0 else "failed"


# -- detect / report / budget / flush / config ----------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    """Print the detected location and its intensity."""
    import time

    from carbonpipe.config import resolve_settings
    from carbonpipe.intensity import lookup_intensity

    t0 = time.perf_counter()
    loc = resolve_settings().locate(
        provider=args.provider, region=args.region, country_iso=args.country
    )
    intensity = lookup_intensity(loc.provider, loc.region, loc.country_iso)
    data: dict[str, Any] = {
        "provider": loc.provider,
        "region": loc.region,
        "country_iso": loc.country_iso,
        "intensity_g_per_kwh": intensity.intensity_g_per_kwh,
        "detected_by": loc.detected_by,
        "intensity_source": intensity.to_source_dict(),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2),
    }
    if loc.notes:
        data["notes"] = list(loc.notes)
    src = intensity.to_source_dict()
    text = "\n".join(
        [
            f"provider:   {loc.provider or '-'}   ({loc.detected_by})",
            f"region:     {loc.region or '-'}",
            f"country:    {loc.country_iso or '-'}",
            f"intensity:  {intensity.intensity_g_per_kwh:g} g CO2e/kWh "
            f"({src['kind']}: {src['name']}, {src['vintage']})",
            f"elapsed:    {data['elapsed_ms']} ms",
        ]
        + [f"note:       {n}" for n in loc.notes]
    )
    _emit(args, data, text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the summary of the records in a store."""
    from carbonpipe.config import resolve_settings
    from carbonpipe.impact import format_energy, format_mass
    from carbonpipe.report import summarize
    from carbonpipe.store import open_store

    store = open_store(args.store or resolve_settings().store)
    summary = summarize(store, start=args.start, end=args.end, pipeline=args.pipeline)
    data = {"store": store.uri, **summary.to_dict()}
    lines = [
        f"store:      {store.uri}",
        f"records:    {summary.records} ({summary.failed} not succeeded)",
        f"energy:     {format_energy(summary.energy_kwh)}",
        f"emissions:  {format_mass(summary.emissions_kg_co2e)} CO2e",
    ]
    for name, p in sorted(summary.by_pipeline.items()):
        lines.append(
            f"  {name}: {int(p['records'])} records, {format_energy(p['energy_kwh'])}, "
            f"{format_mass(p['emissions_kg_co2e'])} CO2e"
        )
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    """Print the status of one budget, or of every budget in carbon.yaml."""
    from carbonpipe.budget import Budget, BudgetLedger
    from carbonpipe.config import resolve_settings
    from carbonpipe.store import open_store

    s = resolve_settings(config_file=args.config, store=args.store)
    budgets = list(s.budgets)
    if args.scope:
        budgets = [b for b in budgets if b.scope == args.scope]
        if args.limit_kg is not None:
            budgets = [
                Budget(scope=args.scope, period=args.period or "month", limit_kg_co2e=args.limit_kg)
            ]
        if not budgets:
            raise CarbonpipeError(
                f"no budget for scope {args.scope!r} in carbon.yaml; pass --limit-kg (and --period)"
            )
    if args.period:
        budgets = [
            Budget(
                scope=b.scope,
                period=args.period,
                limit_kg_co2e=b.limit_kg_co2e,
                warn_ratio=b.warn_ratio,
                on_exceed=b.on_exceed,
            )
            for b in budgets
        ]
    if not budgets:
        raise CarbonpipeError(
            "no budgets configured: give SCOPE and --limit-kg, or add budgets to carbon.yaml"
        )
    ledger = BudgetLedger(open_store(s.store))
    statuses = [ledger.status(b) for b in budgets]
    data = [st.to_dict() for st in statuses]
    lines = []
    for b, st in zip(budgets, statuses, strict=True):
        days = "-" if st.days_left is None else f"{st.days_left:.1f}"
        flag = " EXCEEDED" if st.exceeded else (" WARNING" if st.warning else "")
        lines.append(
            f"{b.scope} [{b.period}]: {st.used_kg * 1000:.3f} g used + {st.reserved_kg * 1000:.3f} g "
            f"reserved of {st.limit_kg * 1000:.3f} g ({st.percent:.1f}%), "
            f"{st.burn_rate_kg_per_day * 1000:.3f} g/day, {days} days left{flag}"
        )
    _emit(args, data if args.scope is None else data[0], "\n".join(lines))
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    """Deliver every spooled record to its store."""
    from carbonpipe import spool

    report = spool.replay(args.spool_dir)
    data = {
        "delivered": report.delivered,
        "duplicates": report.duplicates,
        "remaining": report.remaining,
        "failed": list(report.failed),
    }
    _emit(
        args,
        data,
        f"delivered {report.delivered}, duplicates {report.duplicates}, remaining {report.remaining}"
        + "".join(f"\n  failed: {f}" for f in report.failed),
    )
    return 0 if report.remaining == 0 else 1


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved settings and their sources."""
    from carbonpipe.config import resolve_settings

    s = resolve_settings(config_file=args.config)
    data = s.to_dict()
    width = max(len(k) for k in data)
    text = "\n".join(f"{k:<{width}}  {v['value']!s:<30}  ({v['source']})" for k, v in data.items())
    _emit(args, data, text)
    return 0


_COMMANDS = {
    "run": cmd_run,
    "detect": cmd_detect,
    "report": cmd_report,
    "budget": cmd_budget,
    "flush": cmd_flush,
    "config": cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carbonpipe`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = _COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.error(f"unknown command {args.command}")
    try:
        return int(handler(args))
    except (CarbonpipeError, ValueError, TypeError) as exc:
        print(f"carbonpipe {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
