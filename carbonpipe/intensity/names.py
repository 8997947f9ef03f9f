"""The cloud region names of ``data/intensity.csv``, read without the table's machinery.

``carbonpipe run`` checks a given region before it starts the command, where loading the full
table (``csv``, dataclasses) would delay the step; the first two columns are all that needs.
:mod:`carbonpipe.intensity.table` reads and validates the same file in full.
"""

from __future__ import annotations

import os

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "intensity.csv")
_CLOUD_PROVIDERS = ("gcp", "aws", "azure")
_read: dict[str, dict[str, str]] = {}


def region_names(path: str = DATA_FILE) -> dict[str, str]:
    """Return region -> provider for every cloud row (the providers' names never coincide)."""
    names = _read.get(path)
    if names is None:
        names = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                provider, _, rest = line.partition(",")
                if provider in _CLOUD_PROVIDERS:
                    names[rest.partition(",")[0]] = provider
        _read[path] = names
    return names
