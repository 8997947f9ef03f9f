"""KFP: start a step when the grid is cleaner, within a deadline.

Both the ``wait_for_clean_grid`` component (put it before any step) and
``carbon_component(shift_within=...)`` plan the start with the forecast of
``intensity_source``/``intensity_zone`` (default ``CARBONPIPE_INTENSITY_SOURCE``,
``CARBONPIPE_INTENSITY_ZONE``) and sleep in the pod until then: a pod that waits holds its
node, so put the wait before the step's heavy resources are requested (the component), or use
``shift_within`` on a step whose pod is small. No source or no forecast: it starts at once and
says why.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from carbonpipe.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from carbonpipe.intensity.scheduling import ShiftedStart
    from carbonpipe.tracker import CarbonTracker

#: The carbon_component settings of a shifted start (seconds, after step_config).
SHIFT_KEYS = ("shift_within", "expected_duration", "intensity_source", "intensity_zone")


def check_shift_settings(out: dict[str, Any]) -> None:
    """Turn ``shift_within``/``expected_duration`` into seconds, in place; refuse bad ones."""
    from carbonpipe.intensity.planner import parse_duration

    if "shift_within" in out:
        out["shift_within"] = parse_duration(out["shift_within"], option="shift_within")
    if "expected_duration" in out:
        if "shift_within" not in out:
            raise ConfigError("expected_duration: goes with shift_within")
        out["expected_duration"] = parse_duration(
            out["expected_duration"], option="expected_duration"
        )
        if out["expected_duration"] <= 0:
            raise ConfigError("expected_duration: must be > 0")


def plan_and_wait(
    *,
    shift_within_s: float,
    expected_duration_s: float,
    source: str | None = None,
    zone: str | None = None,
    step: str = "step",
) -> ShiftedStart:
    """Plan the start, say so on stderr, sleep until then; return the shifted start."""
    from carbonpipe.intensity.scheduling import plan_configured

    shift = plan_configured(
        expected_duration_s=expected_duration_s,
        shift_within_s=shift_within_s,
        source=source or None,
        zone=zone or None,
    )
    p = shift.plan
    if p.shifted:
        print(
            f"carbonpipe: {step} starts at {p.planned_start:%H:%M:%SZ}: {p.reason}", file=sys.stderr
        )
    else:
        print(f"carbonpipe: {step} starts now: {p.reason}", file=sys.stderr)
    while (left := p.planned_start.timestamp() - time.time()) > 0:
        time.sleep(min(left, 60.0))
    return shift


def shift_for_step(
    config: Mapping[str, Any], tracker: CarbonTracker, step: str
) -> ShiftedStart | None:
    """The shifted start ``carbon_component(shift_within=...)`` asks for, after waiting; None
    without ``shift_within``. The expected duration defaults to the step's last run's."""
    if config.get("shift_within") is None:
        return None
    duration = config.get("expected_duration")
    if duration is None:
        from carbonpipe.budgets.latest import last_run

        entry = last_run(tracker.store, tracker.settings.pipeline, step, datetime.now(timezone.utc))
        duration = None if entry is None else entry.duration_s
        if not duration:
            raise ConfigError(
                f"expected_duration: {step} has no earlier run to take its duration from; "
                "give carbon_component(expected_duration=...) (e.g. '1h')"
            )
    return plan_and_wait(
        shift_within_s=float(config["shift_within"]),
        expected_duration_s=float(duration),
        source=config.get("intensity_source"),
        zone=config.get("intensity_zone"),
        step=step,
    )


def run_wait_for_clean_grid(
    *,
    shift_within: str,
    expected_duration: str,
    intensity_source: str,
    intensity_zone: str,
    metrics: Any = None,
) -> str:
    """The ``wait_for_clean_grid`` component's body: wait; log the plan as Metrics; return it
    as JSON."""
    import json

    from carbonpipe._optional import one_line_when_missing
    from carbonpipe.intensity.planner import parse_duration

    one_line_when_missing()
    within = parse_duration(shift_within, option="shift_within")
    duration = parse_duration(expected_duration, option="expected_duration")
    if duration <= 0:
        raise ConfigError("expected_duration: must be > 0")
    shift = plan_and_wait(
        shift_within_s=within,
        expected_duration_s=duration,
        source=intensity_source,
        zone=intensity_zone,
        step="wait_for_clean_grid",
    )
    p = shift.plan
    figures = {
        "shifted": 1.0 if p.shifted else 0.0,
        "wait_s": p.wait_s,
        "waited_s": max(0.0, time.time() - p.decided_at.timestamp()),
        "intensity_now_g_per_kwh": p.intensity_now,
        "intensity_planned_g_per_kwh": p.intensity_planned,
        "saving_percent": 100.0 * p.saving_fraction,
    }
    for name, value in figures.items():  # what the KFP UI shows (no null: a missing figure)
        if metrics is not None and value is not None:
            metrics.log_metric(name, float(value))
    return json.dumps(p.to_dict(), sort_keys=True, allow_nan=False)
