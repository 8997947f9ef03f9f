"""Grid carbon intensity: what a kWh emitted where (and, later, when) a step ran.

``base`` (the :class:`IntensitySource` interface and :class:`Intensity`, which carries its
kind, source and vintage), ``table`` (the sourced table in ``data/intensity.csv``: cloud region,
else country, else world average; regional recommendations).

May import: ``errors`` and the standard library.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "Intensity": "carbonpipe.intensity.base",
    "IntensitySource": "carbonpipe.intensity.base",
    "CountryInfo": "carbonpipe.intensity.table",
    "IntensityTable": "carbonpipe.intensity.table",
    "Recommendation": "carbonpipe.intensity.table",
    "RegionInfo": "carbonpipe.intensity.table",
    "country_for_region": "carbonpipe.intensity.table",
    "format_g_per_kwh": "carbonpipe.intensity.table",
    "load_table": "carbonpipe.intensity.table",
    "lookup_intensity": "carbonpipe.intensity.table",
    "regional_recommendations": "carbonpipe.intensity.table",
    "regions": "carbonpipe.intensity.table",
}

__all__ = [
    "CountryInfo",
    "Intensity",
    "IntensitySource",
    "IntensityTable",
    "Recommendation",
    "RegionInfo",
    "country_for_region",
    "format_g_per_kwh",
    "load_table",
    "lookup_intensity",
    "regional_recommendations",
    "regions",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.intensity.base import Intensity, IntensitySource
    from carbonpipe.intensity.table import (
        CountryInfo,
        IntensityTable,
        Recommendation,
        RegionInfo,
        country_for_region,
        format_g_per_kwh,
        load_table,
        lookup_intensity,
        regional_recommendations,
        regions,
    )
