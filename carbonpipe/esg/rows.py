"""Reading a day's records: the JSON objects of ``records/v1`` and the compacted Parquet part.

Records become Arrow rows with one schema (:func:`_records_table`); a day's part lists the
record ids it holds, so only JSON records it does not hold yet are fetched one by one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carbonpipe._optional import needs_extra
from carbonpipe.errors import InvalidRecord, ObjectNotFound
from carbonpipe.record import (
    LEGACY_RECORDS_PREFIX,
    Record,
    parse_utc,
    record_day_prefixes,
)
from carbonpipe.stores.base import Store, StoredObject
from carbonpipe.stores.local import LocalStore
from carbonpipe.units import exact_scale, kg_to_ng, kwh_to_nwh

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    import pyarrow as pa


COMPACT_PREFIX = "records/compact/v1"
# /2 added the exact integer columns (_INT_COLUMNS); a /1 part gets them computed when read.
# /3 types the columns for SQL engines: started_at and ended_at timestamp[us, UTC] (text in
# /1 and /2, converted when read), labels map<string, string> (null in rows of older parts).
# /4 adds _SECTION_COLUMNS, what the report's SCI and time-shifting sections read
# (carbonpipe.esg.section_rows). A part of /1 to /3 gets them null when read: its records
# contribute nothing to those two sections until `carbonpipe migrate` rewrites the part,
# rebuilding each row whose JSON record is still in the store (carbonpipe.esg.migrate).
COMPACT_SCHEMA = "carbonpipe.compact/4"
_OLD_SCHEMAS = (b"carbonpipe.compact/3", b"carbonpipe.compact/2", b"carbonpipe.compact/1")
#: The schemas whose columns SQL engines read typed (timestamps, labels): /3 and later.
SQL_TYPED_SCHEMAS = (COMPACT_SCHEMA, "carbonpipe.compact/3")
_READABLE_SCHEMAS = (COMPACT_SCHEMA.encode(), *_OLD_SCHEMAS)


# ---------------------------------------------------------------------------------------------
# The flat row: one record as the columns compaction writes and aggregation reads


_STRING_COLUMNS = (
    "record_id",
    "date",
    "project",
    "pipeline",
    "run_id",
    "step",
    "team",
    "status",
    "provider",
    "region",
    "country_iso",
    "detected_by",
    "source_name",
    "source_vintage",
    "source_kind",
    "method",
    "alerts_json",
)
_TIMESTAMP_COLUMNS = ("started_at", "ended_at")
_FLOAT_COLUMNS = (
    "duration_s",
    "energy_cpu_kwh",
    "energy_gpu_kwh",
    "energy_ram_kwh",
    "energy_remote_kwh",
    "energy_total_kwh",
    "pue",
    "intensity_g_per_kwh",
    "emissions_kg_co2e",
    "remote_emissions_kg_co2e",
)
# Exact integers (carbonpipe.units): what every sum adds. facility = (cpu + gpu + ram) x PUE,
# local = facility x grid intensity (nWh x g/kWh / 1000 = ng), remote = remote calls' CO2e.
_INT_COLUMNS = (
    "energy_cpu_nwh",
    "energy_gpu_nwh",
    "energy_ram_nwh",
    "energy_remote_nwh",
    "energy_total_nwh",
    "facility_nwh",
    "emissions_ng",
    "local_ng",
    "remote_ng",
)


# What the SCI and time-shifting sections need beyond the columns above (compact/4): the
# functional unit (name, count), the embodied share M (kg, and its block as JSON), the PUE's
# source, the scheduling block, the time-series zone of the intensity source, and the remote
# calls' reported CO2e summed as SCI sums it (unclipped, unlike remote_emissions_kg_co2e).
_SECTION_STRINGS = (
    "functional_unit",
    "source_zone",
    "pue_source_json",
    "embodied_json",
    "scheduling_json",
)
_SECTION_FLOATS = ("functional_unit_count", "embodied_kg_co2e", "remote_reported_kg_co2e")
_SECTION_COLUMNS = _SECTION_STRINGS + _SECTION_FLOATS


# Read back dictionary-encoded: a day's group-by then hashes small integers, not strings.
_DICT_COLUMNS = (
    "date",
    "project",
    "pipeline",
    "step",
    "team",
    "status",
    "provider",
    "region",
    "country_iso",
    "detected_by",
    "source_name",
    "source_vintage",
    "source_kind",
    "method",
)


def _arrow_schema(*, dictionary: bool = False) -> pa.Schema:
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    def text(name: str) -> pa.DataType:
        if dictionary and name in _DICT_COLUMNS:
            return pa.dictionary(pa.int32(), pa.string())
        return pa.string()

    return pa.schema(
        [pa.field(n, text(n)) for n in _STRING_COLUMNS]
        + [pa.field(n, pa.timestamp("us", tz="UTC")) for n in _TIMESTAMP_COLUMNS]
        + [pa.field("attempt", pa.int32())]
        + [pa.field(n, pa.float64()) for n in _FLOAT_COLUMNS]
        + [pa.field(n, pa.int64()) for n in _INT_COLUMNS]
        + [pa.field("labels", pa.map_(pa.string(), pa.string()))]
        + [pa.field(n, pa.string()) for n in _SECTION_STRINGS]
        + [pa.field(n, pa.float64()) for n in _SECTION_FLOATS]
    )


def _exact(
    cpu: float,
    gpu: float,
    ram: float,
    remote: float,
    total: float,
    pue: float,
    intensity: float,
    emissions: float,
    remote_kg: float,
) -> tuple[int, ...]:
    """The :data:`_INT_COLUMNS` of one record, from its float fields, exactly."""
    nwh = [kwh_to_nwh(v) for v in (cpu, gpu, ram, remote, total)]
    facility = exact_scale(pue, nwh[0] + nwh[1] + nwh[2])
    local = exact_scale(intensity, facility, 1000)  # nWh x g/kWh = pg; / 1000 = ng
    return (*nwh, facility, kg_to_ng(emissions), local, kg_to_ng(remote_kg))


def _with_exact_columns(table: pa.Table) -> pa.Table:
    """Add the integer columns to a part written before they existed (``compact/1``)."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    names = (
        "energy_cpu_kwh",
        "energy_gpu_kwh",
        "energy_ram_kwh",
        "energy_remote_kwh",
        "energy_total_kwh",
        "pue",
        "intensity_g_per_kwh",
        "emissions_kg_co2e",
        "remote_emissions_kg_co2e",
    )
    columns = [table[n].to_pylist() for n in names]
    rows = [_exact(*(v or 0.0 for v in row)) for row in zip(*columns, strict=True)]
    ints = list(zip(*rows, strict=True)) if rows else [()] * len(_INT_COLUMNS)
    for name, col in zip(_INT_COLUMNS, ints, strict=True):
        table = table.append_column(pa.field(name, pa.int64()), pa.array(col, pa.int64()))
    return table


