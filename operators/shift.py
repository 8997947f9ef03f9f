"""Start Airflow tasks when the grid is cleaner, within a deadline, waiting in the triggerer.

``CarbonTrackedOperator(shift_within="6h", expected_duration="1h")`` plans the task's start
in the worker (:func:`carbonpipe.intensity.planner.plan_start` with the forecast of
``intensity_source``/``intensity_zone``, default ``CARBONPIPE_INTENSITY_SOURCE`` and
``CARBONPIPE_INTENSITY_ZONE``); if the plan is to wait, the task defers to
:class:`~carbonpipe.operators.triggers.CarbonShiftTrigger`, which holds no worker slot,
re-plans as the forecast updates and fires at the planned start, never past the deadline.
The task then runs as a tracked step whose record carries ``scheduling``.

:class:`CarbonShiftOperator` is the same wait as a task of its own, to put before any task;
it returns the plan (XCom ``return_value``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from carbonpipe.intensity.scheduling import ShiftedStart

# The trigger fires at the deadline at the latest; Airflow's own timeout leaves it this margin.
_TIMEOUT_MARGIN_S = 300.0


def check_shift(shift_within: Any, expected_duration: Any) -> tuple[float | None, float | None]:
    """The two durations in seconds (``ConfigError`` naming the argument when one is bad)."""
    from carbonpipe.errors import ConfigError
    from carbonpipe.intensity.planner import parse_duration

    within = None if shift_within is None else parse_duration(shift_within, option="shift_within")
    duration = None
    if expected_duration is not None:
        duration = parse_duration(expected_duration, option="expected_duration")
        if duration <= 0:
            raise ConfigError("expected_duration: must be > 0")
        if within is None:
            raise ConfigError("expected_duration: goes with shift_within")
    return within, duration


def plan_or_defer(
    task: BaseOperator,
    *,
    shift_within_s: float,
    expected_duration_s: float,
    source: str | None,
    zone: str | None,
    replan_interval_s: float,
    method_name: str,
) -> ShiftedStart:
    """Plan the start; defer to the trigger if it waits (raises ``TaskDeferred``), else return
    the plan to run with at once."""
    from carbonpipe.intensity.scheduling import configured_spec, plan_configured
    from carbonpipe.operators.triggers import CarbonShiftTrigger

    spec, zone = configured_spec(source, zone)
    shift = plan_configured(
        expected_duration_s=expected_duration_s,
        shift_within_s=shift_within_s,
        source=spec,
        zone=zone,
    )
    plan = shift.plan
    task.log.info("carbonpipe: %s", plan.reason)
    if not plan.shifted:
        return shift
    left = (plan.deadline - datetime.now(timezone.utc)).total_seconds()
    task.defer(
        trigger=CarbonShiftTrigger(
            plan=plan.to_dict(), source=spec, zone=zone, replan_interval_s=replan_interval_s
        ),
        method_name=method_name,
        timeout=timedelta(seconds=max(left, 0.0) + _TIMEOUT_MARGIN_S),
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


def resumed(
    event: dict[str, Any] | None, source: str | None, zone: str | None, log: Any
) -> ShiftedStart:
    """The shifted start the trigger's event carries (on an error event: start now, say why)."""
    from carbonpipe.intensity.planner import StartPlan, plan_start
    from carbonpipe.intensity.scheduling import ShiftedStart, configured_source, configured_spec

    spec, zone = configured_spec(source, zone)
    try:
        opened = configured_source(spec, zone)[0]
    except Exception:
        opened = None
    if event and event.get("status") == "success":
        return ShiftedStart(StartPlan.from_dict(event["plan"]), opened)
    message = (event or {}).get("message", "no event")
    log.warning("carbonpipe: the shift trigger failed (%s): starting now", message)
    plan = plan_start(
        None, zone, now=datetime.now(timezone.utc), expected_duration_s=1.0, shift_within_s=0.0
    )
    from dataclasses import replace

    return ShiftedStart(replace(plan, reason=f"the shift trigger failed ({message})"), opened)


class CarbonShiftOperator(BaseOperator):
    """Wait, in the triggerer, until the grid is cleanest within ``shift_within``; return the plan.

    :param shift_within: how long the start may be put off: ``"6h"``, ``"15m"``, seconds or a
        ``timedelta``.
    :param expected_duration: how long the downstream work runs (the forecast is averaged over it).
    :param intensity_source: the time-series source spec (default: ``CARBONPIPE_INTENSITY_SOURCE``).
    :param intensity_zone: the grid zone (default: ``CARBONPIPE_INTENSITY_ZONE``).
    :param replan_interval_s: seconds between two readings of the forecast while waiting.
    """

    template_fields: Sequence[str] = ("intensity_source", "intensity_zone")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        shift_within: Any,
        expected_duration: Any,
        intensity_source: str | None = None,
        intensity_zone: str | None = None,
        replan_interval_s: float = 900.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shift_within_s, self.expected_duration_s = check_shift(shift_within, expected_duration)
        if self.expected_duration_s is None:
            from carbonpipe.errors import ConfigError

            raise ConfigError("expected_duration: CarbonShiftOperator needs it (e.g. '1h')")
        self.intensity_source = intensity_source
        self.intensity_zone = intensity_zone
        self.replan_interval_s = replan_interval_s

    def execute(self, context: Context) -> Any:
        assert self.shift_within_s is not None and self.expected_duration_s is not None
        shift = plan_or_defer(
            self,
            shift_within_s=self.shift_within_s,
            expected_duration_s=self.expected_duration_s,
            source=self.intensity_source,
            zone=self.intensity_zone,
            replan_interval_s=self.replan_interval_s,
            method_name="execute_complete",
        )
        return shift.plan.to_dict()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        shift = resumed(event, self.intensity_source, self.intensity_zone, self.log)
        return shift.plan.to_dict()
