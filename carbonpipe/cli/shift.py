"""``carbonpipe run --shift-within 6h [--expected-duration 1h] -- CMD``: start when the grid is
cleaner, within a deadline.

The wrapper plans the start with the configured time-series source
(``CARBONPIPE_INTENSITY_SOURCE``, ``CARBONPIPE_INTENSITY_ZONE``; see
:mod:`carbonpipe.intensity.scheduling`): the start, no later than now + ``--shift-within``,
whose forecast run of ``--expected-duration`` (default: the step's last recorded duration) is
cleanest. It says on stderr when the command will start and why, sleeps until then, and runs
the command as usual; the step's record carries ``scheduling``. No source, no forecast, no
zone: the command starts at once, and ``scheduling.reason`` says why.

While it waits there is no command yet: SIGINT, SIGTERM, SIGHUP or SIGQUIT end the wrapper
with 128 + the signal's number (130, 143, ...) without starting the command and without a
record (nothing ran); SIGUSR1/SIGUSR2 are ignored until the command runs. Only this path
imports the planner: a run without ``--shift-within`` loads nothing more before its command.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from carbonpipe.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from carbonpipe.config import Settings
    from carbonpipe.intensity.scheduling import ShiftedStart

# Signals that end the wait (the command is not started) and those ignored meanwhile.
_STOPPING = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
_IGNORED = ("SIGUSR1", "SIGUSR2")


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def shifted(args: argparse.Namespace) -> bool:
    """Whether the run asks for a shifted start."""
    return args.shift_within is not None or args.expected_duration is not None


def plan(args: argparse.Namespace, settings: Settings, step: str) -> ShiftedStart:
    """Check the options and plan the start; ``ConfigError`` naming the option when it cannot."""
    from carbonpipe.intensity.planner import parse_duration
    from carbonpipe.intensity.scheduling import plan_configured

    if args.shift_within is None:
        raise ConfigError("--expected-duration: goes with --shift-within DURATION")
    within = parse_duration(args.shift_within, option="--shift-within")
    if args.expected_duration is not None:
        duration = parse_duration(args.expected_duration, option="--expected-duration")
        if duration <= 0:
            raise ConfigError("--expected-duration: must be > 0")
    else:
        last = _last_duration(settings, step)
        if last is None:
            raise ConfigError(
                f"--expected-duration: {step} has no earlier run to take its duration from; "
                "give --expected-duration DURATION (e.g. 1h)"
            )
        duration = last
    spec, zone = _source_and_zone(args, settings)
    return plan_configured(
        expected_duration_s=duration,
        shift_within_s=within,
        source=spec,
        zone=zone,
        options=settings.intensity,
        timeout_s=float(settings.intensity.get("timeout_s", 5.0)),
        now=datetime.now(timezone.utc),
    )


def _source_and_zone(args: argparse.Namespace, settings: Settings) -> tuple[str | None, str | None]:
    """The source (``CARBONPIPE_INTENSITY_SOURCE`` or carbon.yaml ``intensity.source``) and the
    zone (``CARBONPIPE_INTENSITY_ZONE``, ``intensity.zone``, else the zone of the cloud region
    given with --provider/--region/--country; the location is not probed for)."""
    import contextlib
    import os

    from carbonpipe.intensity.registry import check_source_name
    from carbonpipe.intensity.timed import ZONE_ENV, resolve_zone

    spec = settings.intensity_source or None
    if spec is None or check_source_name(spec)[0] == "table":
        return None, None
    zone = os.environ.get(ZONE_ENV) or settings.intensity.get("zone") or None
    with contextlib.suppress(Exception):  # no zone: the plan starts at once and says so
        zone = resolve_zone(
            check_source_name(spec)[0], args.provider, args.region, args.country, zone
        )
    return spec, zone


def _last_duration(settings: Settings, step: str) -> float | None:
    """The step's last recorded duration (its pipeline's latest charge), or None."""
    try:
        from carbonpipe.budgets.latest import last_run
        from carbonpipe.stores.opener import open_store

        store = open_store(settings.store, timeout_s=settings.store_timeout_s)
        entry = last_run(store, settings.pipeline, step, datetime.now(timezone.utc))
    except Exception:  # no store to read: the option is needed
        return None
    duration = None if entry is None else entry.duration_s
    return duration if duration is not None and duration > 0 else None


def wait(shift: ShiftedStart, step: str) -> int | None:
    """Say when ``step`` starts and sleep until then; the exit code if a signal ended the wait."""
    import signal

    p = shift.plan
    if not p.shifted:
        print(f"carbonpipe: {step} starts now: {p.reason}", file=sys.stderr)
        return None

    def stop(signum: int, _frame: Any) -> None:
        raise _Stopped(signum)

    previous = {}
    for name in _STOPPING + _IGNORED:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, stop if name in _STOPPING else signal.SIG_IGN)
    try:
        print(
            f"carbonpipe: {step} starts at {p.planned_start:%Y-%m-%dT%H:%M:%SZ} "
            f"(in {p.wait_s:.0f}s, deadline {p.deadline:%H:%M:%SZ}): {p.reason}",
            file=sys.stderr,
            flush=True,
        )
        target = p.planned_start.timestamp()
        while (left := target - time.time()) > 0:
            time.sleep(min(left, 60.0))
    except _Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        print(
            f"carbonpipe: {step} not started: {name} while waiting for a cleaner grid",
            file=sys.stderr,
        )
        return 128 + stopped.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None
