"""Grid carbon intensity: what a kWh emitted where (and, later, when) a step ran.

``base`` (the :class:`IntensitySource` interface and :class:`Intensity`, which carries its
kind, source and vintage), ``table`` (the sourced table in ``data/intensity.csv``: cloud region,
else country, else world average; regional recommendations). Live time-series sources, one module
each (``electricitymaps``, ``watttime``, ``carbonaware``, ``uk``, ``file``), are named in
``registry``; ``zones`` maps cloud regions to grid zones, ``cache`` keeps their answers on disk,
``http`` is their deadline-bound client.

May import: ``errors``, ``_safejson``, ``_private`` and the standard library.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "CachedSource": "carbonpipe.intensity.cache",
    "IntensityCache": "carbonpipe.intensity.cache",
    "open_cached_source": "carbonpipe.intensity.cache",
    "zone_for": "carbonpipe.intensity.zones",
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
    "CachedSource",
    "CountryInfo",
    "Intensity",
    "IntensityCache",
    "IntensitySource",
    "IntensityTable",
    "Recommendation",
    "RegionInfo",
    "country_for_region",
    "format_g_per_kwh",
    "load_table",
    "lookup_intensity",
    "open_cached_source",
    "regional_recommendations",
    "regions",
    "zone_for",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.intensity.base import Intensity, IntensitySource
    from carbonpipe.intensity.cache import CachedSource, IntensityCache, open_cached_source
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
    from carbonpipe.intensity.zones import zone_for
