"""``carbonpipe migrate``: records/v1 to records/v2 and old compacted parts to the current
schema, once; every reader counts each record once before, during and after; typed Parquet parts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import rows as esg_rows
from carbonpipe.esg.migrate import migrate
from carbonpipe.record import Record, legacy_record_key
from carbonpipe.report import summarize
from carbonpipe.stores.local import LocalStore
from tests.esg.sql_stores import DAYS, build, cli
from tests.esg.test_exact_sums import old_part_table


def _keys(store: LocalStore, prefix: str) -> list[str]:
    return [k for k in store.list(prefix) if k.endswith(".json")]


def _downgrade_part(store: LocalStore, day: str) -> None:
    """Rewrite a day's part as carbonpipe.compact/2 wrote it (timestamps as text, no labels)."""
    obj = store.get(esg_rows.part_key(day))
    table = pq.read_table(pa.BufferReader(obj.data))
    meta = dict(table.schema.metadata or {})
    meta[b"schema"] = b"carbonpipe.compact/2"
    table = old_part_table(table).replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.replace(esg_rows.part_key(day), buf.getvalue(), if_version=obj.version)


def test_compacted_parts_have_real_types(tmp_path: Path) -> None:
    store = build(tmp_path / "store", records=20)
    schema = pq.read_schema(pa.BufferReader(store.get(esg_rows.part_key(DAYS[0])).data))
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("ended_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("labels").type == pa.map_(pa.string(), pa.string())
    assert schema.field("emissions_kg_co2e").type == pa.float64()
    assert schema.field("emissions_ng").type == pa.int64()
    assert schema.metadata[b"schema"] == esg_rows.COMPACT_SCHEMA.encode()
    assert schema.field("functional_unit").type == pa.string()  # compact/4: SCI, shifting


def test_migrate_moves_every_record_once_and_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    store = build(tmp_path / "store", seed=5, records=50)
    _downgrade_part(store, DAYS[1])
    bad = legacy_record_key(DAYS[2], "train", "f" * 32)
    store.put_if_absent(bad, b'{"schema": "carbonpipe.record/1"}')  # not a record: stays
    before = summarize(store)
    agg_before = esg.aggregate(store, "2026-11")
    legacy = _keys(store, "records/v1/")
    assert len(legacy) > 5

    # Interrupted half-way: half of v1 copied to v2, its v1 objects not deleted yet.
    for key in legacy[: len(legacy) // 2]:
        if key != bad:
            rec = Record.from_json(store.get(key).data)
            if not store.exists(rec.key):
                store.put_if_absent(rec.key, store.get(key).data)
    assert summarize(store).to_dict() == before.to_dict()  # each record once, mid-way
    assert esg.aggregate(store, "2026-11").totals() == agg_before.totals()

    first = cli("migrate", "--store", str(store.root), "--json")
    assert first.returncode == 1, first.stderr  # the invalid object had to stay in v1
    done = json.loads(first.stdout)
    assert done["changed"] and done["parts_rewritten"] == 1 and done["parts_current"] == 1
    assert done["records_moved"] + done["records_already_moved"] == len(legacy) - 1
    assert [line.split(":")[0] for line in done["records_left"]] == [bad]
    assert _keys(store, "records/v1/") == [bad]

    second = cli("migrate", "--store", str(store.root), "--json")
    again = json.loads(second.stdout)
    assert not again["changed"] and again["parts_current"] == 2 and again["records_moved"] == 0
    listing = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*.*"))
    assert migrate(store).changed is False
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*.*")) == listing

    after = summarize(store)
    assert after.to_dict() == before.to_dict()
    agg_after = esg.aggregate(store, "2026-11")
    assert agg_after.totals() == agg_before.totals()
    assert agg_after.breakdown("date", "pipeline") == agg_before.breakdown("date", "pipeline")
    schema = pq.read_schema(pa.BufferReader(store.get(esg_rows.part_key(DAYS[1])).data))
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert all("/pipeline_key=" in k for k in _keys(store, "records/v2/"))


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    store = build(tmp_path / "store", seed=9, records=20)
    listing = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*"))
    done = cli("migrate", "--store", str(store.root), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would move" in done.stdout
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == listing


def test_a_part_without_the_sci_columns_gets_them_back_from_the_records_still_there(
    tmp_path: Path,
) -> None:
    """A compact/3 part (written before the SCI and time-shifting columns) is rebuilt from the
    JSON records still in the store; a row whose record expired keeps its figures, those null."""
    store = build(tmp_path / "store", seed=11, records=60)
    day = DAYS[0]
    key = esg_rows.part_key(day)
    current = pq.read_table(pa.BufferReader(store.get(key).data))
    sections = list(esg_rows._SECTION_COLUMNS)
    before = {r["record_id"]: r for r in current.select(["record_id", *sections]).to_pylist()}
    assert any(
        any(v is not None for k, v in r.items() if k != "record_id") for r in before.values()
    )
    old = current.drop_columns(sections)
    meta = dict(current.schema.metadata or {})
    meta[b"schema"] = b"carbonpipe.compact/3"
    buf = io.BytesIO()
    pq.write_table(old.replace_schema_metadata(meta), buf)
    obj = store.get(key)
    store.replace(key, buf.getvalue(), if_version=obj.version)
    totals = esg.aggregate(store, "2026-11").totals()
    # One record of that day expired since (a lifecycle rule): only the part holds it now.
    v2 = [k for k in _keys(store, f"records/v2/date={day}/") if k.rsplit("/", 1)[1][:-5] in before]
    gone_key = v2[0]
    gone = gone_key.rsplit("/", 1)[1][:-5]
    (store.root / gone_key).unlink()
    assert not any(k.endswith(f"/{gone}.json") for k in _keys(store, "records/"))

    done = json.loads(cli("migrate", "--store", str(store.root), "--json").stdout)

    assert done["parts_rewritten"] == 1
    assert done["rows_kept"] == 1 and done["rows_backfilled"] == len(before) - 1
    part = pq.read_table(pa.BufferReader(store.get(key).data))
    assert part.schema.metadata[b"schema"] == esg_rows.COMPACT_SCHEMA.encode()
    after = {r["record_id"]: r for r in part.select(["record_id", *sections]).to_pylist()}
    assert set(after) == set(before)
    for rid, row in after.items():
        if rid == gone:
            assert all(row[c] is None for c in sections)
        else:
            assert row == before[rid]
    assert esg.aggregate(store, "2026-11").totals() == totals  # the sums never move
    assert not json.loads(cli("migrate", "--store", str(store.root), "--json").stdout)["changed"]
