"""The SCI and time-shifting sections from the rows the aggregation read (compact/4 parts and
JSON records alike), equal to the same sections over the records; old parts add nothing."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from carbonpipe.esg import rows as esg_rows
from carbonpipe.esg.aggregation import aggregate
from carbonpipe.esg.compaction import PARQUET_TYPE, encode_part
from carbonpipe.esg.sci import sci_section
from carbonpipe.esg.shifting import shifting_section
from carbonpipe.record import Record, make_record_id
from carbonpipe.stores.local import LocalStore
from tests.esg.test_esg import make_record

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

DAYS = ["2026-11-02", "2026-11-03"]


def _records() -> list[Record]:
    out = []
    for i in range(12):
        day = DAYS[i % 2]
        rec = make_record("train", "fit", "ml", day, f"r{i}", cpu=0.5 + i, pue=1.2)
        if i % 3 == 0:
            rec = replace(
                rec,
                functional_units={"name": "training run", "count": float(i + 1)},
                pue_source={"kind": "provider", "name": "gcp", "vintage": "2025"},
                embodied_kg_co2e=0.01 * i if i % 2 else None,
                embodied=(
                    {"method": "ccf", "share": 0.5, "lifetime_years": 4.0} if i % 2 else None
                ),
                remote=[{"emissions_kg_co2e": 0.002, "server": "llm"}],
            )
        if i % 4 == 1:
            rec = replace(
                rec,
                scheduling={
                    "decided_at": f"{day}T09:00:00Z",
                    "planned_start": f"{day}T11:00:00Z",
                    "waited_s": 7200.0 if i % 8 == 1 else 0.5,
                    "intensity_if_started_at_decision": 300.0,
                    "intensity_actual": 120.0,
                    "source": {"zone": "DE"},
                },
            )
        rec = replace(rec, record_id=make_record_id("acme", "train", f"r{i}", "fit", 1))
        out.append(Record.from_json(rec.to_json()))  # as the store gives it back
    return out


def _store(tmp_path: Path, records: list[Record], compacted: bool) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    for day in DAYS:
        rows = [r for r in records if r.date == day]
        if compacted:
            data = encode_part(esg_rows._records_table(rows, day), day, ())
            store.put_if_absent(esg_rows.part_key(day), data, content_type=PARQUET_TYPE)
        else:
            for r in rows:
                store.put_if_absent(r.key, r.to_json())
    return store


@pytest.mark.parametrize("compacted", [True, False], ids=["parts", "json"])
def test_sections_from_the_aggregated_rows_equal_those_over_the_records(
    tmp_path: Path, compacted: bool
) -> None:
    records = _records()
    agg = aggregate(_store(tmp_path, records, compacted), "2026-11")
    assert (agg.stats.compacted_records, agg.stats.json_records) == (
        (12, 0) if compacted else (0, 12)
    )
    assert len(agg.section_rows) == 6  # 4 with units, 3 that planned their start (1 both)
    sci = sci_section(agg.section_rows)
    assert sci and sci == sci_section(records)
    shifting = shifting_section(agg.section_rows)
    assert shifting["steps_planned"] == 3 and shifting["steps_shifted"] == 2
    assert shifting == shifting_section(records)


def test_parts_before_compact_4_add_nothing_to_the_sections(tmp_path: Path) -> None:
    records = _records()
    store = _store(tmp_path, records, compacted=True)
    for day in DAYS:  # as compact/3 wrote them: no section columns
        obj = store.get(esg_rows.part_key(day))
        table = pq.read_table(pa.BufferReader(obj.data))
        table = table.drop_columns(list(esg_rows._SECTION_COLUMNS))
        meta = {**(table.schema.metadata or {}), b"schema": b"carbonpipe.compact/3"}
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        store.replace(esg_rows.part_key(day), buf.getvalue(), if_version=obj.version)
    agg = aggregate(store, "2026-11")
    assert agg.totals().records == 12 and agg.stats.json_records == 0
    assert agg.section_rows == ()
    assert sci_section(agg.section_rows) == []
    assert shifting_section(agg.section_rows)["steps_planned"] == 0
