"""``carbonpipe migrate``: a store an earlier version wrote, moved to the current layout.

Two moves, each idempotent and safe to interrupt and run again:

* **Records** under ``records/v1/date=.../pipeline=.../`` go to ``records/v2/date=.../
  pipeline_key=.../`` (:func:`carbonpipe.record.record_key`). Each record's bytes are copied
  create-if-absent, unchanged; the v1 object is deleted only after the v2 key is read back and
  holds a valid record with the same id (the copy, or the same record a newer writer delivered
  there first). An object under v1 that is not a valid record stays where it is and is reported.
  While a migration runs, and if it stops half-way, every reader counts a record found in both
  layouts once (:func:`carbonpipe.report.record_keys`, :func:`carbonpipe.esg.rows._list_day`,
  the SQL of ``carbonpipe sql``).
* **Compacted parts** older than ``carbonpipe.compact/4`` are rewritten as ``/4``, each with
  compare-and-swap on the version read, so a compaction running at the same time wins. A row
  whose JSON record is still in the store is rebuilt from it (``/1`` and ``/2`` had timestamps as
  text, ``/3`` lacked the SCI and time-shifting columns); a row whose record is gone keeps what
  the old part held, those columns null.

A second run finds nothing to do and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from carbonpipe.errors import InvalidRecord, ObjectNotFound, PreconditionFailed
from carbonpipe.record import LEGACY_RECORDS_PREFIX, Record, record_id_of_key
from carbonpipe.stores.base import Store

log = logging.getLogger("carbonpipe")


@dataclass
class Migration:
    """What one run did: records moved, found already moved, left in v1; parts rewritten."""

    records_moved: int = 0
    records_already_moved: int = 0
    records_left: list[str] = field(default_factory=list)  # "<v1 key>: why"
    parts_rewritten: int = 0
    parts_current: int = 0
    rows_backfilled: int = 0  # rows of rewritten parts rebuilt from their JSON records
    rows_kept: int = 0  # rows of rewritten parts whose JSON record is gone: kept as they were
    parts_unreadable: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether this run wrote or deleted anything."""
        return bool(self.records_moved or self.records_already_moved or self.parts_rewritten)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def _same_record(store: Store, key: str, record_id: str) -> bool:
    """Whether ``key`` holds a valid record whose id is ``record_id``."""
    try:
        return Record.from_json(store.get(key).data).record_id == record_id
    except (ObjectNotFound, InvalidRecord):
        return False


def migrate_records(store: Store, result: Migration, *, dry_run: bool = False) -> None:
    """Move every valid record of ``records/v1`` to its ``records/v2`` key (see the module)."""
    for key in list(store.list(f"{LEGACY_RECORDS_PREFIX}/")):
        if not key.endswith(".json"):
            continue
        try:
            raw = store.get(key).data
        except ObjectNotFound:
            continue  # another migrate moved it meanwhile
        try:
            record = Record.from_json(raw)
        except InvalidRecord as exc:
            result.records_left.append(f"{key}: {exc}")
            continue
        if record.record_id != record_id_of_key(key):
            result.records_left.append(f"{key}: holds record {record.record_id}, not its name")
            continue
        target = record.key
        if dry_run:
            result.records_moved += 1
            continue
        try:
            store.put_if_absent(target, raw)
            moved = True
        except PreconditionFailed:
            moved = False
        if not _same_record(store, target, record.record_id):
            result.records_left.append(f"{key}: {target} holds something else; kept both")
            continue
        store.delete(key)  # the v2 object was read back above: the record is not lost
        if moved:
            result.records_moved += 1
        else:
            result.records_already_moved += 1


def migrate_parts(store: Store, result: Migration, *, dry_run: bool = False) -> None:
    """Rewrite compacted parts older than ``carbonpipe.compact/4`` in the current schema.

    The rows whose JSON record is still in the store are rebuilt from it, so they gain what
    the old part lacked (``/1`` and ``/2``: typed timestamps and labels; ``/3``: the SCI and
    time-shifting columns). A row whose record is gone (expired by a lifecycle rule) keeps what
    the old part held, with those columns null; ``rows_backfilled`` and ``rows_kept`` count each.
    """
    from carbonpipe.esg.compaction import PARQUET_TYPE, encode_part
    from carbonpipe.esg.rows import (
        COMPACT_PREFIX,
        COMPACT_SCHEMA,
        _decode_part,
        _has_legacy,
        _schema_of,
    )

    legacy: bool | None = None  # whether records/v1 holds anything: asked once, if at all
    for key in list(store.list(f"{COMPACT_PREFIX}/")):
        if not key.endswith("/part.parquet"):
            continue
        day = key[len(COMPACT_PREFIX) + len("/date=") :][:10]
        try:
            obj = store.get(key)
        except ObjectNotFound:
            continue
        if _schema_of(obj.data) == COMPACT_SCHEMA:
            result.parts_current += 1
            continue
        part = _decode_part(obj, day)
        if part is None:
            result.parts_unreadable.append(key)
            continue
        if legacy is None:
            legacy = _has_legacy(store)
        table, backfilled = _backfilled(store, day, part.table, legacy=legacy)
        if dry_run:
            result.parts_rewritten += 1
            result.rows_backfilled += backfilled
            result.rows_kept += table.num_rows - backfilled
            continue
        data = encode_part(table, day, part.skipped)
        try:
            store.replace(key, data, if_version=obj.version, content_type=PARQUET_TYPE)
        except PreconditionFailed:  # a compaction rewrote it meanwhile, in the current schema
            log.info("carbonpipe: %s changed while migrating; left as the other writer wrote", key)
            continue
        result.parts_rewritten += 1
        result.rows_backfilled += backfilled
        result.rows_kept += table.num_rows - backfilled


def _backfilled(store: Store, day: str, table: Any, *, legacy: bool) -> tuple[Any, int]:
    """``table`` (an old part's rows) with each row whose JSON record is still listed rebuilt
    from that record; and how many were. ``legacy``: whether ``records/v1`` is listed too
    (:func:`carbonpipe.esg.rows._has_legacy`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from carbonpipe.esg.rows import _arrow_schema, _fetch_all, _list_day, _records_table

    keys, ids = _list_day(store, day, legacy=legacy)
    held = set(table["record_id"].to_pylist())
    wanted = [k for k, rid in zip(keys, ids, strict=True) if rid in held]
    records = _fetch_all(store, wanted)
    found = [r for r in records if r is not None and r.record_id in held]
    table = table.cast(_arrow_schema())
    if not found:
        return table, 0
    rebuilt = _records_table(found, day)
    refreshed = pa.array(sorted({r.record_id for r in found}), pa.string())
    kept = table.filter(pc.invert(pc.is_in(table["record_id"], value_set=refreshed)))
    return pa.concat_tables([kept, rebuilt.cast(_arrow_schema())]), rebuilt.num_rows


def migrate(store: Store, *, dry_run: bool = False) -> Migration:
    """Move ``store``'s v1 records to ``records/v2`` and rewrite its old compacted parts."""
    result = Migration()
    migrate_records(store, result, dry_run=dry_run)
    migrate_parts(store, result, dry_run=dry_run)
    return result
