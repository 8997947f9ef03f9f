"""A shifted start, from its plan to the ``scheduling`` block of the step's record.

:func:`configured_source` opens the time-series source and zone the configuration names
(``CARBONPIPE_INTENSITY_SOURCE``, e.g. ``file:/data/forecast.csv`` or ``electricitymaps``, and
``CARBONPIPE_INTENSITY_ZONE``, e.g. ``FR``); :class:`ShiftedStart` holds a plan and that source,
and once the step has run, :meth:`ShiftedStart.scheduling` reads the source's history over the
run and over the run it would have been had it started at once, for the record:

* ``intensity_actual``: the measured (history) mean intensity over the step's actual run, or
  the forecast's when the source has no history for it (``intensity_actual_from`` says which);
* ``intensity_if_started_at_decision``: the same over ``[decided_at, decided_at + duration)``,
  the counterfactual the ESG report's "CO2 avoided" estimate compares with.

May import: ``intensity.*``, ``errors`` and the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from carbonpipe.intensity.base import IntensitySeries
from carbonpipe.intensity.planner import StartPlan, plan_start, window_mean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from carbonpipe.record import Record

__all__ = ["ShiftedStart", "configured_source", "configured_spec", "plan_configured", "replan"]

SOURCE_ENV = "CARBONPIPE_INTENSITY_SOURCE"
ZONE_ENV = "CARBONPIPE_INTENSITY_ZONE"


def configured_spec(
    source: str | None = None, zone: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """The source spec (``file:PATH``, ``electricitymaps``, ...) and zone to plan with: the
    arguments, else ``CARBONPIPE_INTENSITY_SOURCE`` and ``CARBONPIPE_INTENSITY_ZONE``."""
    env = os.environ if env is None else env
    spec = (source or env.get(SOURCE_ENV) or "").strip() or None
    return spec, (zone or env.get(ZONE_ENV) or None)


def configured_source(
    source: str | None = None,
    zone: str | None = None,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[Any, str | None]:
    """The time-series source and zone to plan with (see :func:`configured_spec`).

    Returns ``(None, zone)`` when no source is named or it is ``table`` (no time series).
    Raises ``ConfigError`` for a source name that does not exist or cannot be opened.
    """
    from carbonpipe.intensity.cache import open_cached_source

    env = os.environ if env is None else env
    spec, zone = configured_spec(source, zone, env)
    if spec is None:
        return None, zone
    return open_cached_source(spec, options, env), zone


def replan(previous: StartPlan, source: Any, *, now: datetime, timeout_s: float = 5.0) -> StartPlan:
    """Plan again at ``now`` with a newer forecast, never past ``previous.deadline``.

    The decision time, the deadline and the intensity of starting at the first decision stay
    ``previous``'s (that is the counterfactual a shift is measured against); the start and its
    intensity are the new forecast's. A new forecast that cannot be read keeps the old plan.
    """
    from dataclasses import replace

    left = max(0.0, (previous.deadline - now).total_seconds())
    fresh = plan_start(
        source,
        previous.zone,
        now=now,
        expected_duration_s=previous.expected_duration_s,
        shift_within_s=left,
        timeout_s=timeout_s,
    )
    if fresh.intensity_planned is None:  # no forecast now: the old plan stands (or start now)
        if previous.planned_start > now:
            return previous
        fresh = replace(fresh, reason=previous.reason)
    start = max(fresh.planned_start, previous.decided_at)
    base = previous.intensity_now
    planned = fresh.intensity_planned
    saving = 0.0
    if base and planned is not None and base > 0:
        saving = max(0.0, 1.0 - planned / base)
    return replace(
        fresh,
        decided_at=previous.decided_at,
        deadline=previous.deadline,
        planned_start=start,
        wait_s=(start - previous.decided_at).total_seconds(),
        intensity_now=base,
        saving_fraction=saving,
    )


def plan_configured(
    *,
    expected_duration_s: float,
    shift_within_s: float,
    source: str | None = None,
    zone: str | None = None,
    now: datetime | None = None,
    timeout_s: float = 5.0,
    options: Mapping[str, Any] | None = None,
) -> ShiftedStart:
    """Plan a start with the configured source (see :func:`configured_source`); ``options``
    are carbon.yaml's ``intensity:`` fields."""
    try:
        opened, zone = configured_source(source, zone, None, options)
    except Exception as exc:  # a source that cannot be opened: start at once, say why
        opened, why = None, f"the intensity source could not be opened ({exc}): started at once"
        plan = plan_start(
            None,
            zone,
            now=now or datetime.now(timezone.utc),
            expected_duration_s=expected_duration_s,
            shift_within_s=shift_within_s,
        )
        from dataclasses import replace

        return ShiftedStart(replace(plan, reason=why), None)
    plan = plan_start(
        opened,
        zone,
        now=now or datetime.now(timezone.utc),
        expected_duration_s=expected_duration_s,
        shift_within_s=shift_within_s,
        timeout_s=timeout_s,
    )
    return ShiftedStart(plan, opened)


@dataclass
class ShiftedStart:
    """A plan, and the source it came from (to read the run's intensity afterwards)."""

    plan: StartPlan
    source: Any = None
    timeout_s: float = 5.0

    def apply(self, record: Record) -> Record:
        """``record`` with its ``scheduling`` block (the tracker's hook; never raises)."""
        from dataclasses import replace

        from carbonpipe.record import parse_utc

        try:
            block = self.scheduling(parse_utc(record.started_at), parse_utc(record.ended_at))
        except Exception as exc:  # a malformed time: the record goes on without it
            return replace(record, tracking_errors=[*record.tracking_errors, f"scheduling: {exc}"])
        return replace(record, scheduling=block)

    def scheduling(self, started_at: datetime, ended_at: datetime) -> dict[str, Any]:
        """The record's ``scheduling`` block for a run over ``[started_at, ended_at)``.

        Never raises: a source that cannot answer leaves the measured figures null.
        """
        p = self.plan
        actual = counterfactual = None
        actual_from = None
        run = max(ended_at - started_at, timedelta(seconds=1e-3))
        zone = p.zone
        if self.source is not None and zone:
            for kind in ("history", "forecast"):
                series = self._series(kind, zone, p.decided_at, max(ended_at, p.decided_at + run))
                if series is None:
                    continue
                mean, covered = window_mean(series, started_at, started_at + run)
                if covered > 0 and actual is None:
                    actual, actual_from = mean, kind
                    base, base_covered = window_mean(series, p.decided_at, p.decided_at + run)
                    counterfactual = base if base_covered > 0 else None
                if actual is not None:
                    break
        return {
            "decided_at": _iso(p.decided_at),
            "planned_start": _iso(p.planned_start),
            "deadline": _iso(p.deadline),
            "waited_s": max(0.0, (started_at - p.decided_at).total_seconds()),
            "expected_duration_s": float(p.expected_duration_s),
            "intensity_at_decision": p.intensity_now,
            "intensity_planned": p.intensity_planned,
            "intensity_actual": actual,
            "intensity_actual_from": actual_from,
            "intensity_if_started_at_decision": counterfactual,
            "source": {
                "name": p.source,
                "zone": p.zone,
                "signal": p.signal,
                "vintage": p.vintage,
            },
            "reason": p.reason,
        }

    def _series(
        self, kind: str, zone: str, start: datetime, end: datetime
    ) -> IntensitySeries | None:
        try:
            fetch = getattr(self.source, kind)
            series = fetch(zone, start, end, timeout_s=self.timeout_s)
        except Exception:
            return None
        return series if isinstance(series, IntensitySeries) else None


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
