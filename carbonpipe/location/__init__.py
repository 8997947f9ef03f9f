"""Where a step runs: cloud provider, region and country, within 60 ms and without raising.

``detect`` (the precedence: arguments > env > metadata > defaults > world), ``imds`` (DMI and
the GCP, AWS and Azure metadata servers, probed under one deadline), ``http`` (the probes'
HTTP/1.1 on raw sockets), ``providers`` (provider names and shared constants, import-free).

May import: ``errors``, ``intensity`` (a region's country) and the standard library.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "Location": "carbonpipe.location.detect",
    "clear_cache": "carbonpipe.location.detect",
    "detect_location": "carbonpipe.location.detect",
    "normalize_country": "carbonpipe.location.detect",
    "DETECTED_BY": "carbonpipe.location.providers",
    "PROVIDERS": "carbonpipe.location.providers",
    "normalize_provider": "carbonpipe.location.providers",
}

__all__ = [
    "DETECTED_BY",
    "Location",
    "PROVIDERS",
    "clear_cache",
    "detect_location",
    "normalize_country",
    "normalize_provider",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.location.detect import Location, clear_cache, detect_location, normalize_country
    from carbonpipe.location.providers import DETECTED_BY, PROVIDERS, normalize_provider
