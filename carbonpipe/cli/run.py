"""``carbonpipe run [options] -- CMD ARGS...``: run any command as a tracked step.

Without a budget to gate on, the wrapper checks the input, reads the step's energy counters
and starts the command before it imports anything else (argparse, logging, CodeCarbon's
sidecar, the store); the measured window opens at those counters, and everything else is set
up while the command runs. Signals are forwarded to the command, whose exit code is ours.
"""

from __future__ import annotations

import os
import sys

from carbonpipe._checks import check_identity
from carbonpipe.cli.console import configure_logging
from carbonpipe.cli.options import _RUN_OPTIONS
from carbonpipe.cli.units import apply_units, open_units_file, option_units
from carbonpipe.errors import BudgetExceeded, CarbonpipeError, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from carbonpipe.config import Settings
    from carbonpipe.step import _Step
    from carbonpipe.tracker import CarbonTracker
# -- run ------------------------------------------------------------------------------------
if TYPE_CHECKING:
    from argparse import Namespace as _RunArgs  # what it stands in for
else:

    class _RunArgs:
        """What argparse returns for a plain ``carbonpipe run`` line (see :func:`_scan_run`)."""

        def __init__(self, **values: Any) -> None:
            self.__dict__.update(values)


EXIT_BUDGET_EXCEEDED = 3
_FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def scan_run(argv: Sequence[str]) -> _RunArgs | None:
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


# How each identity setting is given on the command line, to name it in an error.
_IDENTITY_OPTIONS = {
    "project": "--project",
    "experiment": "--experiment",
    "pipeline": "--pipeline",
    "team": "--team",
    "run_id": "--run-id",
    "labels": "--label",
}


def _checked_settings(args: argparse.Namespace) -> Settings:
    """Resolve and check what the tracker will be built from, so bad input stops the run early."""
    from carbonpipe._checks import check_attempt, check_identity_settings
    from carbonpipe.config import resolve_settings
    from carbonpipe.location.validate import check_given_location
    from carbonpipe.stores.uri import parse_store_uri

    settings = resolve_settings(
        config_file=args.config,
        project=args.project,
        experiment=args.experiment,
        store=args.store,
        pipeline=args.pipeline,
        team=args.team,
        run_id=args.run_id,
        tracking_mode=args.tracking_mode,
        instance_type=args.instance_type,
    )
    parse_store_uri(settings.store)
    settings.check_intensity_source()  # a file:PATH source is read now, before the command starts
    check_given_location(
        (args.provider, args.region, args.country), ("--provider", "--region", "--country")
    )
    check_attempt(args.attempt, name="--attempt")
    check_identity_settings(settings, _IDENTITY_OPTIONS, _labels(args.label))
    option_units(args)  # --units and --unit are checked before the command starts
    _check_budget_options(args, settings)
    return settings


_BUDGET_TUNING = (
    ("--budget-estimate-kg", "budget_estimate_kg", "default_step_estimate_kg"),
    ("--budget-when-unavailable", "budget_when_unavailable", "when_unavailable"),
    ("--budget-gate-timeout-s", "budget_gate_timeout_s", "gate_timeout_s"),
    ("--budget-basis", "budget_basis", "basis"),
)


def _check_budget_options(args: argparse.Namespace, settings: Settings) -> None:
    """Refuse a budget option that has no budget to apply to, or a value out of range."""
    import math

    given = [flag for flag, dest, _ in _BUDGET_TUNING if getattr(args, dest) is not None]
    if given and args.budget_scope is None and not settings.budgets:
        raise ConfigError(
            f"{given[0]}: no budget gates this step; add --budget-scope and --budget-kg, "
            "or budgets: to carbon.yaml"
        )
    estimate = args.budget_estimate_kg
    if estimate is not None and not (math.isfinite(estimate) and estimate >= 0):
        raise ConfigError(f"--budget-estimate-kg: must be a finite kg CO2e >= 0, got {estimate}")
    timeout = args.budget_gate_timeout_s
    if timeout is not None:
        from carbonpipe.budgets.budget import MAX_GATE_TIMEOUT_S

        if not (math.isfinite(timeout) and 0 < timeout <= MAX_GATE_TIMEOUT_S):
            raise ConfigError(
                f"--budget-gate-timeout-s: must be > 0 and <= {MAX_GATE_TIMEOUT_S:g} seconds, "
                f"got {timeout}"
            )


def _budget_tuning(args: argparse.Namespace) -> dict[str, Any]:
    """The Budget fields the --budget-estimate-kg/-when-unavailable/-gate-timeout-s options set."""
    return {
        field: getattr(args, dest)
        for _, dest, field in _BUDGET_TUNING
        if getattr(args, dest) is not None
    }


