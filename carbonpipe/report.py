"""Read records back from a store and summarise them (``carbonpipe report``).

Listing is partition-pruned: a date range lists only the ``date=`` folders it covers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from carbonpipe.errors import InvalidRecord
from carbonpipe.record import (
    LEGACY_RECORDS_PREFIX,
    RECORDS_PREFIX,
    Record,
    record_day_prefixes,
    record_id_of_key,
)
from carbonpipe.stores.base import Store
from carbonpipe.units import kg_to_ng, kwh_to_nwh, ng_to_kg, nwh_to_kwh

log = logging.getLogger("carbonpipe")


def record_keys(
    store: Store,
    *,
    start: date | None = None,
    end: date | None = None,
    pipeline: str | None = None,
) -> Iterator[str]:
    """Yield the keys of records ended between ``start`` and ``end`` (inclusive, UTC dates).

    Both layouts are listed, ``records/v2`` then ``records/v1`` (see
    :func:`carbonpipe.record.record_day_prefixes`); a record found in both (a migration under
    way) is yielded once. With ``pipeline``, the keys under its partition folders: the older,
    lossy v1 folder may hold other pipelines' records too, so read records are to be kept only
    if their ``pipeline`` matches.
    """
    if start is not None and end is not None and end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    # A store not migrated yet: its v1 keys wait (by record id) until v2 is listed.
    legacy: dict[str, str] = {}
    for key in _layout_keys(store, LEGACY_RECORDS_PREFIX, start, end, pipeline):
        legacy.setdefault(record_id_of_key(key), key)
    for key in _layout_keys(store, RECORDS_PREFIX, start, end, pipeline):
        legacy.pop(record_id_of_key(key), None)
        yield key
    yield from legacy.values()


def _layout_keys(
    store: Store, root: str, start: date | None, end: date | None, pipeline: str | None
) -> Iterator[str]:
    """The record keys of one layout (``records/v2`` or ``records/v1``) in the date range."""
    if start is None or end is None or (end - start).days > 366:
        days: list[str | None] = [None]
    else:
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    parts: list[str] = []
    if pipeline:  # the folder names of this layout, from the day's prefixes
        parts = [
            p.split("/")[-2] + "/"
            for p in record_day_prefixes("0000-00-00", pipeline)
            if p.startswith(root + "/")
        ]
    for day in days:
        base = f"{root}/" if day is None else f"{root}/date={day}/"
        for listing in [base + part for part in parts] if parts and day else [base]:
            for key in store.list(listing):
                if not key.endswith(".json"):
                    continue
                if parts and not any(f"/{part}" in key for part in parts):
                    continue
                d = key[len(root) + len("/date=") :][:10]
                if start is not None and d < start.isoformat():
                    continue
                if end is not None and d > end.isoformat():
                    continue
                yield key


def read_records(store: Store, keys: Iterable[str], *, workers: int = 16) -> Iterator[Record]:
    """Fetch and validate records in parallel; invalid ones are logged and skipped."""

    def fetch(key: str) -> Record | None:
        try:
            return Record.from_json(store.get(key).data)
        except InvalidRecord as exc:
            log.warning("carbonpipe: skipping invalid record %s: %s", key, exc)
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rec in pool.map(fetch, keys):
            if rec is not None:
                yield rec


@dataclass
class Summary:
    """Totals over a set of records, overall and per pipeline.

    Emissions and energy are summed as exact integers (ng CO2e, nWh: :mod:`carbonpipe.units`),
    so the totals are the records' sum whatever their number or order; the kg and kWh figures
    are those integers converted once.
    """

    records: int = 0
    failed: int = 0
    energy_nwh: int = 0
    emissions_ng: int = 0
    duration_s: float = 0.0
    by_pipeline: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The records' embodied share (0 for records without one), and how many records ran off
    #: the cloud with no configured PUE (priced at 1.0: no data-centre overhead counted).
    embodied_ng: int = 0
    on_premises_pue: int = 0

    @property
    def energy_kwh(self) -> float:
        """Energy of every device, local and remote."""
        return nwh_to_kwh(self.energy_nwh)

    @property
    def emissions_kg_co2e(self) -> float:
        """Emissions in kg CO2e."""
        return ng_to_kg(self.emissions_ng)

    def add(self, r: Record) -> None:
        """Fold one record into the totals."""
        nwh, ng = kwh_to_nwh(r.energy_kwh["total"]), kg_to_ng(r.emissions_kg_co2e)
        self.records += 1
        self.failed += r.status != "succeeded"
        self.energy_nwh += nwh
        self.emissions_ng += ng
        self.duration_s += r.duration_s
        self.embodied_ng += kg_to_ng(r.embodied_kg_co2e or 0.0)
        self.on_premises_pue += (r.pue_source or {}).get("kind") == "on_premises"
        p = self.by_pipeline.setdefault(
            r.pipeline, {"records": 0, "energy_nwh": 0, "emissions_ng": 0}
        )
        p["records"] += 1
        p["energy_nwh"] += nwh
        p["emissions_ng"] += ng
        p["energy_kwh"] = nwh_to_kwh(int(p["energy_nwh"]))
        p["emissions_kg_co2e"] = ng_to_kg(int(p["emissions_ng"]))

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data."""
        return {
            "records": self.records,
            "failed": self.failed,
            "energy_kwh": self.energy_kwh,
            "energy_nwh": self.energy_nwh,
            "emissions_kg_co2e": self.emissions_kg_co2e,
            "emissions_ng": self.emissions_ng,
            "duration_s": self.duration_s,
            "by_pipeline": self.by_pipeline,
            "embodied_kg_co2e": ng_to_kg(self.embodied_ng),
            "embodied_ng": self.embodied_ng,
            "total_kg_co2e": ng_to_kg(self.emissions_ng + self.embodied_ng),
            "on_premises_pue_records": self.on_premises_pue,
        }


def summarize(
    store: Store,
    *,
    start: date | None = None,
    end: date | None = None,
    pipeline: str | None = None,
) -> Summary:
    """Summarise the records of ``store`` in a date range (all of them by default)."""
    summary = Summary()
    for rec in read_records(store, record_keys(store, start=start, end=end, pipeline=pipeline)):
        if not pipeline or rec.pipeline == pipeline:
            summary.add(rec)
    return summary
