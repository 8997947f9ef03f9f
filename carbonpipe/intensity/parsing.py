"""What every live source does with an API's answer: times, numbers and a clean series.

Bodies come from other machines: anything not of the documented shape raises
:class:`Malformed` (a ``ValueError``), which each source turns into
:class:`~carbonpipe.errors.IntensityUnavailable`. Times are read as ISO-8601 (``Z`` or an
offset; a time without one is UTC) and kept timezone-aware in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from carbonpipe.intensity.base import IntensityPoint, IntensitySeries

__all__ = [
    "MAX_G_PER_KWH",
    "Malformed",
    "field",
    "iso_z",
    "make_series",
    "number",
    "parse_time",
    "utc",
]

# No grid emits more than this (coal plants ~1,100 g/kWh; WattTime MOERs stay under ~2,500
# lbs/MWh): a bigger figure is a malformed answer, not a dirty grid.
MAX_G_PER_KWH = 5000.0


class Malformed(ValueError):
    """The body is not of the API's documented shape."""


def utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is taken to be UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def iso_z(when: datetime) -> str:
    """``2024-05-01T12:00:00Z``: the form every API here accepts in a query."""
    return utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, what: str) -> datetime:
    """An ISO-8601 timestamp from a body, in UTC."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise Malformed(f"{what} is not a timestamp")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        raise Malformed(f"{what} is not an ISO-8601 timestamp") from None


def number(value: Any, what: str, *, scale: float = 1.0) -> float:
    """A finite, non-negative intensity (times ``scale``) within :data:`MAX_G_PER_KWH`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{what} is not a number")
    result = float(value) * scale
    if not math.isfinite(result) or not 0 <= result <= MAX_G_PER_KWH:
        raise Malformed(f"{what} is out of range")
    return result


def field(obj: Any, name: str, what: str) -> Any:
    """``obj[name]`` where ``obj`` must be a JSON object holding ``name``."""
    if not isinstance(obj, Mapping):
        raise Malformed(f"{what} is not an object")
    if name not in obj:
        raise Malformed(f"{what} has no {name!r}")
    return obj[name]


def make_series(
    points: Iterable[tuple[datetime, datetime, float]],
    *,
    source_name: str,
    zone: str,
    signal: str,
    resolution_s: float,
    vintage: str,
    forecast: bool,
    start: datetime | None = None,
    end: datetime | None = None,
) -> IntensitySeries:
    """Sort, drop overlaps and keep the points that meet ``[start, end)``; none left is malformed."""
    lo = utc(start) if start is not None else None
    hi = utc(end) if end is not None else None
    kept: list[IntensityPoint] = []
    for s, e, value in sorted(points, key=lambda p: p[0]):
        if e <= s:
            raise Malformed("a point ends before it starts")
        if (lo is not None and e <= lo) or (hi is not None and s >= hi):
            continue
        if kept and s < kept[-1].end:
            continue  # overlaps the previous point: the first published one stays
        kept.append(IntensityPoint(s, e, value))
    if not kept:
        raise Malformed("no point covers the requested time")
    return IntensitySeries(
        points=tuple(kept),
        source_name=source_name,
        zone=zone,
        signal=signal,
        resolution_s=float(resolution_s),
        vintage=vintage,
        forecast=forecast,
    )


def seconds(value: float) -> timedelta:
    """``timedelta(seconds=value)``."""
    return timedelta(seconds=value)


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)