def _tracker(args: argparse.Namespace) -> CarbonTracker:
    from carbonpipe.tracker import CarbonTracker

    budget = None
    if args.budget_scope is not None:
        from carbonpipe.budgets.budget import Budget

        budget = Budget(
            scope=args.budget_scope,
            period=args.budget_period,
            limit_kg_co2e=args.budget_kg,
            on_exceed=args.on_exceed,
            **_budget_tuning(args),
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
        instance_type=args.instance_type,
    )
    if tracker.budget is not None:
        # As the tracker estimates (baseline, last run, default), but a strict budget that
        # could only reserve 0 refuses, naming where the estimate comes from.
        option = "--budget-estimate-kg KG"
        if budget is None:  # carbon.yaml's budget gates the step; the options tune it
            from dataclasses import replace

            tracker.budget = replace(tracker.budget, **_budget_tuning(args))
            option += ", or default_step_estimate_kg in its carbon.yaml budgets entry"
        tracker._gate_estimate_option = option
    return tracker


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
    check_identity("--step" if args.step else "the step name (the command's; or give --step)", step)
    shift = None
    if args.shift_within is not None or args.expected_duration is not None:
        from carbonpipe.cli import shift as _shift  # waits for a cleaner grid, then starts

        shift = _shift.plan(args, settings, step)
        stopped = _shift.wait(shift, step)
        if stopped is not None:
            return stopped
    if args.budget_scope is not None or settings.budgets:
        return _run_gated(args, cmd, step, shift)  # the gate decides before the command starts

    # Nothing can stop this step: start it now, set tracking up while it runs.
    from carbonpipe.measure import counters as _counters

    cgroup_file = _counters.resolve_share(settings.meter_mode, "auto")[1]
    counters = _counters.read_counters(cgroup_file, rapl=True)
    units_file = open_units_file()  # $CARBONPIPE_UNITS_FILE: the command may write its units
    child = _Child.spawn(cmd)
    if child.exit_code is not None:
        apply_units(args, None, units_file)
        return child.exit_code
    child.forward_signals()
    configure_logging(args.verbose)
    tracker = handle = None
    try:
        tracker = _tracker(args)
        handle = tracker._start_tracking_at(step, counters, attempt=args.attempt)
        handle.scheduling = shift
    except Exception as exc:  # the command is running: it goes on, untracked
        from carbonpipe.stores.redact import redact

        print(
            redact(f"carbonpipe: tracking could not start ({exc}); {step} runs untracked"),
            file=sys.stderr,
        )
    code, status = child.wait(
        while_running=None if tracker is None else lambda: tracker._warm_stop_path(summary=True),
        keep=lambda: _sidecar_of(handle),
    )
    apply_units(args, handle, units_file)
    if tracker is not None and handle is not None:
        _report(args, tracker, handle, status)
    return code


def _run_gated(args: argparse.Namespace, cmd: list[str], step: str, shift: Any = None) -> int:
    tracker = _tracker(args)
    try:
        handle = tracker.start_tracking(step, attempt=args.attempt)
        handle.scheduling = shift
    except BudgetExceeded as exc:
        if exc.on_exceed == "skip":
            print(f"carbonpipe: skipped {step}: {exc}", file=sys.stderr)
            return 0
        print(f"carbonpipe: {step} not started: {exc}", file=sys.stderr)
        return EXIT_BUDGET_EXCEEDED
    units_file = open_units_file()
    child = _Child.spawn(cmd)
    if child.exit_code is not None:
        code, status = child.exit_code, "failed"
    else:
        child.forward_signals()
        code, status = child.wait(
            while_running=lambda: tracker._warm_stop_path(summary=True),
            keep=lambda: _sidecar_of(handle),
        )
    apply_units(args, handle, units_file)
    _report(args, tracker, handle, status)
    return code


def _report(args: argparse.Namespace, tracker: CarbonTracker, handle: _Step, status: str) -> None:
    try:
        metrics = tracker._finish(handle, status)
        print(metrics.summary_line(), file=sys.stderr)
        if args.json or args.metrics_json:
            import json

            if args.json:
                print(
                    json.dumps(metrics.to_dict(), sort_keys=True, allow_nan=False), file=sys.stderr
                )
            if args.metrics_json:
                with open(args.metrics_json, "w") as fh:
                    json.dump(metrics.to_dict(), fh, indent=2, sort_keys=True, allow_nan=False)
        if args.record_json and metrics.record is not None:
            with open(args.record_json, "wb") as fh:
                fh.write(metrics.record.to_json())
    except Exception as exc:  # the command's exit code stands, whatever tracking did
        from carbonpipe.stores.redact import redact

        print(
            redact(f"carbonpipe: tracking failed after the step ({exc!r}); exit code kept"),
            file=sys.stderr,
        )


def _spawn(cmd: list[str], mask: Any, default: list[int]) -> int:
    """Start the command: on Linux tied to the wrapper's life (see :mod:`carbonpipe.cli.lifeline`)."""
    if sys.platform.startswith("linux"):
        from carbonpipe.cli.lifeline import spawn_tied

        return spawn_tied(cmd, sigmask=mask, sigdefault=default)
    return os.posix_spawnp(cmd[0], cmd, os.environ, setsigmask=mask, setsigdef=default)


def _sidecar_of(handle: _Step | None) -> list[int]:
    """The step's measuring sidecar, which its meter waits for (never reaped as an orphan)."""
    meter = None if handle is None else handle.meter
    pid = None if meter is None else meter.sidecar_pid
    return [] if pid is None else [pid]


class _Child:
    """The command, started with ``posix_spawn`` (on Linux: fork, a parent-death signal, exec)
    before anything heavy is imported.

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
            pid = _spawn(cmd, mask, default)
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

    def wait(
        self,
        *,
        while_running: Callable[[], None] | None = None,
        keep: Callable[[], list[int]] = list,
    ) -> tuple[int, str]:
        """Wait for the command; return its exit code (128+N for signal N) and the step status.

        As PID 1 the wrapper also reaps orphans meanwhile, but neither the command nor the
        children ``keep()`` names (see :mod:`carbonpipe.cli.lifeline`).
        """
        import contextlib
        import signal

        reaper: Any = contextlib.nullcontext()
        if os.getpid() == 1 and self._popen is None:
            from carbonpipe.cli.lifeline import OrphanReaper

            reaper = OrphanReaper(lambda: [self.pid, *keep()])
        try:
            with reaper:
                if while_running is not None:
                    with contextlib.suppress(Exception):  # never in the way of the command
                        while_running()
                if self._popen is not None:
                    rc = self._popen.wait()
                else:  # retried after each forwarded signal and SIGCHLD (PEP 475)
                    rc = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        if rc < 0:
            return 128 - rc, "killed"
        return rc, "succeeded" if rc == 0 else "failed"
