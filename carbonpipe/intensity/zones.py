"""Which grid zone a cloud region draws from: ``data/zones.csv`` (sources and vintage inside).

Each live source names places its own way: Electricity Maps by zone (``BE``,
``US-MIDA-PJM``), WattTime by region (``PJM_DC``), the Carbon Aware SDK by location name (Azure
region names out of the box), the GB API by ``GB`` (or a region / postcode), and the file source
by Electricity Maps zone. :func:`zone_for` answers for one source; a region without a row of its
own falls back to its country's zone where the country is a single Electricity Maps zone.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

__all__ = ["DATA_FILE", "ZoneRow", "load_zones", "zone_for"]

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "zones.csv")
_loaded: dict[str, dict[tuple[str, str], ZoneRow]] = {}


@dataclass(frozen=True)
class ZoneRow:
    """One row of ``zones.csv``: a cloud region (or a country) and its zones."""

    provider: str
    region: str
    em_zone: str | None
    watttime_region: str | None
    source: str
    vintage: str
    note: str


def load_zones(path: str = DATA_FILE) -> dict[tuple[str, str], ZoneRow]:
    """(provider, region) -> row; countries are ``("country", ISO3)``. Read once per process."""
    rows = _loaded.get(path)
    if rows is None:
        with open(path, encoding="utf-8", newline="") as f:
            lines = [line for line in f if not line.startswith("#")]
        rows = {}
        for r in csv.DictReader(lines):
            row = ZoneRow(
                provider=r["provider"].strip().lower(),
                region=r["region"].strip(),
                em_zone=r["em_zone"].strip() or None,
                watttime_region=r["watttime_region"].strip() or None,
                source=r["source"].strip(),
                vintage=r["vintage"].strip(),
                note=r["note"].strip(),
            )
            key = (row.provider, row.region if row.provider != "country" else row.region.upper())
            if key in rows:
                raise ValueError(f"{path}: {key} is listed twice")
            rows[key] = row
        _loaded[path] = rows
    return rows


def zone_for(
    provider: str | None,
    region: str | None,
    country_iso: str | None = None,
    *,
    source: str = "electricitymaps",
    path: str = DATA_FILE,
) -> str | None:
    """The place name ``source`` knows this location by, or None where there is none.

    ``source``: ``electricitymaps`` or ``file`` (an Electricity Maps zone), ``watttime`` (a
    WattTime region), ``carbon-aware-sdk`` (an Azure region's own name, else the Electricity Maps
    zone), ``uk`` (``GB`` for a location in Great Britain). ``country_iso`` (ISO 3166-1 alpha-3)
    is the fallback for a region without a zone.
    """
    rows = load_zones(path)
    prov = (provider or "").strip().lower()
    reg = (region or "").strip()
    row = rows.get((prov, reg)) if prov and reg else None
    country = rows.get(("country", (country_iso or "").strip().upper()))
    em_zone = (row.em_zone if row else None) or (country.em_zone if country else None)
    if source in ("electricitymaps", "file"):
        return em_zone
    if source == "watttime":
        return row.watttime_region if row else None
    if source == "carbon-aware-sdk":
        return reg if prov == "azure" and reg else em_zone
    if source == "uk":
        return "GB" if em_zone == "GB" else None
    raise ValueError(f"unknown intensity source {source!r}")
