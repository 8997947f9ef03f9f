"""Compaction: a closed day's JSON records rewritten as one Parquet part, idempotently."""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from carbonpipe._optional import needs_extra
from carbonpipe.errors import PreconditionFailed
from carbonpipe.stores.base import Store
from carbonpipe.stores.opener import open_store

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pyarrow as pa
from carbonpipe.esg.period import Period, parse_period
from carbonpipe.esg.rows import (
    COMPACT_SCHEMA,
    Listing,
    _arrow_schema,
    _fetch_all,
    _has_legacy,
    _list_day,
    _pending,
    _read_part,
    _record_id_of,
    _records_table,
    part_key,
)

log = logging.getLogger(__name__)
DEFAULT_SETTLE = timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# Compaction


@dataclass(frozen=True)
class Compaction:
    """What compacting one day did: records in the part, records added, ids skipped as invalid."""

    day: str
    records: int
    added: int
    skipped: int
    written: bool


def closed_days(
    period: Period, *, now: datetime | None = None, settle: timedelta = DEFAULT_SETTLE
) -> list[date]:
    """Return the period's days that ended at least ``settle`` before ``now``."""
    now = now or datetime.now(timezone.utc)
    out = []
    for d in period.days():
        end = datetime.combine(d + timedelta(days=1), datetime.min.time(), timezone.utc)
        if end + settle <= now:
            out.append(d)
    return out


PARQUET_TYPE = "application/vnd.apache.parquet"


def encode_part(table: pa.Table, day: str, skipped: Iterable[str]) -> bytes:
    """A day's rows as the bytes of its part: sorted by record id, ``compact/4`` metadata."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa
        import pyarrow.parquet as pq

    table = table.cast(_arrow_schema())
    table = table.take(pa.compute.sort_indices(table, [("record_id", "ascending")]))
    table = table.replace_schema_metadata(
        {
            "schema": COMPACT_SCHEMA,
            "date": day,
            "skipped": json.dumps(sorted(skipped), allow_nan=False),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def compact_day(
    store: Store,
    day: date | str,
    *,
    workers: int = 16,
    legacy: bool | None = None,
    listings: dict[str, Listing] | None = None,
) -> Compaction:
    """Fold a day's JSON records that its part lacks into the part (create or compare-and-swap).

    A day without any JSON record listed has nothing to fold: its part is not read (a store
    whose compacted records expire reads each part once a night, in the aggregation), and the
    result counts 0 records. ``legacy``: whether to list ``records/v1`` too (None: ask the
    store, :func:`carbonpipe.esg.rows._has_legacy`). ``listings``: filled with the day's
    listing, for an aggregation that follows (:func:`carbonpipe.esg.aggregation.aggregate`).
    """
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    day = day.isoformat() if isinstance(day, date) else day
    keys, ids = _list_day(store, day, legacy=_has_legacy(store) if legacy is None else legacy)
    if listings is not None:
        listings[day] = (keys, ids)
    if not keys:
        return Compaction(day, 0, 0, 0, False)
    part = _read_part(store, day)
    new_keys = _pending(keys, ids, part)
    if not new_keys:
        return Compaction(
            day, part.table.num_rows if part else 0, 0, len(part.skipped) if part else 0, False
        )
    fetched = list(zip(new_keys, _fetch_all(store, new_keys, workers=workers), strict=True))
    records = [r for _, r in fetched if r is not None]
    skipped = set(part.skipped if part else ()) | {
        _record_id_of(k) for k, r in fetched if r is None
    }
    tables = [part.table.cast(_arrow_schema())] if part else []
    tables.append(_records_table(records, day))
    table = pa.concat_tables(tables)
    data = encode_part(table, day, skipped)
    try:
        if part is None:
            store.put_if_absent(part_key(day), data, content_type=PARQUET_TYPE)
        else:
            store.replace(part_key(day), data, if_version=part.version, content_type=PARQUET_TYPE)
    except PreconditionFailed:
        # Another compactor won; its part is as valid as ours and readers add what it lacks.
        log.info("carbonpipe: %s was compacted concurrently; keeping the other writer's part", day)
        return Compaction(day, table.num_rows, 0, len(skipped), False)
    return Compaction(day, table.num_rows, len(records), len(skipped), True)


def compact(
    store: Store | str,
    period: str | Period,
    *,
    now: datetime | None = None,
    settle: timedelta = DEFAULT_SETTLE,
    workers: int = 4,
    listings: dict[str, Listing] | None = None,
) -> list[Compaction]:
    """Compact every closed day of ``period`` (days still open are left to the JSON path).

    ``listings``: filled with each closed day's listing (``{day: (keys, record ids)}``), which
    the nightly job hands to the aggregation so that a day is listed once a night.
    """
    store = open_store(store)
    days = closed_days(parse_period(period), now=now, settle=settle)
    legacy = _has_legacy(store) if days else False
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(
            pool.map(lambda d: compact_day(store, d, legacy=legacy, listings=listings), days)
        )
