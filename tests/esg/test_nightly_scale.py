"""The nightly ESG job on S3 (moto): its requests follow days, parts and new records, not rows.

A small version of ``bench/bench_esg_scale.py``: a quarter whose closed days are already
compacted (parts written with the compaction's own encoder), plus the night's JSON records.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from carbonpipe.esg import nightly as esg_nightly
from carbonpipe.esg.aggregation import aggregate
from carbonpipe.esg.compaction import PARQUET_TYPE, compact, encode_part
from carbonpipe.esg.rows import _records_table, part_key
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.s3 import S3Store
from carbonpipe.units import kg_to_ng, kwh_to_nwh
from tests.esg.test_esg import make_record

pytest.importorskip("pyarrow")
pytest.importorskip("moto")

PERIOD = "2026-Q4"
NIGHT = "2026-12-31"
NOW = datetime(2027, 1, 2, 1, 0, tzinfo=timezone.utc)
DAYS = [(date(2026, 10, 1) + timedelta(days=i)).isoformat() for i in range(91)]
PIPELINES = [("ranking", "rank-train"), ("vision", "detect-train"), ("nlp", "embed-index")]
STEPS = ["prepare", "train", "evaluate"]
NEW = 300


def _records(n: int, day_of: Any, tag: str) -> list[Record]:
    out = []
    for i in range(n):
        team, pipeline = PIPELINES[i % len(PIPELINES)]
        out.append(
            make_record(
                pipeline,
                STEPS[(i // 3) % len(STEPS)],
                team,
                day_of(i),
                f"{tag}-{i}",
                cpu=0.001 * (i % 97 + 1),
                gpu=0.01 * (i % 13),
                ram=0.0003 * (i % 7),
                intensity=[432.0, 126.43, 15.83][i % 3],
                pue=1.1,
                status="failed" if i % 41 == 0 else "succeeded",
                method="estimate" if i % 10 == 0 else "rapl",
            )
        )
    return out


def _quarter(store: Store, compacted: int, new: int) -> list[Record]:
    """``compacted`` records as the parts of 91 closed days, ``new`` JSON records of the night."""
    old = _records(compacted, lambda i: DAYS[i * len(DAYS) // compacted], "old")
    for day in DAYS:
        rows = [r for r in old if r.date == day]
        data = encode_part(_records_table(rows, day), day, ())
        store.put_if_absent(part_key(day), data, content_type=PARQUET_TYPE)
    night = _records(new, lambda i: NIGHT, "night")
    for r in night:
        store.put_if_absent(r.key, r.to_json())
    return old + night


def _what(key: str) -> str:
    if key.endswith("part.parquet"):
        return "part"
    if "/records/" in key:
        return "record" if key.endswith(".json") else "day listing"
    return "artifact" if "/esg/" in key else "other"


def _counted(store: S3Store) -> Counter[str]:
    counts: Counter[str] = Counter()

    def count(model: Any, params: dict[str, Any], **_: Any) -> None:
        key = str(params.get("Key") or params.get("Prefix") or "")
        if key.startswith(f"{store.prefix}/"):  # botocore may call it for a sibling client too
            counts[f"{model.name} {_what(key)}"] += 1

    store.client.meta.events.register("before-parameter-build.s3", count)
    return counts


def _two_quarters(s3_store: Store, s3_endpoint: str) -> tuple[S3Store, S3Store, list[Record]]:
    """The same night on 500 and on 5,000 compacted records, side by side in one bucket."""
    assert isinstance(s3_store, S3Store)
    small = S3Store(s3_store.bucket, "small", endpoint_url=s3_endpoint, max_attempts=2)
    big = S3Store(s3_store.bucket, "big", endpoint_url=s3_endpoint, max_attempts=2)
    _quarter(small, 500, NEW)
    return small, big, _quarter(big, 5000, NEW)


def _assert_exact(store: Store, records: list[Record]) -> None:
    total = aggregate(store, PERIOD).totals()
    assert total.records == len(records)
    assert total._s("emissions_ng") == sum(kg_to_ng(r.emissions_kg_co2e) for r in records)
    assert total._s("total_nwh") == sum(kwh_to_nwh(r.energy_kwh["total"]) for r in records)


@pytest.mark.timeout(600)
def test_compaction_and_aggregation_requests_follow_days_and_new_records(
    s3_store: Store, s3_endpoint: str
) -> None:
    small, big, records = _two_quarters(s3_store, s3_endpoint)
    counts: dict[str, Counter[str]] = {}
    for name, store in (("small", small), ("big", big)):
        counts[name] = _counted(store)
        done = compact(store, PERIOD, now=NOW)  # what the nightly job does first
        assert [(c.day, c.added) for c in done if c.written] == [(NIGHT, NEW)]
        agg = aggregate(store, PERIOD)
        assert agg.stats.json_records == 0  # the night's records are in its new part
    got = counts["big"]
    # Ten times the compacted rows, the same requests: they follow days, parts and new records.
    assert got == counts["small"]
    days = len(DAYS) + 1
    assert got["GetObject record"] == NEW  # each new record read once, nothing else per record
    assert got["HeadObject part"] + got["HeadObject record"] == 0
    # The aggregation reads each part once; the compaction reads only the parts of days that
    # list JSON records (here the night's, absent: one 404).
    assert got["GetObject part"] == days + 1
    # One listing of each day per pass (one page each), and one of records/v1 per pass.
    assert got["ListObjectsV2 day listing"] == 2 * days + 2
    assert got["PutObject part"] == 1
    _assert_exact(big, records)

    # The next night finds nothing new: not one JSON record is read, no part written; with
    # the compaction's listings handed over (as run_nightly does) each day is listed once.
    again = _counted(big)
    listings: dict[str, Any] = {}
    compact(big, PERIOD, now=NOW + timedelta(days=1), listings=listings)
    assert sorted(listings) == DAYS + [NIGHT]
    agg = aggregate(big, PERIOD, listings=listings)
    assert agg.totals().records == len(records)
    assert again["GetObject record"] == 0
    assert again["PutObject part"] == 0
    assert again["ListObjectsV2 day listing"] == days + 1  # and one of records/v1
    small.close()
    big.close()


@pytest.mark.timeout(600)
def test_nightly_job_is_exact_and_writes_one_part(s3_store: Store, s3_endpoint: str) -> None:
    small, big, records = _two_quarters(s3_store, s3_endpoint)
    counts = {"small": _counted(small), "big": _counted(big)}
    for store in (small, big):
        result = esg_nightly.run_nightly(store, PERIOD, now=NOW, config={})
    assert result["compaction"] == {"days_compacted": 1, "records_added": NEW}
    assert result["read"] == {
        "compacted_records": 5000 + NEW,
        "json_records": 0,
        "invalid_records": 0,
    }
    assert counts["big"] == counts["small"]
    assert counts["big"]["PutObject part"] == 1
    _assert_exact(big, records)
    small.close()
    big.close()


@pytest.mark.timeout(600)
def test_nightly_job_reads_each_new_record_once(s3_store: Store, s3_endpoint: str) -> None:
    """The report's SCI and time-shifting sections read the rows the aggregation read (the
    parts carry their fields since carbonpipe.compact/4), not every JSON record again."""
    small, big, _ = _two_quarters(s3_store, s3_endpoint)
    counts = _counted(big)
    esg_nightly.run_nightly(big, PERIOD, now=NOW, config={})
    days = len(DAYS) + 1
    assert counts["GetObject record"] == NEW
    # The compaction's GET of the night's (absent) part, then the aggregation's of each day's.
    assert counts["GetObject part"] == days + 1
    gets = sum(n for what, n in counts.items() if what.startswith("GetObject "))
    assert gets - counts["GetObject artifact"] - counts["GetObject other"] == NEW + days + 1
    # Each day listed once (the compaction's listings handed on), and records/v1 once.
    assert counts["ListObjectsV2 day listing"] == days + 1
    small.close()
    big.close()
