"""Revisions: a record priced with the annual table, repriced later with a time series.

Records are immutable. ``carbonpipe reprice --store URI --period P --source SPEC`` prices again,
interval by interval (:mod:`carbonpipe.intensity.timed`), every record of the period that was
priced with the annual table (``intensity_source.kind`` ``cloud_region``, ``country`` or
``world``: no time-series source was configured, or it failed at the step's stop), and writes
one revision document per record and source, created only if absent::

    revisions/v1/date=<record's date>/<record_id>.<source>-<zone>.json

A rerun finds them there and writes nothing (idempotent). The ESG aggregation reads a period's
revisions (one listing per month) and uses a revised record's repriced local emissions in
place of its own; the report's ``revisions`` block says how many figures were revised and from
which source, and those records' ``intensity_sources`` row is of kind ``revised``. Where one
record has revisions from several sources, the latest (``revised_at``, then key) is used.

Revision document (``carbonpipe.revision/1``): ``record_id``, ``record_key``, ``date``,
``revised_at``, ``source`` {name, zone, signal, resolution_s, points_used, vintage},
``local_ng`` (the record's local energy x PUE repriced, integer ng), ``emissions_kg_co2e``
(that plus the record's remote emissions), ``intensity_g_per_kwh`` (effective), and
``original`` {emissions_kg_co2e, intensity_g_per_kwh, intensity_source}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import ObjectNotFound, PreconditionFailed
from carbonpipe.record import Record, parse_utc, utc_iso
from carbonpipe.units import kg_to_ng, ng_to_kg

if TYPE_CHECKING:
    import pyarrow as pa

    from carbonpipe.esg.period import Period
    from carbonpipe.stores.base import Store

__all__ = [
    "REVISION_SCHEMA",
    "REVISIONS_PREFIX",
    "RepriceResult",
    "apply_revisions",
    "load_revisions",
    "reprice",
    "revision_key",
]

REVISION_SCHEMA = "carbonpipe.revision/1"
REVISIONS_PREFIX = "revisions/v1"
TABLE_KINDS = ("cloud_region", "country", "world")
REVISED_KIND = "revised"
_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")


def revision_key(date: str, record_id: str, source: str, zone: str) -> str:
    """Where the revision of ``record_id`` by ``source`` for ``zone`` lives."""
    slug = _SLUG.sub("_", f"{source}-{zone}")[:80]
    return f"{REVISIONS_PREFIX}/date={date}/{record_id}.{slug}.json"


@dataclass
class RepriceResult:
    """What a reprice did, by count; ``failures`` says why records could not be repriced."""

    records: int = 0
    eligible: int = 0
    written: int = 0
    already: int = 0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "records": self.records,
            "eligible": self.eligible,
            "written": self.written,
            "already_revised": self.already,
            "failed": len(self.failures),
            "failures": self.failures[:20],
        }


def reprice(
    store: Store,
    period: str | Period,
    spec: str,
    *,
    zone: str | None = None,
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    now: datetime | None = None,
) -> RepriceResult:
    """Write a revision for every table-priced record of ``period`` that ``spec`` can price.

    Raises ``ConfigError`` for a source that cannot be opened (an unknown name, ``table``).
    """
    from carbonpipe.errors import ConfigError
    from carbonpipe.esg.period import parse_period
    from carbonpipe.esg.rows import _fetch, _list_day
    from carbonpipe.intensity.cache import open_cached_source
    from carbonpipe.intensity.registry import check_source_name

    name, _ = check_source_name(spec, field="--source")
    if name == "table":
        raise ConfigError(
            "--source: the table cannot revise table-priced records; name a time series"
        )
    source = open_cached_source(spec, options, env)
    per = parse_period(period)
    stamp = utc_iso(now or datetime.now(timezone.utc))
    result = RepriceResult()
    for day in (d.isoformat() for d in per.days()):
        keys, _ = _list_day(store, day)
        for key in keys:
            record = _fetch(store, key)
            if record is None:
                continue
            result.records += 1
            if record.intensity_source.get("kind") not in TABLE_KINDS:
                continue
            result.eligible += 1
            _reprice_one(store, record, key, name, source, zone, options, timeout_s, stamp, result)
    return result


def _reprice_one(
    store: Store,
    record: Record,
    key: str,
    name: str,
    source: Any,
    zone: str | None,
    options: Mapping[str, Any] | None,
    timeout_s: float,
    stamp: str,
    result: RepriceResult,
) -> None:
    from carbonpipe.errors import IntensityUnavailable
    from carbonpipe.intensity.timed import (
        fetch_history,
        price_profile,
        record_profile,
        resolve_zone,
        series_source_dict,
    )

    loc = record.location
    wanted = resolve_zone(
        name,
        loc.get("provider"),
        loc.get("region"),
        loc.get("country_iso"),
        zone or (options or {}).get("zone"),
    )
    if not wanted:
        result.failures.append(f"{record.record_id}: no grid zone for its location (give --zone)")
        return
    e = record.energy_kwh
    local_kwh = float(e["cpu"]) + float(e["gpu"]) + float(e["ram"])
    profile = record.energy_profile or record_profile(
        [(0.0, local_kwh)], record.duration_s, local_kwh
    )
    started = parse_utc(record.started_at)
    ended = max(parse_utc(record.ended_at), started)
    target = revision_key(record.date, record.record_id, name, wanted)
    if store.exists(target):
        result.already += 1
        return
    try:
        series = fetch_history(source, wanted, started, ended, timeout_s=timeout_s)
        priced = price_profile(profile, started, record.duration_s, series, record.pue)
    except IntensityUnavailable as exc:
        result.failures.append(f"{record.record_id}: {exc}")
        return
    remote_ng = sum(kg_to_ng(float(r.get("emissions_kg_co2e") or 0.0)) for r in record.remote)
    document = {
        "schema": REVISION_SCHEMA,
        "record_id": record.record_id,
        "record_key": key,
        "date": record.date,
        "revised_at": stamp,
        "source": {
            k: v for k, v in series_source_dict(series, priced.points_used).items() if k != "kind"
        },
        "local_ng": priced.emissions_ng,
        "remote_ng": remote_ng,
        "emissions_kg_co2e": ng_to_kg(priced.emissions_ng + remote_ng),
        "intensity_g_per_kwh": priced.intensity_g_per_kwh,
        "original": {
            "emissions_kg_co2e": record.emissions_kg_co2e,
            "intensity_g_per_kwh": record.intensity_g_per_kwh,
            "intensity_source": dict(record.intensity_source),
        },
    }
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    try:
        store.put_if_absent(target, body.encode())
    except PreconditionFailed:
        result.already += 1
        return
    result.written += 1


def load_revisions(store: Store, days: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The revisions of ``days``: ``{day: {record_id: document}}`` (one listing per month)."""
    wanted = set(days)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for month in sorted({d[:7] for d in wanted}):
        for key in store.list(f"{REVISIONS_PREFIX}/date={month}"):
            day = key[len(REVISIONS_PREFIX) + len("/date=") :][:10]
            if day not in wanted or not key.endswith(".json"):
                continue
            document = _read(store, key)
            if document is None:
                continue
            held = out.setdefault(day, {})
            current = held.get(document["record_id"])
            rank = (str(document.get("revised_at", "")), key)
            if current is None or rank > current["_rank"]:
                held[document["record_id"]] = {**document, "_rank": rank}
    return out