def _with_types(table: pa.Table) -> pa.Table:
    """Type a part written before ``compact/3``: its timestamps were text, it had no labels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in _TIMESTAMP_COLUMNS:
        typed = pc.cast(pc.cast(table[name], pa.string()), pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.schema.get_field_index(name), name, typed)
    if "labels" in table.schema.names:
        return table
    labels = pa.nulls(table.num_rows, pa.map_(pa.string(), pa.string()))
    return table.append_column(pa.field("labels", labels.type), labels)


def _with_sections(table: pa.Table) -> pa.Table:
    """Add the null :data:`_SECTION_COLUMNS` to a part written before ``compact/4``."""
    import pyarrow as pa

    for name in _SECTION_COLUMNS:
        if name not in table.schema.names:
            kind = pa.string() if name in _SECTION_STRINGS else pa.float64()
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
    return table


def _json_or_none(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


def _section_values(r: Record) -> tuple[object, ...]:
    """The :data:`_SECTION_COLUMNS` of one record, in their order."""
    units = r.functional_units if isinstance(r.functional_units, dict) else None
    zone = r.intensity_source.get("zone")
    embodied = getattr(r, "embodied_kg_co2e", None)
    return (
        None if units is None else str(units["name"]),
        None if not zone else str(zone),
        _json_or_none(getattr(r, "pue_source", None)),
        _json_or_none(getattr(r, "embodied", None)),
        _json_or_none(r.scheduling) if r.scheduling else None,
        None if units is None else float(units["count"]),
        None if embodied is None else float(embodied),
        _reported_kg(r),
    )


def _reported_kg(r: Record) -> float:
    total = 0.0
    for item in r.remote:
        if isinstance(item, dict):
            try:
                total += float(item.get("emissions_kg_co2e", 0.0))
            except (TypeError, ValueError):
                continue
    return total


def _records_table(records: Sequence[Record], day: str) -> pa.Table:
    """Flatten records into the compaction schema (column order of ``_arrow_schema``)."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    rows = []
    for r in sorted(records, key=lambda r: r.record_id):
        e, loc, src = r.energy_kwh, r.location, r.intensity_source
        alerts = [a for a in r.alerts if isinstance(a, dict)]
        remote_kg = _remote_kg(r)
        rows.append(
            (
                r.record_id,
                day,
                r.project,
                r.pipeline,
                r.run_id,
                r.step,
                r.team,
                r.status,
                loc.get("provider"),
                loc.get("region"),
                loc.get("country_iso"),
                loc.get("detected_by"),
                src.get("name"),
                src.get("vintage"),
                src.get("kind"),
                r.measurement.get("method"),
                json.dumps(alerts, sort_keys=True, allow_nan=False) if alerts else None,
                parse_utc(r.started_at),
                parse_utc(r.ended_at),
                r.attempt,
                r.duration_s,
                e["cpu"],
                e["gpu"],
                e["ram"],
                e["remote"],
                e["total"],
                r.pue,
                r.intensity_g_per_kwh,
                r.emissions_kg_co2e,
                remote_kg,
                *_exact(
                    e["cpu"],
                    e["gpu"],
                    e["ram"],
                    e["remote"],
                    e["total"],
                    r.pue,
                    r.intensity_g_per_kwh,
                    r.emissions_kg_co2e,
                    remote_kg,
                ),
                sorted(r.labels.items()),
                *_section_values(r),
            )
        )
    schema = _arrow_schema()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = [pa.array(col, f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _remote_kg(r: Record) -> float:
    total = 0.0
    for item in r.remote:
        value = item.get("emissions_kg_co2e") if isinstance(item, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            total += max(float(value), 0.0)
    return total


def _record_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1][: -len(".json")]


#: A day's listing: its JSON record keys and their record ids (:func:`_list_day`).
Listing = tuple[list[str], list[str]]


def _has_legacy(store: Store) -> bool:
    """Whether the store holds anything under ``records/v1``: one LIST request (one page).

    A pass over a period asks once, so that a store born with ``records/v2`` (or migrated)
    is not sent an empty listing of the old layout for every day.
    """
    if isinstance(store, LocalStore):
        return True  # its listings are directory reads, and a missing folder costs nothing
    return next(iter(store.list(f"{LEGACY_RECORDS_PREFIX}/")), None) is not None


def _list_day(
    store: Store, day: str, pipeline: str | None = None, *, legacy: bool = True
) -> tuple[list[str], list[str]]:
    """Return the JSON record keys of one day (of one pipeline) and their record ids.

    Both layouts (``records/v2``, then ``records/v1``; without ``legacy``, as
    :func:`_has_legacy` found the store, v2 only); a record in both is listed once.
    """
    prefixes = record_day_prefixes(day, pipeline)
    if not legacy:
        prefixes = [p for p in prefixes if not p.startswith(f"{LEGACY_RECORDS_PREFIX}/")]
    if not isinstance(store, LocalStore):
        found = [k for prefix in prefixes for k in store.list(prefix) if k.endswith(".json")]
        return _once(found, [_record_id_of(k) for k in found])
    # A million keys through the generic os.walk listing cost seconds; two listdir levels
    # of the same folders cost a fraction of that, with the same result (dot-files skipped).
    folders = list(prefixes) if pipeline else []
    if not pipeline:
        for prefix in prefixes:
            try:
                names = os.listdir(store.root / prefix)
            except (FileNotFoundError, NotADirectoryError):
                continue
            folders.extend(
                f"{prefix}{n}/" for n in names if n.startswith(("pipeline_key=", "pipeline="))
            )
    keys: list[str] = []
    ids: list[str] = []
    for folder in folders:
        try:
            names = os.listdir(store.root / folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        names = [n for n in names if n.endswith(".json") and not n.startswith(".")]
        keys.extend(folder + n for n in names)
        ids.extend(n[:-5] for n in names)
    return _once(keys, ids)


def _once(keys: list[str], ids: list[str]) -> tuple[list[str], list[str]]:
    """Keep the first key of each record id (v2's, when a migration left it in both layouts)."""
    if len(set(ids)) == len(ids):
        return keys, ids
    seen: set[str] = set()
    out: tuple[list[str], list[str]] = ([], [])
    for key, rid in zip(keys, ids, strict=True):
        if rid not in seen:
            seen.add(rid)
            out[0].append(key)
            out[1].append(rid)
    return out


def part_key(day: str) -> str:
    """Return the key of a day's compacted part."""
    return f"{COMPACT_PREFIX}/date={day}/part.parquet"


@dataclass(frozen=True)
class _Part:
    table: pa.Table  # the columns of _DICT_COLUMNS dictionary-encoded
    skipped: frozenset[str]
    version: str


def _get_part(store: Store, day: str) -> StoredObject | None:
    try:
        return store.get(part_key(day))
    except ObjectNotFound:
        return None


def _decode_part(obj: StoredObject | None, day: str) -> _Part | None:
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa
        import pyarrow.parquet as pq

    if obj is None:
        return None
    try:
        table = pq.ParquetFile(pa.BufferReader(obj.data), read_dictionary=_DICT_COLUMNS).read(
            use_threads=False
        )
        meta = table.schema.metadata or {}
        if meta.get(b"schema") not in _READABLE_SCHEMAS:
            raise ValueError(f"schema is {meta.get(b'schema')!r}, not {COMPACT_SCHEMA}")
        skipped = frozenset(json.loads(meta.get(b"skipped", b"[]")))
        if meta.get(b"schema") == b"carbonpipe.compact/1":
            table = _with_exact_columns(table)
        if meta.get(b"schema") in _OLD_SCHEMAS[1:]:
            table = _with_types(table)
        if meta.get(b"schema") in _OLD_SCHEMAS:
            table = _with_sections(table)
        schema = _arrow_schema(dictionary=True)
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError, KeyError) as exc:
        # Readers fall back to the JSON records; the next compaction rewrites the part.
        log.warning("carbonpipe: ignoring unreadable compacted part %s: %s", part_key(day), exc)
        return None
    return _Part(table, skipped, obj.version)


def _schema_of(data: bytes) -> str | None:
    """The ``schema`` a part's metadata names (``carbonpipe.compact/4``), None if unreadable."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa
        import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(pa.BufferReader(data)).metadata or {}
    except (pa.ArrowException, ValueError):
        return None
    schema = meta.get(b"schema")
    return schema.decode("utf-8", "replace") if schema is not None else None


def _read_part(store: Store, day: str) -> _Part | None:
    return _decode_part(_get_part(store, day), day)


def _pending(keys: list[str], ids: list[str], part: _Part | None) -> list[str]:
    """Return the listed keys whose records the part neither holds nor skipped as invalid."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa
        import pyarrow.compute as pc

    if part is None or not keys:
        return keys
    listed = pa.array(ids, pa.string())
    held = pc.is_in(listed, value_set=part.table["record_id"].combine_chunks())
    if part.skipped:
        skipped = pa.array(sorted(part.skipped), pa.string())
        held = pc.or_(held, pc.is_in(listed, value_set=skipped))
    return [keys[i] for i in pc.indices_nonzero(pc.invert(held)).to_pylist()]


def _fetch(store: Store, key: str) -> Record | None:
    try:
        return Record.from_json(store.get(key).data)
    except InvalidRecord as exc:
        log.warning("carbonpipe: skipping invalid record %s: %s", key, exc)
        return None
    except ObjectNotFound:
        return None  # listed, then gone: nothing to count


def _fetch_all(store: Store, keys: Sequence[str], *, workers: int = 16) -> list[Record | None]:
    """The records at ``keys``, in order (None where invalid or gone): in ``workers`` threads
    on a remote store; one by one on a local folder, whose reads parse under the GIL."""
    if isinstance(store, LocalStore) or workers <= 1:
        return [_fetch(store, k) for k in keys]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda k: _fetch(store, k), keys))
