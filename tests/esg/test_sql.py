"""``carbonpipe sql``: the printed DDL run by DuckDB and by Spark (local mode) over stores with
variety, agreeing with ``carbonpipe report --json`` to the nanogram; Athena and BigQuery
scripts against golden files."""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import sql as esg_sql
from carbonpipe.units import kg_to_ng
from tests.esg.sql_stores import build, cli, report, sql_statements

GOLDEN = Path(__file__).parent / "golden"


def _adversarial_floats() -> list[float]:
    """Floats where a careless conversion to integer ng goes wrong: exact halves, values just
    beside them, the cut-off of 2**-47, powers of two (where log2 is exact), huge and tiny."""
    rng = random.Random(3)
    out = [0.0, 1.0, 2.5e-12, 1.5e-12, 0.5e-12, 7e-15, 2.0**-47, 2.0**-47 * 0.999, 2.0**22]
    out += [math.nextafter(v, math.inf) for v in out if v] + [
        math.nextafter(v, 0.0) for v in out if v
    ]
    out += [2.0**k for k in range(-47, 23, 3)]
    out += [(k + 0.5) / 1e12 for k in range(0, 40, 3)]
    out += [rng.uniform(0, 10) * 10.0 ** rng.randint(-14, 5) for _ in range(300)]
    # Random bit patterns of doubles between 1e-15 and 8e6.
    while len(out) < 500:
        (v,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if 1e-15 < v < 8e6:
            out.append(v)
    return out


def _exact_query(engine: str, values: list[float]) -> str:
    dialect = esg_sql._DIALECTS[engine]
    rows = ", ".join(f"({i}, CAST('{v!r}' AS DOUBLE))" for i, v in enumerate(values))
    inner = f"SELECT * FROM (VALUES {rows}) AS v(i, x)"
    return esg_sql.exact_e12(dialect, inner, {"ng": "x"}, ["i"])


def _check_against_report(
    fetch: Any, store: Path, *, expected: dict[str, Any] | None = None
) -> None:
    """The views' totals, per pipeline and per day, equal ``carbonpipe report`` and the ESG
    aggregation exactly. ``fetch(sql)`` runs a query and returns its rows as tuples."""
    expected = expected or report(store)
    [(records, ng, nwh)] = fetch(
        "SELECT COUNT(*), SUM(emissions_ng), SUM(energy_total_nwh) FROM carbon_records"
    )
    assert (records, int(ng), int(nwh)) == (
        expected["records"],
        expected["emissions_ng"],
        expected["energy_nwh"],
    )
    [(daily_records, daily_ng, daily_nwh)] = fetch(
        "SELECT SUM(records), SUM(emissions_ng), SUM(energy_nwh) FROM carbon_daily"
    )
    assert (int(daily_records), int(daily_ng), int(daily_nwh)) == (records, int(ng), int(nwh))
    by_pipeline = {
        p: (n, int(g), int(w))
        for p, n, g, w in fetch(
            "SELECT pipeline, COUNT(*), SUM(emissions_ng), SUM(energy_total_nwh) "
            "FROM carbon_records GROUP BY pipeline"
        )
    }
    assert by_pipeline == {
        p: (v["records"], v["emissions_ng"], v["energy_nwh"])
        for p, v in expected["by_pipeline"].items()
    }
    # carbon_daily against the ESG aggregation (Parquet parts plus late JSON), group by group.
    agg = esg.aggregate(str(store), "2026-11")
    want = {
        key: (m.records, m.to_dict()["emissions_ng"], m.to_dict()["energy_total_nwh"])
        for key, m in agg.breakdown("date", "team", "pipeline", "step", "region")
    }
    got = {
        (str(day), team, pipeline, step, region or ""): (int(n), int(g), int(w))
        for day, team, pipeline, step, region, n, g, w in fetch(
            "SELECT day, team, pipeline, step, region, records, emissions_ng, energy_nwh "
            "FROM carbon_daily"
        )
    }
    assert got == want


# -- DuckDB -------------------------------------------------------------------------------------


def _duckdb(store: Path) -> Any:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for statement in sql_statements("duckdb", store):
        con.execute(statement)
    return con


def test_duckdb_exact_conversion_equals_carbonpipe_units() -> None:
    duckdb = pytest.importorskip("duckdb")
    values = _adversarial_floats()
    got = dict(duckdb.connect().execute(_exact_query("duckdb", values)).fetchall())
    assert [got[i] for i in range(len(values))] == [kg_to_ng(v) for v in values]


def test_duckdb_reads_a_varied_store_as_carbonpipe_report_does(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build(store)
    done = cli("sql", "--engine", "duckdb", "--store", str(store))
    assert "carbonpipe migrate" in done.stderr  # the store holds records/v1 records
    con = _duckdb(store)
    _check_against_report(lambda q: con.execute(q).fetchall(), store)
    # Late records (JSON after compaction) come from JSON, the rest of those days from Parquet.
    sources = dict(con.execute("SELECT source, COUNT(*) FROM carbon_records GROUP BY 1").fetchall())
    assert sources["parquet"] > 0 and sources["json"] > 0
    late = con.execute(
        "SELECT COUNT(*) FROM carbon_records WHERE source = 'json' AND day <= DATE '2026-11-21'"
    ).fetchone()
    assert late == (4,)
    # The record's own pipeline, never a sanitised folder name; typed columns.
    names = {r[0] for r in con.execute("SELECT DISTINCT pipeline FROM carbon_records").fetchall()}
    assert "ranking v2/train" in names and "détection" in names and "2024" in names
    types = dict(
        con.execute("SELECT column_name, column_type FROM (DESCRIBE carbon_records)").fetchall()
    )
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["labels"] == "MAP(VARCHAR, VARCHAR)"
    assert types["emissions_ng"] == "BIGINT" and types["day"] == "DATE"
    [(labels,)] = con.execute(
        "SELECT labels FROM carbon_records WHERE source = 'parquet' AND cardinality(labels) > 0 "
        "LIMIT 1"
    ).fetchall()
    assert labels["cost/center"] == "42"


def test_hive_partitioning_adds_columns_beside_the_records_fields(tmp_path: Path) -> None:
    """What a user gets pointing DuckDB at records/v2 with Hive partitioning on: the record's
    own ``pipeline`` (``ranking v2/train``, ``2024`` as text), the folder as ``pipeline_key``."""
    duckdb = pytest.importorskip("duckdb")
    store = tmp_path / "store"
    build(store)
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT DISTINCT pipeline, pipeline_key, typeof(pipeline) FROM read_json_auto("
            f"'{store}/records/v2/*/*/*.json', hive_partitioning = true)"
        )
        .fetchall()
    )
    pipelines = {p for p, _, _ in rows}
    assert {"ranking v2/train", "ranking_v2_train", "2024"} <= pipelines
    assert all(t == "VARCHAR" for _, _, t in rows)
    shadowed = [(p, k) for p, k, _ in rows if p == "ranking v2/train"]
    assert shadowed and all(k.startswith("ranking_v2_train-") for _, k in shadowed)


def test_duckdb_agrees_after_migrate_and_with_a_store_of_json_only(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build(store, seed=11, records=40)
    before = report(store)
    for run in (1, 2):
        done = cli("migrate", "--store", str(store), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changed"] is (run == 1)
    assert report(store) == before
    con = _duckdb(store)
    _check_against_report(lambda q: con.execute(q).fetchall(), store, expected=before)
    # Without any compacted part the views read the JSON records alone.
    shutil.rmtree(store / "records" / "compact")
    con = _duckdb(store)
    _check_against_report(lambda q: con.execute(q).fetchall(), store, expected=before)


# -- Spark (local mode) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for every Spark test (a session costs ~10 s to start)."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java: `make test` installs openjdk-17-jre-headless")
    pytest.importorskip("pyspark")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyspark's own FutureWarnings about pandas
        from pyspark.sql import SparkSession

        work = tmp_path_factory.mktemp("spark")
        session = (
            SparkSession.builder.master("local[1]")
            .appName("carbonpipe-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(work / "warehouse"))
            .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={work}")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_spark_reads_a_varied_store_as_carbonpipe_report_does(spark: Any, tmp_path: Path) -> None:
    values = _adversarial_floats()
    got = {r[0]: r[1] for r in spark.sql(_exact_query("spark", values)).collect()}
    assert [got[i] for i in range(len(values))] == [kg_to_ng(v) for v in values]

    store = tmp_path / "store"
    build(store)
    for statement in sql_statements("spark", store):
        spark.sql(statement)
    _check_against_report(lambda q: [tuple(r) for r in spark.sql(q).collect()], store)
    schema = {f.name: f.dataType.simpleString() for f in spark.table("carbon_records").schema}
    assert schema["started_at"] == "timestamp" and schema["labels"] == "map<string,string>"


# -- Athena and BigQuery: golden scripts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "store"),
    [("athena", "s3://acme-carbon/prod"), ("bigquery", "gs://acme-carbon/prod")],
)
def test_athena_and_bigquery_scripts_match_their_golden_files(engine: str, store: str) -> None:
    done = cli("sql", "--engine", engine, "--store", store)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / f"sql_{engine}.sql").read_text(encoding="utf-8")


def test_an_engine_that_cannot_read_the_store_is_refused() -> None:
    done = cli("sql", "--engine", "athena", "--store", "gs://acme-carbon/prod")
    assert done.returncode == 2 and "reads s3:// stores" in done.stderr
