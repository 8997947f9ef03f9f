"""The ``carbonpipe`` command: run, detect, report, budget, flush, config (each with --json).

``carbonpipe run [options] -- CMD ARGS...`` runs any command as a tracked step: it forwards
signals to the command, exits with the command's exit code (128+N if it died of signal N),
prints a one-line summary to stderr and writes the record. Tracking problems never change
that exit code; only a budget gate does, on purpose:

* exit 3  (``EXIT_BUDGET_EXCEEDED``): the budget's ``on_exceed`` is ``fail`` and the step would
  overrun it; the command was not started.
* exit 0 with "skipped" on stderr: ``on_exceed`` is ``skip``; the command was not started.
* exit 2: bad options or settings (store URI, provider, labels, env, carbon.yaml); the command
  was not started.

As the container entrypoint, the wrapper must not make a step slower: without a budget to gate
on, it checks the input, reads the step's energy counters and starts the command before it
imports anything else (argparse, logging, CodeCarbon's sidecar, the store); the measured window
opens at those counters, and everything else is set up while the command runs.
"""

from __future__ import annotations

import os
import sys

from carbonpipe.errors import BudgetExceeded, CarbonpipeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from carbonpipe.config import Settings
    from carbonpipe.tracker import CarbonTracker, _Step

EXIT_BUDGET_EXCEEDED = 3
_FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

# The options of ``carbonpipe run``, as argparse keyword arguments. The parser is built from these
# tables, and so is the scan that reads a plain ``run`` command line before argparse is imported.
_IDENTITY_OPTIONS: dict[str, dict[str, Any]] = {
    "--project": {"help": "project name (CARBONPIPE_PROJECT)"},
    "--experiment": {"help": "experiment name (CARBONPIPE_EXPERIMENT)"},
    "--pipeline": {"help": "pipeline name; default: the project (CARBONPIPE_PIPELINE)"},
    "--team": {"help": "team name for team budgets (CARBONPIPE_TEAM)"},
    "--run-id": {"help": "run id grouping the steps (CARBONPIPE_RUN_ID)"},
    "--store": {"help": "folder, s3://bucket/prefix or gs://bucket/prefix (CARBONPIPE_STORE)"},
    "--config": {"help": "carbon.yaml to read (CARBONPIPE_CONFIG)"},
}
_LOCATION_OPTIONS: dict[str, dict[str, Any]] = {
    "--provider": {"help": "cloud provider: gcp, aws or azure (skip detection)"},
    "--region": {"help": "the provider's region, e.g. europe-west1"},
    "--country": {"help": "ISO country code when off-cloud, e.g. FR or FRA"},
}
_BUDGET_OPTIONS: dict[str, dict[str, Any]] = {
    "--budget-scope": {"help": "budget scope, e.g. pipeline:train or team:ranking"},
    "--budget-kg": {"type": float, "help": "budget limit in kg CO2e for --budget-scope"},
    "--budget-period": {"default": "month", "choices": ["month", "quarter", "year", "total"]},
    "--on-exceed": {"default": "fail", "choices": ["fail", "skip"]},
}
_RUN_OPTIONS: dict[str, dict[str, Any]] = {
    **_IDENTITY_OPTIONS,
    **_LOCATION_OPTIONS,
    "--step": {"default": None, "help": "step name (default: the command's name)"},
    "--attempt": {"type": int, "default": None, "help": "attempt number (retries)"},
    "--tracking-mode": {"choices": ["machine", "process", "offline"], "default": None},
    **_BUDGET_OPTIONS,
    "--label": {"action": "append", "default": [], "metavar": "KEY=VALUE"},
    "--metrics-json": {"help": "also write the step's metrics as JSON to this file"},
    "--json": {"action": "store_true", "help": "print the metrics as JSON to stderr"},
}


