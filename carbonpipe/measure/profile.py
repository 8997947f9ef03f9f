"""A step's energy over time: per-interval energy from the sidecar's cumulative samples.

The sidecar notes CodeCarbon's cumulative energy (CPU + GPU + RAM, the machine's) after every
measurement, every ``measure_power_secs``: ``(perf_counter, kWh so far)``. :func:`from_samples`
turns them into the step's profile, a tuple of ``(start offset s, kWh)`` intervals over the
step's window ``[0, duration]``, each interval lasting until the next one starts (the last until
``duration``). The profile's shape is the measured one; its energy is scaled to the step's own
total (process mode's shares, the window's edges), so the intervals sum to it. At most
``max_points`` intervals: beyond that, neighbouring intervals are merged (boundaries dropped),
which keeps the total. :func:`thin` bounds the samples the sidecar keeps in memory the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MAX_POINTS", "MAX_SAMPLES", "from_samples", "thin"]

MAX_POINTS = 200
MAX_SAMPLES = 1024


def thin(samples: list[tuple[float, float]], limit: int = MAX_SAMPLES) -> None:
    """Drop every other cumulative sample (keeping the last) once there are more than ``limit``.

    Cumulative samples lose no energy when one is dropped: its interval merges with the next.
    """
    if len(samples) > limit:
        last = samples[-1]
        kept = samples[::2]
        if kept[-1] is not last:
            kept.append(last)
        samples[:] = kept


def from_samples(
    samples: Sequence[Sequence[float]],
    window_start: float,
    duration_s: float,
    total_kwh: float,
    *,
    max_points: int = MAX_POINTS,
) -> tuple[tuple[float, float], ...]:
    """The step's ``(start offset s, kWh)`` intervals summing to ``total_kwh`` (see the module).

    ``samples`` are ``(clock, cumulative kWh)`` on the clock ``window_start`` is on. Without
    usable samples the profile is one interval: the whole step at its mean power.
    """
    duration = duration_s if math.isfinite(duration_s) and duration_s > 0 else 0.0
    total = total_kwh if math.isfinite(total_kwh) and total_kwh > 0 else 0.0
    bounds: list[tuple[float, float]] = [(0.0, 0.0)]  # (offset, cumulative) at each boundary
    for clock, cumulative in sorted((float(s[0]), float(s[1])) for s in samples if len(s) >= 2):
        if not (math.isfinite(clock) and math.isfinite(cumulative)):
            continue
        offset = min(max(clock - window_start, 0.0), duration)
        level = max(cumulative, bounds[-1][1])  # cumulative energy never goes down
        if offset > bounds[-1][0]:
            bounds.append((offset, level))
        else:
            bounds[-1] = (bounds[-1][0], level)  # same instant: the later reading wins
    last_level = bounds[-1][1]
    if bounds[-1][0] < duration:
        bounds.append((duration, last_level))
    elif len(bounds) == 1:
        return ((0.0, total),)
    bounds = _keep(bounds, max_points + 1)
    if last_level <= 0:  # nothing measured per interval: the mean power over the window
        levels = [b[0] / duration if duration > 0 else 0.0 for b in bounds]
        last_level = levels[-1] or 1.0
    else:
        levels = [b[1] for b in bounds]
    out: list[tuple[float, float]] = []
    spent = 0.0
    for i in range(1, len(bounds)):
        if i == len(bounds) - 1:
            energy = max(total - spent, 0.0)
        else:
            energy = total * (levels[i] - levels[i - 1]) / last_level
        spent += energy
        out.append((bounds[i - 1][0], energy))
    return tuple(out)


def _keep(bounds: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` boundaries, evenly spread, always the first and the last."""
    if len(bounds) <= limit:
        return bounds
    n = len(bounds) - 1
    picks = sorted({round(i * n / (limit - 1)) for i in range(limit)})
    return [bounds[i] for i in picks]
