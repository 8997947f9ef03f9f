"""``carbonpipe sql``: the DDL and views that give an SQL engine a typed ``carbon_records`` table
and a ``carbon_daily`` view over a store, for DuckDB, Spark, Athena and BigQuery.

What the script creates, in every engine:

``carbon_json_files``
    The JSON records of both layouts (``records/v2`` and, until ``carbonpipe migrate`` has run,
    ``records/v1``), read with an explicit schema and without Hive partition columns: the
    record's own ``pipeline`` is the only one.
``carbon_json``
    One typed row per record id (a record in both layouts is kept once), with the exact integer
    sums ``emissions_ng`` and ``energy_total_nwh``.
``carbon_compacted``
    The compacted Parquet parts (``records/compact/v1/date=*/part.parquet``,
    ``carbonpipe.compact/3`` or ``/4``), whose integer columns carbonpipe wrote.
``carbon_records``
    The compacted rows plus every JSON record no part holds yet (a record that arrived after
    its day was compacted): each record once, as :func:`carbonpipe.esg.aggregate` counts them.
``carbon_daily``
    Records, energy and CO2e by day, team, pipeline, step and region.

Exact sums. A record carries floats (kg CO2e, kWh); carbonpipe sums their exact binary values
times 10**12, rounded half to even (:func:`carbonpipe.units.exact_scale`). The views compute
the same integer in SQL, without a floating-point step: a float ``f`` (below 2**23 kg, as any
int64 of nanograms is) is ``m / 2**s`` with ``s = 54 - floor(log2 f)`` and ``m = f * 2**s`` an
integer below 2**56, both exact whatever ``log2`` rounds to; then ``m * 10**12`` (below 10**29)
is divided by ``2**s`` (at most 2**102) in 38-digit integers, and the remainder decides the
rounding. A float below 2**-47 kg is under 0.01 ng: 0. So ``SUM(emissions_ng)`` over
``carbon_records`` equals ``carbonpipe report --json``'s ``emissions_ng`` to the nanogram.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("duckdb", "spark", "athena", "bigquery")
READ_SCHEMAS = ("carbonpipe.record/1", "carbonpipe.record/2")

# (name, type) of the JSON fields the views read; kinds: s string, d double, i integer,
# e the energy struct, l the location struct, m the measurement struct, k labels map.
_JSON_FIELDS = (
    ("record_id", "s"),
    ("schema", "s"),
    ("project", "s"),
    ("pipeline", "s"),
    ("run_id", "s"),
    ("step", "s"),
    ("team", "s"),
    ("attempt", "i"),
    ("started_at", "s"),
    ("ended_at", "s"),
    ("duration_s", "d"),
    ("status", "s"),
    ("energy_kwh", "e"),
    ("pue", "d"),
    ("intensity_g_per_kwh", "d"),
    ("emissions_kg_co2e", "d"),
    ("location", "l"),
    ("measurement", "m"),
    ("labels", "k"),
)
_ENERGY_PARTS = ("cpu", "gpu", "ram", "remote", "total")
_LOCATION_FIELDS = ("provider", "region", "country_iso")
# The columns of carbon_records, in order (both branches of its UNION give them all).
_RECORD_COLUMNS = (
    "record_id",
    "day",
    "project",
    "pipeline",
    "run_id",
    "step",
    "team",
    "attempt",
    "started_at",
    "ended_at",
    "duration_s",
    "status",
    "provider",
    "region",
    "country_iso",
    "method",
    *(f"energy_{p}_kwh" for p in _ENERGY_PARTS),
    "pue",
    "intensity_g_per_kwh",
    "emissions_kg_co2e",
    "labels",
    "energy_total_nwh",
    "emissions_ng",
    "source",
)
# A float below 2**-47 (7.1e-15) times 10**12 is below 0.01: it rounds to 0.
_TINY = "7.105427357601002e-15"


@dataclass(frozen=True)
class _Dialect:
    name: str
    string: str
    double: str
    bigint: str
    wide: str  # an integer type of 38 digits
    quote: str  # identifier quote
    create_view: str

    def q(self, name: str) -> str:
        return f"{self.quote}{name}{self.quote}"

    def log2(self, x: str) -> str:
        return f"LOG({x}, 2)" if self.name == "bigquery" else f"LOG2({x})"

    def int_type(self) -> str:
        return "INT64" if self.name == "bigquery" else "INT"

    def pow2(self, s: str) -> str:
        """``2**s`` as a wide integer, exactly (``s`` up to 124)."""
        if self.name == "duckdb":
            return f"(CAST(1 AS HUGEINT) << {s})"
        low = f"CAST(CAST(POWER(2, LEAST({s}, 62)) AS {self.bigint}) AS {self.wide})"
        high = f"CAST(CAST(POWER(2, GREATEST({s} - 62, 0)) AS {self.bigint}) AS {self.wide})"
        return f"({low} * {high})"

    def idiv(self, n: str, d: str) -> str:
        """``floor(n / d)`` of two non-negative wide integers, exactly."""
        return {
            "duckdb": f"({n} // {d})",
            "spark": f"({n} div {d})",
            "athena": f"(({n} - MOD({n}, {d})) / {d})",
            "bigquery": f"DIV({n}, {d})",
        }[self.name]

    def mod(self, n: str, d: str) -> str:
        return f"({n} % {d})" if self.name in ("duckdb", "spark") else f"MOD({n}, {d})"

    def timestamp(self, text: str) -> str:
        """An ISO-8601 text with an offset as the engine's UTC timestamp."""
        return {
            "duckdb": f"CAST({text} AS TIMESTAMPTZ)",
            "spark": f"TO_TIMESTAMP({text})",
            "athena": (
                f"CAST(FROM_ISO8601_TIMESTAMP_NANOS({text}) AT TIME ZONE 'UTC' AS TIMESTAMP(6))"
            ),
            "bigquery": f"TIMESTAMP({text})",
        }[self.name]

    def part_timestamp(self, column: str) -> str:
        return f"CAST({column} AS TIMESTAMP(6))" if self.name == "athena" else column

    def json_type(self, kind: str) -> str:
        s, d = self.string, self.double
        if self.name in ("duckdb", "bigquery", "athena"):
            sep = " " if self.name != "athena" else ":"
            struct = {"duckdb": "STRUCT({})", "athena": "struct<{}>"}.get(self.name, "STRUCT<{}>")
        else:
            sep, struct = ": ", "STRUCT<{}>"
        if self.name == "athena":
            s, d = "string", "double"

        def fields(names: tuple[str, ...], t: str) -> str:
            return struct.format(", ".join(f"{n}{sep}{t}" for n in names))

        return {
            "s": s,
            "d": d,
            "i": self.bigint if self.name != "athena" else "bigint",
            "e": fields(_ENERGY_PARTS, d),
            "l": fields(_LOCATION_FIELDS, s),
            "m": fields(("method",), s),
            "k": {
                "duckdb": "MAP(VARCHAR, VARCHAR)",
                "spark": "MAP<STRING, STRING>",
                "athena": "map<string,string>",
                "bigquery": "JSON",
            }[self.name],
        }[kind]


