"""A process-mode step's share of the machine: pure arithmetic, no I/O.

Process mode measures what machine mode measures (the machine's CPU and RAM energy over the
step's window, with CodeCarbon's machine-wide power model) and charges the step a share of it:

* CPU: the step's CPU seconds over the machine's busy CPU seconds in the same window (``/proc/stat``
  jiffies, the way CodeCarbon's load meter counts them), capped at 1. Without ``/proc/stat`` the
  machine's capacity over the window (wall time x CPU count) stands in for its busy time.
* RAM: the time-weighted mean, over the samples taken in the window, of the step's resident memory
  over the machine's used memory, each sample capped at 1.

So a step is never charged more than the machine used in the same window, and steps whose CPU time
is disjoint (concurrent steps in one container) are charged shares that sum to at most 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def stat_busy_total(stat: Sequence[int]) -> tuple[int, int]:
    """Return (busy, total) ticks of a ``/proc/stat`` ``cpu`` line, as CodeCarbon counts them."""
    padded = tuple(stat) + (0,) * max(0, 10 - len(stat))
    user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice = padded[:10]
    # Guest time is already inside user and nice time.
    total = sum(padded[:10]) - guest - guest_nice
    return total - idle - iowait, total


def busy_seconds(
    start: Sequence[int] | None, end: Sequence[int] | None, tick_hz: float
) -> float | None:
    """Return the machine's busy CPU seconds between two ``/proc/stat`` readings, if known."""
    if not start or not end or tick_hz <= 0:
        return None
    busy = stat_busy_total(end)[0] - stat_busy_total(start)[0]
    return max(busy, 0) / tick_hz


def fraction(part: float, whole: float | None) -> float:
    """Return ``part / whole`` within [0, 1]; all of it when something ran but no whole was seen."""
    if not part > 0:  # also NaN
        return 0.0
    if whole is None or not whole > 0 or not math.isfinite(whole):
        return 1.0
    return min(part / whole, 1.0)


def cpu_share(step_cpu_s: float, busy_s: float | None, *, window_s: float, cpus: int) -> float:
    """The step's share of the machine's CPU energy over a window of ``window_s`` seconds.

    ``busy_s`` is the machine's busy CPU time over the window; when unknown, its capacity
    (``window_s x cpus``) stands in, which charges the step less rather than more.
    """
    whole = busy_s if busy_s is not None else window_s * max(cpus, 1)
    return fraction(step_cpu_s, whole)


def ram_share(rss_bytes: float, used_bytes: float | None) -> float:
    """The step's share of the machine's RAM energy at one sample."""
    return fraction(rss_bytes, used_bytes)


class TimeWeightedMean:
    """The mean of values each held over the interval that ends when it is sampled.

    CodeCarbon's RAM energy is a power sampled at each measurement times the interval since the
    previous one: each value here weighs the same interval.
    """

    def __init__(self, start_s: float) -> None:
        self._start = start_s
        self._last = start_s
        self._area = 0.0
        self._latest: float | None = None

    def add(self, at_s: float, value: float) -> None:
        """Record ``value`` as held since the previous sample (or the window's start) until ``at_s``."""
        if at_s > self._last:
            self._area += value * (at_s - self._last)
            self._last = at_s
        self._latest = value

    @property
    def mean(self) -> float | None:
        """The mean so far; the only value when no time has passed; None before any sample."""
        span = self._last - self._start
        if span > 0:
            return self._area / span
        return self._latest


@dataclass(frozen=True)
class Shares:
    """The step's shares of the machine's CPU and RAM energy; None where unknown."""

    cpu: float | None
    ram: float | None


def apportion(energy: Mapping[str, float], shares: Shares) -> dict[str, float]:
    """Charge the step its shares of the machine's energy (GPUs are charged whole)."""
    charged = dict(energy)
    for part, share in (("cpu", shares.cpu), ("ram", shares.ram)):
        if share is not None and part in charged:
            charged[part] = charged[part] * min(max(share, 0.0), 1.0)
    return charged


class StepShares:
    """The step's shares, from samples the sidecar takes over the window (see :mod:`.steptree`).

    Args:
        start_s: The window's start (``time.perf_counter()`` of the step's t0).
        start_stat: ``/proc/stat``'s ``cpu`` line at t0, or None.
        tick_hz: Clock ticks per second of ``/proc/stat``.
        cpus: The machine's CPU count.
    """

    def __init__(
        self, start_s: float, start_stat: Sequence[int] | None, tick_hz: float, cpus: int
    ) -> None:
        self._start_s = start_s
        self._start_stat = tuple(start_stat) if start_stat else None
        self._tick_hz = tick_hz
        self._cpus = cpus
        self._step_cpu_s = 0.0
        self._stat: tuple[int, ...] | None = None
        self._at_s = start_s
        self._ram = TimeWeightedMean(start_s)

    def add(
        self,
        at_s: float,
        *,
        step_cpu_s: float,
        stat: Sequence[int] | None,
        rss_bytes: float | None,
        used_bytes: float | None,
    ) -> None:
        """Record one sample: the step's CPU seconds since t0, /proc/stat, its RSS, used memory."""
        # Cumulative: a daemonised child that exits takes its CPU time out of the tree's sum.
        self._step_cpu_s = max(self._step_cpu_s, step_cpu_s)
        self._stat = tuple(stat) if stat else None
        self._at_s = max(self._at_s, at_s)
        if rss_bytes is not None:
            self._ram.add(at_s, ram_share(rss_bytes, used_bytes))

    @property
    def step_cpu_s(self) -> float:
        return self._step_cpu_s

    def shares(self) -> Shares:
        """The shares over the window so far (from t0 to the latest sample)."""
        busy = busy_seconds(self._start_stat, self._stat, self._tick_hz)
        cpu = cpu_share(
            self._step_cpu_s, busy, window_s=self._at_s - self._start_s, cpus=self._cpus
        )
        return Shares(cpu=cpu, ram=self._ram.mean)
