"""What an intensity source answers, and the one small interface every source implements.

Two shapes of answer:

* :class:`IntensitySource` turns a location (provider, region, country) into one annual
  :class:`Intensity` that says which kind of figure it is and where it came from; the sourced
  table (:mod:`carbonpipe.intensity.table`) is the default and the fallback of every other source.
* :class:`TimeSeriesSource` answers a grid *zone* (Electricity Maps' zone names: ``BE``,
  ``US-CAL-CISO``, ...) with an :class:`IntensitySeries` of timed points, past (``history``) or
  ahead (``forecast``). Live APIs and files are time-series sources; each is one module here,
  named in :mod:`carbonpipe.intensity.registry`, never a branch in an old function. A source
  raises :class:`~carbonpipe.errors.IntensityUnavailable` for any failure (timeout, auth,
  throttling, 5xx, malformed body) and the caller falls back to the table, saying so in the
  record's ``tracking_errors``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from carbonpipe.units import dyadic

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Intensity:
    """A grid carbon intensity and where it came from."""

    intensity_g_per_kwh: float
    source_name: str
    vintage: str
    kind: str  # "cloud_region" | "country" | "world"
    zone: str  # "gcp:europe-west1" | "FRA" | "WORLD"

    def to_source_dict(self) -> dict[str, str]:
        """Return the record's ``intensity_source`` block."""
        return {"name": self.source_name, "vintage": self.vintage, "kind": self.kind}


class IntensitySource(Protocol):
    """Anything that prices a location: the shape :meth:`IntensityTable.lookup` already has."""

    def lookup(
        self, provider: str | None, region: str | None, country_iso: str | None
    ) -> Intensity:
        """Resolve normalised arguments to an intensity, falling back as far as the world average."""
        ...


@dataclass(frozen=True)
class IntensityPoint:
    """The grid's intensity over ``[start, end)`` (UTC, timezone-aware)."""

    start: datetime
    end: datetime
    intensity_g_per_kwh: float


@dataclass(frozen=True)
class IntensitySeries:
    """Timed intensities of one zone from one source, sorted and non-overlapping.

    Attributes:
        points: the intervals, oldest first.
        source_name: the source (``electricitymaps``, ``watttime``, ``carbon-aware-sdk``,
            ``uk``, ``file``).
        zone: the grid zone the points are for.
        signal: ``"average"`` (location-based average intensity) or ``"marginal"`` (WattTime's
            MOER: what one more kWh would emit; never summed as if it were an average).
        resolution_s: the nominal length of one point.
        vintage: when the data was produced or fetched (ISO-8601), or the file's version.
        forecast: whether the points are a forecast rather than measured history.
    """

    points: tuple[IntensityPoint, ...]
    source_name: str
    zone: str
    signal: str = "average"
    resolution_s: float = 3600.0
    vintage: str = ""
    forecast: bool = False

    def at(self, when: datetime) -> IntensityPoint | None:
        """The point whose interval holds ``when``, or None outside the series."""
        starts = [p.start for p in self.points]
        i = bisect.bisect_right(starts, when) - 1
        if i >= 0 and self.points[i].start <= when < self.points[i].end:
            return self.points[i]
        return None


class TimeSeriesSource(Protocol):
    """A source of timed intensities for a grid zone (see the module docstring)."""

    name: str

    def history(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Measured intensities covering ``[start, end)``; raise ``IntensityUnavailable``."""
        ...

    def forecast(
        self, zone: str, start: datetime, end: datetime, *, timeout_s: float
    ) -> IntensitySeries:
        """Forecast intensities covering ``[start, end)``; raise ``IntensityUnavailable``."""
        ...


def overlap_mean(
    points: Sequence[IntensityPoint], begin: datetime, end: datetime, first: int = 0
) -> tuple[int, int, int, list[int]] | None:
    """The exact time-weighted mean intensity of ``points`` (sorted, from index ``first``) over
    ``[begin, end)``, as ``(numerator, denominator, microseconds covered, indices used)``: the
    mean is ``numerator / (denominator * covered)``. Overlaps count in whole microseconds and
    each intensity as its binary fraction, so a window within one intensity has exactly that
    mean, whatever its edges. None when no point overlaps the window."""
    weights: list[int] = []
    which: list[int] = []
    for j in range(first, len(points)):
        p = points[j]
        if p.start >= end:
            break
        overlap = (min(p.end, end) - max(p.start, begin)) // _MICROSECOND
        if overlap > 0:
            weights.append(overlap)
            which.append(j)
    if not which:
        return None
    numerators, common = dyadic([float(points[j].intensity_g_per_kwh) for j in which])
    total = sum(n * w for n, w in zip(numerators, weights, strict=True))
    return total, common, sum(weights), which