_DIALECTS = {
    "duckdb": _Dialect(
        "duckdb", "VARCHAR", "DOUBLE", "BIGINT", "HUGEINT", '"', "CREATE OR REPLACE VIEW"
    ),
    "spark": _Dialect(
        "spark",
        "STRING",
        "DOUBLE",
        "BIGINT",
        "DECIMAL(38, 0)",
        "`",
        "CREATE OR REPLACE TEMPORARY VIEW",
    ),
    "athena": _Dialect(
        "athena", "VARCHAR", "DOUBLE", "BIGINT", "DECIMAL(38, 0)", '"', "CREATE OR REPLACE VIEW"
    ),
    "bigquery": _Dialect(
        "bigquery", "STRING", "FLOAT64", "INT64", "BIGNUMERIC", "`", "CREATE OR REPLACE VIEW"
    ),
}


@dataclass(frozen=True)
class Sources:
    """Where the files are: the store's root as the engine names it, and what it holds."""

    root: str
    json_layouts: tuple[str, ...] = ("v2", "v1")  # the record layouts to read
    compacted: bool = True  # whether to read compacted parts
    dataset: str = "carbonpipe"  # BigQuery: the dataset the tables go in


def exact_e12(d: _Dialect, inner: str, values: dict[str, str], keep: list[str]) -> str:
    """``SELECT keep..., <out> ...`` over ``inner``: each ``values[out]`` (a double column of
    ``inner``) times 10**12, rounded half to even exactly, as a BIGINT column ``out``."""
    outs = list(values)
    s_cols = ", ".join(
        f"CASE WHEN {values[o]} >= {_TINY} THEN 54 - CAST(FLOOR({d.log2(values[o])}) AS "
        f"{d.int_type()}) END AS s_{o}"
        for o in outs
    )
    nd_cols = ", ".join(
        f"CAST(CAST({values[o]} * POWER(2, s_{o}) AS {d.bigint}) AS {d.wide}) "
        f"* CAST(1000000000000 AS {d.wide}) AS n_{o}, {d.pow2(f's_{o}')} AS d_{o}"
        for o in outs
    )
    qr_cols = ", ".join(
        f"{d.idiv(f'n_{o}', f'd_{o}')} AS q_{o}, {d.mod(f'n_{o}', f'd_{o}')} AS r_{o}" for o in outs
    )
    up = {
        o: f"CASE WHEN 2 * r_{o} > d_{o} OR (2 * r_{o} = d_{o} AND {d.mod(f'q_{o}', '2')} = 1) "
        f"THEN 1 ELSE 0 END"
        for o in outs
    }
    final = ", ".join(
        [*keep, *(f"CAST(COALESCE(q_{o} + {up[o]}, 0) AS {d.bigint}) AS {o}" for o in outs)]
    )
    return (
        f"SELECT {final} FROM (\n"
        f"  SELECT t3.*, {qr_cols} FROM (\n"
        f"    SELECT t2.*, {nd_cols} FROM (\n"
        f"      SELECT t1.*, {s_cols} FROM (\n{_indent(inner, 8)}\n"
        "      ) t1\n    ) t2\n  ) t3\n) t4"
    )


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def _json_files(d: _Dialect, src: Sources) -> list[str]:
    """The statements that define ``carbon_json_files`` (raw records, both layouts)."""
    cols = [(name, d.json_type(kind)) for name, kind in _JSON_FIELDS]
    layouts = src.json_layouts
    if d.name == "duckdb":
        globs = ", ".join(f"'{src.root}/records/{v}/date=*/*/*.json'" for v in layouts)
        spec = ", ".join(f"'{n}': '{t}'" for n, t in cols)
        return [
            f"{d.create_view} carbon_json_files AS\nSELECT * FROM read_json([{globs}],\n"
            f"  columns = {{{spec}}},\n"
            "  format = 'newline_delimited', ignore_errors = true, hive_partitioning = false)"
        ]
    if d.name == "spark":
        pattern = layouts[0] if len(layouts) == 1 else "{" + ",".join(layouts) + "}"
        spec = ",\n  ".join(f"{d.q(n)} {t}" for n, t in cols)
        return [
            f"{d.create_view} carbon_json_files (\n  {spec}\n) USING json\n"
            f"OPTIONS (path '{src.root}/records/{pattern}', recursiveFileLookup 'true',\n"
            "  pathGlobFilter '*.json', mode 'PERMISSIVE')"
        ]
    if d.name == "athena":
        spec = ",\n  ".join(f"`{n}` {t}" for n, t in cols)
        out = []
        for v in layouts:
            out.append(
                f"CREATE EXTERNAL TABLE IF NOT EXISTS carbon_json_{v} (\n  {spec}\n)\n"
                "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n"
                "WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')\n"
                f"LOCATION '{src.root}/records/{v}/'"
            )
        union = "\nUNION ALL\n".join(f"SELECT * FROM carbon_json_{v}" for v in layouts)
        out.append(f"{d.create_view} carbon_json_files AS\n{union}")
        return out
    spec = ",\n  ".join(f"{d.q(n)} {t}" for n, t in cols)
    uris = ", ".join(f"'{src.root}/records/{v}/*'" for v in layouts)
    return [
        f"CREATE OR REPLACE EXTERNAL TABLE `{src.dataset}.carbon_json_files` (\n  {spec}\n)\n"
        f"OPTIONS (format = 'NEWLINE_DELIMITED_JSON', uris = [{uris}],\n"
        "  ignore_unknown_values = TRUE, max_bad_records = 2147483647)"
    ]