def _read(store: Store, key: str) -> dict[str, Any] | None:
    try:
        document = json.loads(store.get(key).data)
    except (ObjectNotFound, ValueError):
        return None
    if not (
        isinstance(document, dict)
        and document.get("schema") == REVISION_SCHEMA
        and isinstance(document.get("record_id"), str)
        and isinstance(document.get("local_ng"), int)
        and isinstance(document.get("source"), dict)
        and isinstance(document.get("intensity_g_per_kwh"), (int, float))
    ):
        return None
    return document


def apply_revisions(table: pa.Table, revisions: Mapping[str, Mapping[str, Any]] | None) -> pa.Table:
    """``table`` (a day's rows) with each revised record's emissions, intensity and source."""
    if not revisions or table.num_rows == 0:
        return table
    import pyarrow as pa

    ids = table["record_id"].to_pylist()
    if not any(i in revisions for i in ids):
        return table
    columns: dict[str, list[Any]] = {
        name: table[name].to_pylist()
        for name in (
            "local_ng",
            "remote_ng",
            "emissions_ng",
            "emissions_kg_co2e",
            "intensity_g_per_kwh",
            "source_name",
            "source_vintage",
            "source_kind",
        )
    }
    for row, record_id in enumerate(ids):
        rev = revisions.get(record_id)
        if rev is None:
            continue
        src = rev["source"]
        local = int(rev["local_ng"])
        total = local + int(columns["remote_ng"][row] or 0)
        columns["local_ng"][row] = local
        columns["emissions_ng"][row] = total
        columns["emissions_kg_co2e"][row] = ng_to_kg(total)
        columns["intensity_g_per_kwh"][row] = float(rev["intensity_g_per_kwh"])
        columns["source_name"][row] = f"{src.get('name')}:{src.get('zone')}"
        columns["source_vintage"][row] = str(src.get("vintage") or "")
        columns["source_kind"][row] = REVISED_KIND
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        kind = table.schema.field(index).type
        if pa.types.is_dictionary(kind):
            array = pa.array(values, pa.string()).dictionary_encode().cast(kind)
        else:
            array = pa.array(values, kind)
        table = table.set_column(index, table.schema.field(index), array)
    return table


def revisions_block(agg: Any) -> dict[str, Any]:
    """The report's ``revisions``: how many figures were revised, and from which sources."""
    sources = []
    revised = 0
    for (kind, name, vintage), m in agg.breakdown("source_kind", "source_name", "source_vintage"):
        if kind != REVISED_KIND:
            continue
        revised += m.records
        sources.append(
            {
                "source": name,
                "vintage": vintage,
                "records": m.records,
                "emissions_kg_co2e": m.emissions_kg_co2e,
            }
        )
    return {"revised_records": revised, "sources": sources}
