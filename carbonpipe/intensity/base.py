"""What an intensity source answers, and the one small interface every source implements.

A source turns a location (provider, region, country) into an :class:`Intensity` that says
which kind of figure it is and where it came from; the tracker takes any
:class:`IntensitySource` (issue 17 wires it into the tracker), and the
sourced table (:mod:`carbonpipe.intensity.table`) is the default. A new source (a live API, a
time series) is a new module here, not a branch in an old function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