def _name(d: _Dialect, src: Sources, table: str) -> str:
    return f"`{src.dataset}.{table}`" if d.name == "bigquery" else table


def _json_view(d: _Dialect, src: Sources) -> str:
    """``carbon_json``: one typed row per record id, with the exact integer columns."""
    readable = ", ".join(f"'{s}'" for s in READ_SCHEMAS)
    energy = ", ".join(f"energy_kwh.{p} AS energy_{p}_kwh" for p in _ENERGY_PARTS)
    typed = (
        "SELECT record_id, CAST(SUBSTR(ended_at, 1, 10) AS DATE) AS day, project, pipeline,\n"
        f"  run_id, step, team, CAST(attempt AS {d.bigint}) AS attempt,\n"
        f"  {d.timestamp('started_at')} AS started_at, {d.timestamp('ended_at')} AS ended_at,\n"
        "  duration_s, status, location.provider AS provider, location.region AS region,\n"
        "  location.country_iso AS country_iso, measurement.method AS method,\n"
        f"  {energy},\n"
        f"  pue, intensity_g_per_kwh, emissions_kg_co2e, labels\n"
        "FROM (\n"
        "  SELECT f.*, ROW_NUMBER() OVER (PARTITION BY record_id ORDER BY ended_at) AS copy_no\n"
        f"  FROM {_name(d, src, 'carbon_json_files')} f\n"
        f"  WHERE record_id IS NOT NULL AND {d.q('schema')} IN ({readable})\n"
        ") once WHERE copy_no = 1"
    )
    keep = [c for c in _RECORD_COLUMNS if c not in ("energy_total_nwh", "emissions_ng", "source")]
    body = exact_e12(
        d,
        typed,
        {"energy_total_nwh": "energy_total_kwh", "emissions_ng": "emissions_kg_co2e"},
        keep,
    )
    return f"{d.create_view} {_name(d, src, 'carbon_json')} AS\n{body}"