def _add_options(p: argparse.ArgumentParser, options: Mapping[str, Mapping[str, Any]]) -> None:
    for flag, kwargs in options.items():
        p.add_argument(flag, **kwargs)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    import json

    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``carbonpipe`` command."""
    import argparse
    from datetime import date

    parser = argparse.ArgumentParser(
        prog="carbonpipe",
        description="Carbon accounting for ML pipeline steps (CodeCarbon inside).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a command as a tracked step: carbonpipe run [opts] -- CMD"
    )
    _add_options(run, _RUN_OPTIONS)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")

    det = sub.add_parser("detect", help="print where this machine is and its grid intensity")
    _add_options(det, _LOCATION_OPTIONS)
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
if TYPE_CHECKING:
    from argparse import Namespace as _RunArgs  # what it stands in for
else:

    class _RunArgs:
        """What argparse returns for a plain ``carbonpipe run`` line (see :func:`_scan_run`)."""

        def __init__(self, **values: Any) -> None:
            self.__dict__.update(values)


def _scan_run(argv: Sequence[str]) -> _RunArgs | None:
    """Read ``[-v] run [options] -- CMD...`` without argparse, or return None to use it.

    Only a line argparse reads the same way comes back: exact option names of the table, each
    value given (``--opt VALUE`` or ``--opt=VALUE``), choices and numbers valid, and the ``--``
    that starts the command. Anything else (help, abbreviations, errors) goes to argparse.
    """
    values: dict[str, Any] = {"verbose": False, "command": "run"}
    i = 0
    while i < len(argv) and argv[i] in ("-v", "--verbose"):
        values["verbose"] = True
        i += 1
    if i >= len(argv) or argv[i] != "run":
        return None
    i += 1
    for flag, kwargs in _RUN_OPTIONS.items():
        default = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
        values[flag[2:].replace("-", "_")] = list(default) if isinstance(default, list) else default
    while i < len(argv) and argv[i] != "--":
        flag, eq, value = argv[i].partition("=")
        spec = _RUN_OPTIONS.get(flag)
        if spec is None:
            return None
        dest = flag[2:].replace("-", "_")
        if spec.get("action") == "store_true":
            if eq:
                return None
            values[dest] = True
            i += 1
            continue
        if not eq:
            i += 1
            if i >= len(argv):
                return None
            value = argv[i]
        if value.startswith("-") or ("choices" in spec and value not in spec["choices"]):
            return None
        if "type" in spec:
            try:
                parsed: Any = spec["type"](value)
            except ValueError:
                return None
        else:
            parsed = value
        if spec.get("action") == "append":
            values[dest].append(parsed)
        else:
            values[dest] = parsed
        i += 1
    if i >= len(argv):
        return None  # no "--": argparse finds the command, or says what is missing
    values["cmd"] = list(argv[i:])
    return _RunArgs(**values)


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CarbonpipeError(f"--label {pair!r} must be KEY=VALUE")
        out[key] = value
    return out


def _checked_settings(args: argparse.Namespace) -> Settings:
    """Resolve and check what the tracker will be built from, so bad input stops the run early."""
    from carbonpipe._checks import check_attempt, normalize_provider, parse_store_uri
    from carbonpipe.config import resolve_settings

    settings = resolve_settings(
        config_file=args.config,
        project=args.project,
        experiment=args.experiment,
        store=args.store,
        pipeline=args.pipeline,
        team=args.team,
        run_id=args.run_id,
        tracking_mode=args.tracking_mode,
    )
    parse_store_uri(settings.store)
    if args.provider is not None:
        normalize_provider(args.provider, name="--provider")
    check_attempt(args.attempt, name="--attempt")
    _labels(args.label)
    return settings


def _tracker(args: argparse.Namespace) -> CarbonTracker:
    from carbonpipe.tracker import CarbonTracker

    budget = None
    if args.budget_scope is not None:
        from carbonpipe.budget import Budget

        budget = Budget(
            scope=args.budget_scope,
            period=args.budget_period,
            limit_kg_co2e=args.budget_kg,
            on_exceed=args.on_exceed,
        )
    return CarbonTracker(
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
    if (args.budget_kg is None) != (args.budget_scope is None):
        print("carbonpipe run: --budget-scope and --budget-kg go together", file=sys.stderr)
        return 2
    step = args.step or os.path.basename(cmd[0])
    settings = _checked_settings(args)
    if args.budget_scope is not None or settings.budgets:
        return _run_gated(args, cmd, step)  # the gate decides before the command may start

    # Nothing can stop this step: start it now, set tracking up while it runs.
    from carbonpipe import _counters

    cgroup_file = _counters.resolve_share(settings.meter_mode, "auto")[1]
    counters = _counters.read_counters(cgroup_file, rapl=True)
    child = _Child.spawn(cmd)
    if child.exit_code is not None:
        return child.exit_code
    child.forward_signals()
    _configure_logging(args.verbose)
    tracker = handle = None
    try:
        tracker = _tracker(args)
        handle = tracker._start_tracking_at(step, counters, attempt=args.attempt)
    except Exception as exc:  # the command is running: it goes on, untracked
        print(
            f"carbonpipe: tracking could not start ({exc}); {step} runs untracked", file=sys.stderr
        )
    code, status = child.wait(
        while_running=None if tracker is None else lambda: tracker._warm_stop_path(summary=True)
    )
    if tracker is not None and handle is not None:
        _report(args, tracker, handle, status)
    return code


def _run_gated(args: argparse.Namespace, cmd: list[str], step: str) -> int:
    tracker = _tracker(args)
    try:
        handle = tracker.start_tracking(step, attempt=args.attempt)
    except BudgetExceeded as exc:
        if exc.on_exceed == "skip":
            print(f"carbonpipe: skipped {step}: {exc}", file=sys.stderr)
            return 0
        print(f"carbonpipe: {step} not started: {exc}", file=sys.stderr)
        return EXIT_BUDGET_EXCEEDED
    child = _Child.spawn(cmd)
    if child.exit_code is not None:
        code, status = child.exit_code, "failed"
    else:
        child.forward_signals()
        code, status = child.wait(while_running=lambda: tracker._warm_stop_path(summary=True))
    _report(args, tracker, handle, status)
    return code


def _report(args: argparse.Namespace, tracker: CarbonTracker, handle: _Step, status: str) -> None:
    try:
        metrics = tracker._finish(handle, status)
        print(metrics.summary_line(), file=sys.stderr)
        if args.json or args.metrics_json:
            import json

            if args.json:
                print(json.dumps(metrics.to_dict(), sort_keys=True), file=sys.stderr)
            if args.metrics_json:
                with open(args.metrics_json, "w") as fh:
                    json.dump(metrics.to_dict(), fh, indent=2, sort_keys=True)
    except Exception as exc:  # the command's exit code stands, whatever tracking did
        print(
            f"carbonpipe: tracking failed after the step ({exc!r}); exit code kept", file=sys.stderr
        )


class _Child:
    """The command, started with ``posix_spawn`` before anything heavy is imported.

    The forwarded signals are blocked from just before the spawn until :meth:`forward_signals`
    has its handlers in place, so one sent meanwhile reaches the command instead of killing the
    wrapper. The command gets the wrapper's signal mask and default SIGPIPE/SIGXFSZ, as
    ``subprocess`` gives it.
    """

    def __init__(
        self, pid: int, mask: Any, *, exit_code: int | None = None, popen: Any = None
    ) -> None:
        self.pid = pid
        self.exit_code = exit_code  # set when the command could not be started
        self._mask = mask
        self._popen = popen
        self._previous: dict[int, Any] = {}

    @classmethod
    def spawn(cls, cmd: list[str]) -> _Child:
        # ``signal`` imports enum (~5 ms in a fresh process); its C core is already loaded.
        core: Any = __import__("_signal")
        if not hasattr(os, "posix_spawnp") or not hasattr(core, "pthread_sigmask"):
            return cls._spawn_subprocess(cmd)  # Windows
        forwarded = [getattr(core, n) for n in _FORWARDED_SIGNALS if hasattr(core, n)]
        mask = core.pthread_sigmask(core.SIG_BLOCK, forwarded)
        default = [getattr(core, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(core, n)]
        try:
            pid = os.posix_spawnp(cmd[0], cmd, os.environ, setsigmask=mask, setsigdef=default)
        except OSError as exc:
            core.pthread_sigmask(core.SIG_SETMASK, mask)
            return cls._not_started(cmd, exc)
        return cls(pid, mask)

    @classmethod
    def _spawn_subprocess(cls, cmd: list[str]) -> _Child:
        import subprocess

        try:
            popen = subprocess.Popen(cmd)
        except OSError as exc:
            return cls._not_started(cmd, exc)
        return cls(popen.pid, None, popen=popen)

    @classmethod
    def _not_started(cls, cmd: list[str], exc: OSError) -> _Child:
        if isinstance(exc, FileNotFoundError):
            print(f"carbonpipe run: command not found: {cmd[0]}", file=sys.stderr)
            return cls(0, None, exit_code=127)
        print(f"carbonpipe run: cannot execute {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return cls(0, None, exit_code=126)

    def forward_signals(self) -> None:
        """Send the wrapper's SIGINT, SIGTERM, ... on to the command from now on."""
        import contextlib
        import signal

        def forward(signum: int, _frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(self.pid, signum)

        for name in _FORWARDED_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, forward)
        if self._mask is not None:  # what came meanwhile goes on now
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def wait(self, *, while_running: Callable[[], None] | None = None) -> tuple[int, str]:
        """Wait for the command; return its exit code (128+N for signal N) and the step status."""
        import contextlib
        import signal

        try:
            if while_running is not None:
                with contextlib.suppress(Exception):  # never in the way of the command
                    while_running()
            if self._popen is not None:
                rc = self._popen.wait()
            else:  # retried after each forwarded signal (PEP 475)
                rc = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        if rc < 0:
            return 128 - rc, "killed"
        return rc, "succeeded" if rc == 0 else "failed"


def _configure_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


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
    argv = list(sys.argv[1:] if argv is None else argv)
    fast = _scan_run(argv)  # a plain ``run``: the command starts before argparse is even loaded
    if fast is not None:
        return _dispatch(cmd_run, fast)
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    handler = _COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.error(f"unknown command {args.command}")
    return _dispatch(handler, args)


def _dispatch(handler: Callable[[Any], int], args: argparse.Namespace) -> int:
    try:
        return int(handler(args))
    except (CarbonpipeError, ValueError, TypeError) as exc:
        print(f"carbonpipe {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
