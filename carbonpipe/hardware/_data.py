"""The hardware package's data files (``data/*.csv``), read straight from the package folder.

Plain file reads: ``importlib.resources`` would bring ``zipfile`` and its readers into every
step's stop path for files that are always unpacked on disk (a wheel installs them so).
"""

from __future__ import annotations

import csv
import functools
import os

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def rows(name: str) -> list[dict[str, str]]:
    """The rows of ``data/<name>``, a CSV whose ``#`` lines are comments."""
    with open(os.path.join(_DATA, name), encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines))


@functools.cache
def sources() -> dict[str, dict[str, str]]:
    """The sources the data files name, by key: ``{name, licence, url}``."""
    return {r["key"]: {k: r[k] for k in ("name", "licence", "url")} for r in rows("sources.csv")}


def source_name(key: str) -> str:
    """The full name of a source key (the key itself if the file lacks it)."""
    found = sources().get(key)
    return found["name"] if found else key