def _compacted(d: _Dialect, src: Sources) -> list[str]:
    """The statements that define ``carbon_compacted`` (the Parquet parts, typed rows)."""
    root = f"{src.root}/records/compact/v1"
    if d.name == "duckdb":
        files = (
            f"read_parquet('{root}/date=*/part.parquet', hive_partitioning = false, "
            "union_by_name = true)"
        )
        out: list[str] = []
    elif d.name == "spark":
        files = "carbon_compacted_files"
        out = [
            f"{d.create_view} carbon_compacted_files USING parquet\n"
            f"OPTIONS (path '{root}', recursiveFileLookup 'true', "
            "pathGlobFilter 'part.parquet')"
        ]
    elif d.name == "athena":
        files = "carbon_compacted_files"
        cols = [
            *(f"`{n}` string" for n in _PART_STRINGS),
            "`started_at` timestamp",
            "`ended_at` timestamp",
            "`attempt` int",
            *(f"`{n}` double" for n in _PART_DOUBLES),
            "`energy_total_nwh` bigint",
            "`emissions_ng` bigint",
            "`labels` map<string,string>",
        ]
        spec = ",\n  ".join(cols)
        out = [
            f"CREATE EXTERNAL TABLE IF NOT EXISTS carbon_compacted_files (\n  {spec}\n)\n"
            f"STORED AS PARQUET\nLOCATION '{root}/'"
        ]
    else:
        files = _name(d, src, "carbon_compacted_files")
        out = [
            f"CREATE OR REPLACE EXTERNAL TABLE {files}\n"
            f"OPTIONS (format = 'PARQUET', uris = ['{root}/*'], enable_list_inference = TRUE)"
        ]
    energy = ", ".join(f"energy_{p}_kwh" for p in _ENERGY_PARTS)
    labels = (
        "labels"
        if d.name != "bigquery"
        else "(SELECT JSON_OBJECT(IFNULL(ARRAY_AGG(kv.key), []), IFNULL(ARRAY_AGG(kv.value), []))\n"
        "    FROM UNNEST(labels.key_value) AS kv) AS labels"
    )
    out.append(
        f"{d.create_view} {_name(d, src, 'carbon_compacted')} AS\n"
        f"SELECT record_id, CAST({d.q('date')} AS DATE) AS day, project, pipeline, run_id,\n"
        f"  step, team, CAST(attempt AS {d.bigint}) AS attempt,\n"
        f"  {d.part_timestamp('started_at')} AS started_at, "
        f"{d.part_timestamp('ended_at')} AS ended_at,\n"
        "  duration_s, status, provider, region, country_iso, method,\n"
        f"  {energy},\n"
        f"  pue, intensity_g_per_kwh, emissions_kg_co2e, {labels},\n"
        f"  energy_total_nwh, emissions_ng, 'parquet' AS source\nFROM {files}"
    )
    return out


