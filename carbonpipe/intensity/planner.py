"""When to start a step so that it runs on the cleanest grid it can reach before its deadline.

:func:`plan_start` reads a forecast for a grid zone and returns the start, between now and
``now + shift_within_s``, that minimises the forecast's mean intensity over the step's expected
run ``[start, start + expected_duration_s)``. The forecast is a step function (one value per
point), so that mean is piecewise linear in the start and its minimum lies where the window's
start or end meets a point boundary: those starts, and now, are the only candidates. A
candidate's window must lie wholly inside the forecast; starting now is scored on what the
forecast covers of it. Ties go to the earliest start: a step never waits for nothing.

With no source, no forecast (the source failed: timeout, auth, 5xx, ...) or a forecast that
does not reach now, the plan is to start now, and its ``reason`` says why. The plan never
starts after the deadline, and its expected intensity is never above starting now's.

Pure: no store, no network of its own (the source given does its own I/O).

May import: ``intensity.base``, ``errors`` and the standard library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from carbonpipe.errors import ConfigError
from carbonpipe.intensity.base import IntensitySeries, overlap_mean

__all__ = ["StartPlan", "parse_duration", "plan_start", "window_mean"]

# A later start must beat an earlier one by more than this (relative), so float noise never
# makes a step wait.
_TIE = 1e-9


@dataclass(frozen=True)
class StartPlan:
    """A decision on when to start a step, and what it is based on.

    Attributes:
        decided_at: when the plan was made (UTC).
        planned_start: when to start (UTC); ``decided_at`` when the plan is to start now.
        wait_s: ``planned_start - decided_at`` in seconds (>= 0).
        deadline: the latest start allowed (``decided_at + shift_within_s``).
        expected_duration_s: the run the intensities are averaged over.
        intensity_now: the forecast's mean intensity (g/kWh) over a run started now, or None.
        intensity_planned: the same for a run started at ``planned_start``, or None.
        saving_fraction: ``1 - intensity_planned / intensity_now`` (0 when starting now).
        source: the forecast's source (``file``, ``electricitymaps``, ...), or None.
        zone: the grid zone, or None.
        signal: ``average`` or ``marginal`` (WattTime's MOER), or None.
        vintage: the forecast's vintage (when it was made), or "".
        reason: one sentence on why this start.
    """

    decided_at: datetime
    planned_start: datetime
    wait_s: float
    deadline: datetime
    expected_duration_s: float
    intensity_now: float | None
    intensity_planned: float | None
    saving_fraction: float
    source: str | None
    zone: str | None
    signal: str | None
    vintage: str
    reason: str

    @property
    def shifted(self) -> bool:
        """Whether the plan waits at all."""
        return self.wait_s > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO-8601 UTC strings (for XCom, a trigger's kwargs, Metrics)."""
        out = asdict(self)
        for name in ("decided_at", "planned_start", "deadline"):
            out[name] = _iso(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartPlan:
        """The plan :meth:`to_dict` wrote."""
        fields = dict(data)
        for name in ("decided_at", "planned_start", "deadline"):
            fields[name] = _parse(fields[name])
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def window_mean(series: IntensitySeries, start: datetime, end: datetime) -> tuple[float, float]:
    """The time-weighted mean intensity of ``series`` over ``[start, end)`` and the seconds of
    that window it covers; ``(nan, 0.0)`` when it covers none of it.

    Exact: overlaps in whole microseconds and each intensity as its binary fraction, so a
    window of one constant intensity has exactly that mean, whatever its edges."""
    found = overlap_mean(series.points, start, end)
    if found is None:
        return math.nan, 0.0
    total, common, covered, _ = found
    return total / (common * covered), covered / 1_000_000


def plan_start(
    source: Any,
    zone: str | None,
    *,
    now: datetime,
    expected_duration_s: float,
    shift_within_s: float,
    timeout_s: float = 5.0,
) -> StartPlan:
    """The start in ``[now, now + shift_within_s]`` with the cleanest forecast run.

    Args:
        source: a :class:`~carbonpipe.intensity.base.TimeSeriesSource` (its ``forecast`` is
            read), an :class:`IntensitySeries` already fetched, or None (no source configured).
        zone: the grid zone to plan for (None: start now, no zone).
        now: the decision time (timezone-aware).
        expected_duration_s: how long the step is expected to run (> 0).
        shift_within_s: how long the start may be put off (>= 0).
        timeout_s: what the source may take to answer.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if not (math.isfinite(expected_duration_s) and expected_duration_s > 0):
        raise ValueError(f"expected_duration_s must be > 0, got {expected_duration_s!r}")
    if not (math.isfinite(shift_within_s) and shift_within_s >= 0):
        raise ValueError(f"shift_within_s must be >= 0, got {shift_within_s!r}")
    now = now.astimezone(timezone.utc)
    duration = timedelta(seconds=expected_duration_s)
    deadline = now + timedelta(seconds=shift_within_s)

    def at_once(reason: str, series: IntensitySeries | None = None, now_i: float | None = None):
        return StartPlan(
            decided_at=now,
            planned_start=now,
            wait_s=0.0,
            deadline=deadline,
            expected_duration_s=float(expected_duration_s),
            intensity_now=now_i,
            intensity_planned=now_i,
            saving_fraction=0.0,
            source=None if series is None else series.source_name,
            zone=zone if series is None else series.zone,
            signal=None if series is None else series.signal,
            vintage="" if series is None else series.vintage,
            reason=reason,
        )

    if source is None:
        return at_once("no time-series intensity source is configured: started at once")
    if not zone:
        return at_once("no grid zone is configured: started at once")
    if isinstance(source, IntensitySeries):
        series = source
    else:
        try:
            series = source.forecast(zone, now, deadline + duration, timeout_s=timeout_s)
        except Exception as exc:  # IntensityUnavailable, or a source's own bug: never in the way
            name = getattr(source, "name", type(source).__name__)
            return at_once(f"no forecast from {name} for {zone} ({exc}): started at once")
    now_mean, now_covered = window_mean(series, now, now + duration)
    if now_covered <= 0:
        return at_once(f"the forecast for {zone} does not cover now: started at once", series)
    best_start, best_mean = now, now_mean
    for start in _candidates(series, now, deadline, duration):
        mean, covered = window_mean(series, start, start + duration)
        if covered < duration.total_seconds() * (1 - 1e-9):  # (timedelta: whole microseconds)
            continue  # the forecast ends (or has a gap) within this run: no basis to wait
        if mean < best_mean - _TIE * max(abs(best_mean), 1.0):
            best_start, best_mean = start, mean
    wait_s = (best_start - now).total_seconds()
    saving = 0.0 if now_mean <= 0 else max(0.0, 1.0 - best_mean / now_mean)
    if wait_s <= 0:
        reason = f"now is the cleanest start in the next {_span(shift_within_s)} ({series.zone})"
    else:
        reason = (
            f"{series.zone}'s forecast is {saving:.0%} cleaner at {_iso(best_start)} than now "
            f"({best_mean:.0f} vs {now_mean:.0f} g/kWh over {_span(expected_duration_s)})"
        )
    return StartPlan(
        decided_at=now,
        planned_start=best_start,
        wait_s=max(0.0, wait_s),
        deadline=deadline,
        expected_duration_s=float(expected_duration_s),
        intensity_now=now_mean,
        intensity_planned=best_mean,
        saving_fraction=saving,
        source=series.source_name,
        zone=series.zone,
        signal=series.signal,
        vintage=series.vintage,
        reason=reason,
    )


def _candidates(
    series: IntensitySeries, now: datetime, deadline: datetime, duration: timedelta
) -> list[datetime]:
    """Starts in ``(now, deadline]`` where the run's start or end meets a point boundary."""
    found: set[datetime] = set()
    for p in series.points:
        for boundary in (p.start, p.end):
            for start in (boundary, boundary - duration):
                if now < start <= deadline:
                    found.add(start)
    return sorted(found)


def _span(seconds: float) -> str:
    """``90s``, ``15m``, ``6h``, ``1h30m``: how a duration option is written."""
    s = int(round(seconds))
    if s < 60 or s % 60:
        return f"{seconds:g}s"
    h, m = divmod(s // 60, 60)
    return f"{h}h{m}m" if h and m else (f"{h}h" if h else f"{m}m")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, option: str) -> float:
    """Seconds from ``90s``, ``15m``, ``6h``, ``1d``, plain seconds (``30``, ``2.5``) or a
    :class:`~datetime.timedelta`; a ``ConfigError`` naming ``option`` otherwise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        scale = _UNITS.get(text[-1:]) if text else None
        number = text[:-1] if scale is not None else text
        try:
            seconds = float(number) * (scale or 1.0)
        except ValueError:
            seconds = math.nan
        if not number:
            seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(
            f"{option}: expected a duration such as 90s, 15m, 6h or seconds (>= 0), got {value!r}"
        )
    return seconds