_PART_STRINGS = (
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
    "method",
)
_PART_DOUBLES = (
    "duration_s",
    *(f"energy_{p}_kwh" for p in _ENERGY_PARTS),
    "pue",
    "intensity_g_per_kwh",
    "emissions_kg_co2e",
)


def _records_view(d: _Dialect, src: Sources) -> str:
    cols = ", ".join(_RECORD_COLUMNS)
    json_cols = ", ".join(c if c != "source" else "'json' AS source" for c in _RECORD_COLUMNS)
    j = _name(d, src, "carbon_json")
    if not src.compacted:
        return f"{d.create_view} {_name(d, src, 'carbon_records')} AS\nSELECT {json_cols} FROM {j}"
    c = _name(d, src, "carbon_compacted")
    return (
        f"{d.create_view} {_name(d, src, 'carbon_records')} AS\n"
        f"SELECT {cols} FROM {c}\n"
        "UNION ALL\n"
        "-- JSON records no part holds: the days not compacted yet, and late records.\n"
        f"SELECT {json_cols} FROM {j} j\n"
        f"WHERE NOT EXISTS (SELECT 1 FROM {c} p WHERE p.record_id = j.record_id)"
    )


def _daily_view(d: _Dialect, src: Sources) -> str:
    keys = "day, team, pipeline, step, region"
    return (
        f"{d.create_view} {_name(d, src, 'carbon_daily')} AS\n"
        f"SELECT {keys}, COUNT(*) AS records,\n"
        "  SUM(energy_total_nwh) AS energy_nwh, SUM(emissions_ng) AS emissions_ng,\n"
        "  SUM(energy_total_nwh) / 1e12 AS energy_kwh, SUM(emissions_ng) / 1e12 AS "
        "emissions_kg_co2e\n"
        f"FROM {_name(d, src, 'carbon_records')}\nGROUP BY {keys}"
    )


def statements(engine: str, src: Sources) -> list[str]:
    """The SQL statements, in order, that define the views of ``engine`` over ``src``."""
    if engine not in _DIALECTS:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    d = _DIALECTS[engine]
    if not src.json_layouts:
        raise ValueError("the store holds no records yet: nothing to define views over")
    out = [*_json_files(d, src), _json_view(d, src)]
    if src.compacted:
        out += _compacted(d, src)
    return [*out, _records_view(d, src), _daily_view(d, src)]


def script(engine: str, src: Sources, *, store: str) -> str:
    """The whole script ``carbonpipe sql`` prints: a header, then each statement and ``;``."""
    header = [
        f"-- carbonpipe sql --engine {engine}: typed carbon_records and carbon_daily",
        f"-- over the store {store}",
        "-- carbon_records = compacted Parquet rows + the JSON records no part holds (late",
        "-- records once); emissions_ng and energy_total_nwh are exact integer sums.",
    ]
    body = [s.rstrip() + ";" for s in statements(engine, src)]
    return "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n"
