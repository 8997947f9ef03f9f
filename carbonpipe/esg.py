"""ESG reporting: aggregate a period's step records and write the report (json, csv, html, png).

Reading. Records are one JSON object per step attempt (``records/v1/date=.../pipeline=.../``);
a quarter can hold a million of them, too many to fetch one by one in a nightly job. So the
nightly job compacts each *closed* UTC day into one Parquet file::

    records/compact/v1/date=YYYY-MM-DD/part.parquet

The part lists the record ids it holds (and, in its metadata, the ids it skipped as invalid).
Reading a day lists that day's JSON keys, reads the part, and fetches only the JSON records the
part does not hold. A record that arrives after compaction (a spool replay, a late pod) is
therefore still counted, exactly once; a missing or unreadable part only makes the day slower.
Compaction never deletes JSON: records stay the source of truth for every other reader.

Exactness. Every figure is summed as integers (micro-watt-hours, micrograms, milliseconds), so
totals do not depend on the order in which days, parts or records are read, and a second run of
the same night writes byte-identical ``report.json`` and ``report.csv``.

``report.json`` (schema ``carbonpipe.esg_report/1``), top-level fields:

==========================  =====================================================================
``generated_for``           the period label (``2026-11``, ``2026-Q4``, ``2026`` or a date range);
                            the report carries no wall-clock time
``reporting_period``        label, kind, first and last UTC date, number of days
``organisation``            name and organisational boundary, from carbon.yaml ``esg:``
``ghg_scope``               which emissions fall in Scope 2 and Scope 3 Category 1, with the
                            statements and their sources (``data/esg.yaml``)
``emissions``               location-based kg and t CO2e, split by scope; market-based only when
                            configured, labelled with its factors
``energy_kwh``              cpu, gpu, ram, remote, total, and facility energy (local x PUE)
``activity``                step attempts, runs, failed attempts and their share, duration
``measurement``             energy and emissions by measurement method; estimated vs measured
``intensity_sources``       per location: intensity source, vintage, kind, energy-weighted g/kWh
``executive_summary``       totals, per team, per developer, everyday equivalents with sources,
                            budget utilisation, regressions
``team_breakdown``          per team; ``pipeline_breakdown`` per pipeline with its steps;
                            ``region_breakdown`` per location; ``daily`` and ``monthly`` series
``budgets``                 per configured budget and period window: used, limit, percent
``targets``                 per configured target: current value, target value, progress
``optimisation_impact``     top workloads, the lower-carbon region recommended for each and the
                            kg CO2e moving them would have saved
``recommendations``         prioritised actions, each with its quantified saving (or none)
``regressions``             carbon-regression alerts the period's records carry
``methodology``             the formula and the method notes (``data/esg.yaml``)
==========================  =====================================================================

All masses are kg CO2e unless a name says ``_t_``; shares are fractions in [0, 1]; percentages
say ``percent``.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import ConfigError, InvalidRecord, ObjectNotFound, PreconditionFailed
from carbonpipe.record import RECORDS_PREFIX, Record, parse_utc, partition_value, utc_iso
from carbonpipe.store import LocalStore, Store, StoredObject, open_store

if TYPE_CHECKING:
    import pyarrow as pa

    from carbonpipe.budget import Budget

log = logging.getLogger(__name__)

COMPACT_PREFIX = "records/compact/v1"
COMPACT_SCHEMA = "carbonpipe.compact/1"
REPORT_SCHEMA = "carbonpipe.esg_report/1"
ESG_PREFIX = "esg"
DATA_FILE = Path(__file__).parent / "data" / "esg.yaml"
CLOUD_PROVIDERS = ("gcp", "aws", "azure")
SCOPES = ("scope_2", "scope_3_category_1")
NO_TEAM = "(none)"
DEFAULT_SETTLE = timedelta(days=1)
# Priority of a recommendation by the share of the period's emissions it would save.
HIGH_PRIORITY_SHARE = 0.10
MEDIUM_PRIORITY_SHARE = 0.02
# An estimated-energy share above this makes "measure more" a recommendation.
ESTIMATED_SHARE_WORTH_FLAGGING = 0.25
# Steps with regressions get a recommendation each, up to this many; the rest share one.
REGRESSIONS_LISTED = 5

_UWH_PER_KWH = 1e9
_UG_PER_KG = 1e9
_UG_PER_G = 1e6
_MS_PER_S = 1e3

ProgressFn = Callable[[int, int, int], None]  # (days done, days in all, records so far)


# ---------------------------------------------------------------------------------------------
# Periods


@dataclass(frozen=True)
class Period:
    """A reporting period: inclusive UTC dates and the label artifacts are filed under."""

    label: str
    kind: str  # month | quarter | year | range
    start: date
    end: date  # inclusive

    @property
    def n_days(self) -> int:
        """Number of days in the period."""
        return (self.end - self.start).days + 1

    def days(self) -> list[date]:
        """Every UTC date in the period."""
        return [self.start + timedelta(days=i) for i in range(self.n_days)]

    def months(self) -> list[str]:
        """Every ``YYYY-MM`` the period touches."""
        return sorted({d.isoformat()[:7] for d in self.days()})

    @property
    def end_exclusive(self) -> datetime:
        """The first instant after the period (UTC)."""
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time(), timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        """Return the period as the report prints it."""
        return {
            "label": self.label,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.n_days,
            "timezone": "UTC",
        }


_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:_|\.\.)(\d{4}-\d{2}-\d{2})$")
PERIOD_FORMS = "YYYY (2026), YYYY-MM (2026-11), YYYY-Qn (2026-Q4) or START_END dates"


def parse_period(
    period: str | Period | None = None, *, start: date | None = None, end: date | None = None
) -> Period:
    """Parse ``2026``, ``2026-11``, ``2026-Q4`` or ``2026-11-03_2026-11-20``; or take start/end."""
    if isinstance(period, Period):
        return period
    if period is None:
        if start is None or end is None:
            raise ValueError(f"give a period ({PERIOD_FORMS}) or both start and end dates")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        return Period(f"{start.isoformat()}_{end.isoformat()}", "range", start, end)
    if start is not None or end is not None:
        raise ValueError("give a period or start/end dates, not both")
    text = str(period).strip()
    if m := _YEAR.match(text):
        y = int(m[1])
        return Period(text, "year", date(y, 1, 1), date(y, 12, 31))
    if m := _MONTH.match(text):
        y, mo = int(m[1]), int(m[2])
        return Period(text, "month", date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1]))
    if m := _QUARTER.match(text):
        y, q = int(m[1]), int(m[2])
        first = 3 * q - 2
        last = date(y, first + 2, calendar.monthrange(y, first + 2)[1])
        return Period(f"{y:04d}-Q{q}", "quarter", date(y, first, 1), last)
    if m := _RANGE.match(text):
        try:
            a, b = date.fromisoformat(m[1]), date.fromisoformat(m[2])
        except ValueError as exc:
            raise ValueError(f"period {period!r}: {exc}") from None
        return parse_period(None, start=a, end=b)
    raise ValueError(f"period {period!r} is not one of {PERIOD_FORMS}")


# ---------------------------------------------------------------------------------------------
# Configuration: the ``esg:`` section of carbon.yaml


@dataclass(frozen=True, kw_only=True)
class MarketFactor:
    """A contractual (market-based) emission factor for one provider, or one of its regions."""

    provider: str
    region: str | None
    intensity_g_per_kwh: float
    source: str
    vintage: str


@dataclass(frozen=True, kw_only=True)
class Target:
    """A sustainability target: an annual reduction against a baseline, or an intensity cap."""

    name: str
    scope: str = "all"  # all | team:NAME | pipeline:NAME
    reduction_percent: float | None = None
    baseline_kg_co2e: float | None = None  # per year
    baseline_year: str | None = None
    target_year: int | None = None
    max_intensity_g_per_kwh: float | None = None


@dataclass(frozen=True, kw_only=True)
class EsgConfig:
    """What carbon.yaml says about the report: organisation, boundary, teams, targets."""

    organisation: str = ""
    boundary: Mapping[str, Any] = field(default_factory=dict)
    team_sizes: Mapping[str, int] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    market_label: str = ""
    market_factors: tuple[MarketFactor, ...] = ()
    own_compute_scope: str = "scope_2"
    top_workloads: int = 5
    budgets: tuple[Budget, ...] = ()


_ESG_KEYS = (
    "organisation",
    "boundary",
    "team_sizes",
    "targets",
    "market_based",
    "own_compute_scope",
    "top_workloads",
    "regression",
)


def load_esg_config(source: Mapping[str, Any] | str | Path | None = None) -> EsgConfig:
    """Build the report's configuration from carbon.yaml (a path, its parsed mapping, or found)."""
    if source is None or isinstance(source, (str, Path)):
        from carbonpipe.config import load_config_file

        data, _ = load_config_file(source)
    else:
        data = dict(source)
    section = data.get("esg") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"esg: must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(_ESG_KEYS))
    if unknown:
        raise ConfigError(f"esg: unknown key(s) {unknown}; accepted: {', '.join(_ESG_KEYS)}")
    budgets: tuple[Budget, ...] = ()
    if data.get("budgets") is not None:
        from carbonpipe.budget import load_budgets

        budgets = tuple(load_budgets(data))
    boundary = section.get("boundary") or {}
    if isinstance(boundary, str):
        boundary = {"description": boundary}
    if not isinstance(boundary, Mapping):
        raise ConfigError(
            "esg.boundary: must be a mapping {approach, description, includes, excludes}"
        )
    sizes = section.get("team_sizes") or {}
    if not isinstance(sizes, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()
    ):
        raise ConfigError("esg.team_sizes: must map team names to whole numbers of developers > 0")
    scope = section.get("own_compute_scope", "scope_2")
    if scope not in SCOPES:
        raise ConfigError(f"esg.own_compute_scope: {scope!r} is not one of {', '.join(SCOPES)}")
    top = section.get("top_workloads", 5)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"esg.top_workloads: must be a whole number >= 0, got {top!r}")
    label, factors = _market(section.get("market_based"))
    return EsgConfig(
        organisation=str(section.get("organisation") or ""),
        boundary=dict(boundary),
        team_sizes={str(k): int(v) for k, v in sizes.items()},
        targets=tuple(_target(i, t) for i, t in enumerate(section.get("targets") or [])),
        market_label=label,
        market_factors=factors,
        own_compute_scope=scope,
        top_workloads=top,
        budgets=budgets,
    )


def _number(where: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _market(section: Any) -> tuple[str, tuple[MarketFactor, ...]]:
    if not section:
        return "", ()
    if not isinstance(section, Mapping) or not isinstance(section.get("factors"), list):
        raise ConfigError("esg.market_based: must be a mapping with a 'factors' list")
    factors = []
    for i, f in enumerate(section["factors"]):
        where = f"esg.market_based.factors[{i}]"
        if not isinstance(f, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        for name in ("provider", "source", "vintage"):
            if not isinstance(f.get(name), (str, int)) or not str(f.get(name)).strip():
                raise ConfigError(f"{where}.{name}: required (the factor's origin must be cited)")
        factors.append(
            MarketFactor(
                provider=str(f["provider"]),
                region=str(f["region"]) if f.get("region") else None,
                intensity_g_per_kwh=_number(
                    f"{where}.intensity_g_per_kwh", f.get("intensity_g_per_kwh")
                ),
                source=" ".join(str(f["source"]).split()),
                vintage=str(f["vintage"]),
            )
        )
    label = str(section.get("label") or "market-based (configured contractual factors)")
    return label, tuple(factors)


def _target(i: int, t: Any) -> Target:
    where = f"esg.targets[{i}]"
    if not isinstance(t, Mapping) or not t.get("name"):
        raise ConfigError(f"{where}: must be a mapping with a name")
    scope = str(t.get("scope", "all"))
    if scope != "all" and scope.partition(":")[0] not in ("team", "pipeline"):
        raise ConfigError(f"{where}.scope: {scope!r} is not all, team:NAME or pipeline:NAME")
    if "max_intensity_g_per_kwh" in t:
        cap = _number(
            f"{where}.max_intensity_g_per_kwh", t["max_intensity_g_per_kwh"], positive=True
        )
        return Target(name=str(t["name"]), scope=scope, max_intensity_g_per_kwh=cap)
    for need in ("reduction_percent", "baseline_kg_co2e"):
        if need not in t:
            raise ConfigError(
                f"{where}.{need}: required (or give max_intensity_g_per_kwh for an intensity target)"
            )
    reduction = _number(f"{where}.reduction_percent", t["reduction_percent"], positive=True)
    if reduction > 100:
        raise ConfigError(f"{where}.reduction_percent: must be <= 100, got {reduction}")
    target_year = t.get("target_year")
    if target_year is not None and (
        isinstance(target_year, bool) or not isinstance(target_year, int)
    ):
        raise ConfigError(f"{where}.target_year: must be a year, got {target_year!r}")
    return Target(
        name=str(t["name"]),
        scope=scope,
        reduction_percent=reduction,
        baseline_kg_co2e=_number(f"{where}.baseline_kg_co2e", t["baseline_kg_co2e"], positive=True),
        baseline_year=str(t["baseline_year"]) if t.get("baseline_year") is not None else None,
        target_year=target_year,
    )


@lru_cache(maxsize=1)
def statements() -> dict[str, Any]:
    """Return ``data/esg.yaml``: the GHG Protocol statements and method notes, with sources."""
    import yaml

    doc = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("schema") != "carbonpipe.esg/1":
        raise ValueError(f"{DATA_FILE}: expected schema carbonpipe.esg/1")
    for name, s in doc["statements"].items():
        missing = [k for k in ("title", "statement", "source", "vintage") if not s.get(k)]
        if missing:
            raise ValueError(f"{DATA_FILE}: statement {name!r} lacks {', '.join(missing)}")
    return doc


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
    "started_at",
    "ended_at",
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
    import pyarrow as pa

    def text(name: str) -> pa.DataType:
        if dictionary and name in _DICT_COLUMNS:
            return pa.dictionary(pa.int32(), pa.string())
        return pa.string()

    return pa.schema(
        [pa.field(n, text(n)) for n in _STRING_COLUMNS]
        + [pa.field("attempt", pa.int32())]
        + [pa.field(n, pa.float64()) for n in _FLOAT_COLUMNS]
    )


def _records_table(records: Sequence[Record], day: str) -> pa.Table:
    """Flatten records into the compaction schema (column order of ``_arrow_schema``)."""
    import pyarrow as pa

    rows = []
    for r in sorted(records, key=lambda r: r.record_id):
        e, loc, src = r.energy_kwh, r.location, r.intensity_source
        alerts = [a for a in r.alerts if isinstance(a, dict)]
        rows.append(
            (
                r.record_id,
                day,
                r.project,
                r.pipeline,
                r.run_id,
                r.step,
                r.team,
                _canonical_utc(r.started_at),
                _canonical_utc(r.ended_at),
                r.status,
                loc.get("provider"),
                loc.get("region"),
                loc.get("country_iso"),
                loc.get("detected_by"),
                src.get("name"),
                src.get("vintage"),
                src.get("kind"),
                r.measurement.get("method"),
                json.dumps(alerts, sort_keys=True) if alerts else None,
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
                _remote_kg(r),
            )
        )
    schema = _arrow_schema()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = [pa.array(col, f.type) for col, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


_CANONICAL_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def _canonical_utc(text: str) -> str:
    """Return ``text`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (records the tracker writes already are)."""
    return text if _CANONICAL_UTC.match(text) else utc_iso(parse_utc(text))


def _remote_kg(r: Record) -> float:
    total = 0.0
    for item in r.remote:
        value = item.get("emissions_kg_co2e") if isinstance(item, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            total += max(float(value), 0.0)
    return total


def _record_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1][: -len(".json")]


def _day_prefix(day: str, pipeline: str | None = None) -> str:
    prefix = f"{RECORDS_PREFIX}/date={day}/"
    return prefix + f"pipeline={partition_value(pipeline)}/" if pipeline else prefix


def _list_day(store: Store, day: str, pipeline: str | None = None) -> tuple[list[str], list[str]]:
    """Return the JSON record keys of one day (of one pipeline) and their record ids."""
    prefix = _day_prefix(day, pipeline)
    if not isinstance(store, LocalStore):
        found = [k for k in store.list(prefix) if k.endswith(".json")]
        return found, [_record_id_of(k) for k in found]
    # A million keys through the generic os.walk listing cost seconds; two listdir levels
    # of the same folders cost a fraction of that, with the same result (dot-files skipped).
    try:
        folders = (
            [prefix]
            if pipeline
            else [
                f"{prefix}{name}/"
                for name in os.listdir(store.root / prefix)
                if name.startswith("pipeline=")
            ]
        )
    except (FileNotFoundError, NotADirectoryError):
        return [], []
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
    return keys, ids


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    if obj is None:
        return None
    try:
        table = pq.ParquetFile(pa.BufferReader(obj.data), read_dictionary=_DICT_COLUMNS).read(
            use_threads=False
        )
        meta = table.schema.metadata or {}
        if meta.get(b"schema") != COMPACT_SCHEMA.encode():
            raise ValueError(f"schema is {meta.get(b'schema')!r}, not {COMPACT_SCHEMA}")
        skipped = frozenset(json.loads(meta.get(b"skipped", b"[]")))
        schema = _arrow_schema(dictionary=True)
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError, KeyError) as exc:
        # Readers fall back to the JSON records; the next compaction rewrites the part.
        log.warning("carbonpipe: ignoring unreadable compacted part %s: %s", part_key(day), exc)
        return None
    return _Part(table, skipped, obj.version)


def _read_part(store: Store, day: str) -> _Part | None:
    return _decode_part(_get_part(store, day), day)


def _pending(keys: list[str], ids: list[str], part: _Part | None) -> list[str]:
    """Return the listed keys whose records the part neither holds nor skipped as invalid."""
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


def compact_day(store: Store, day: date | str, *, workers: int = 8) -> Compaction:
    """Fold a day's JSON records that its part lacks into the part (create or compare-and-swap)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = day.isoformat() if isinstance(day, date) else day
    keys, ids = _list_day(store, day)
    part = _read_part(store, day)
    new_keys = _pending(keys, ids, part)
    if not new_keys:
        return Compaction(
            day, part.table.num_rows if part else 0, 0, len(part.skipped) if part else 0, False
        )
    if isinstance(store, LocalStore):  # parsing holds the GIL: threads only help remote reads
        fetched = [(k, _fetch(store, k)) for k in new_keys]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fetched = list(pool.map(lambda k: (k, _fetch(store, k)), new_keys))
    records = [r for _, r in fetched if r is not None]
    skipped = set(part.skipped if part else ()) | {
        _record_id_of(k) for k, r in fetched if r is None
    }
    tables = [part.table.cast(_arrow_schema())] if part else []
    tables.append(_records_table(records, day))
    table = pa.concat_tables(tables)
    table = table.take(pa.compute.sort_indices(table, [("record_id", "ascending")]))
    table = table.replace_schema_metadata(
        {"schema": COMPACT_SCHEMA, "date": day, "skipped": json.dumps(sorted(skipped))}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    try:
        if part is None:
            store.put_if_absent(
                part_key(day), buf.getvalue(), content_type="application/vnd.apache.parquet"
            )
        else:
            store.replace(
                part_key(day),
                buf.getvalue(),
                if_version=part.version,
                content_type="application/vnd.apache.parquet",
            )
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
) -> list[Compaction]:
    """Compact every closed day of ``period`` (days still open are left to the JSON path)."""
    store = open_store(store)
    days = closed_days(parse_period(period), now=now, settle=settle)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda d: compact_day(store, d), days))


# ---------------------------------------------------------------------------------------------
# Aggregation


_KEYS = (
    "date",
    "month",
    "team",
    "pipeline",
    "step",
    "provider",
    "region",
    "country_iso",
    "source_name",
    "source_vintage",
    "source_kind",
    "method",
)
_SUMS = (
    "records",
    "failed",
    "estimated",
    "cpu_uwh",
    "gpu_uwh",
    "ram_uwh",
    "remote_uwh",
    "total_uwh",
    "facility_uwh",
    "emissions_ug",
    "local_ug",
    "remote_ug",
    "failed_ug",
    "estimated_uwh",
    "estimated_ug",
    "duration_ms",
)
_RUN_KEYS = ("month", "team", "pipeline", "run_id")


def _reduce(t: pa.Table, day: str) -> tuple[pa.Table, pa.Table, list[dict[str, Any]]]:
    """Reduce one day's rows to its cube, its distinct runs and its regression alerts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def ints(values: Any, scale: float) -> pa.Array:
        return pc.cast(pc.round(pc.multiply(values, scale)), pa.int64())

    def when(mask: Any, values: Any) -> Any:
        return pc.if_else(mask, values, pa.scalar(0, pa.int64()))

    def constant(value: str, n: int) -> pa.Array:
        return pa.array([value] * n, pa.string())

    def text(column: Any) -> Any:
        return pc.fill_null(pc.cast(column, pa.string()), "")

    local_kwh = pc.add(pc.add(t["energy_cpu_kwh"], t["energy_gpu_kwh"]), t["energy_ram_kwh"])
    facility_kwh = pc.multiply(local_kwh, t["pue"])
    failed = pc.not_equal(t["status"], "succeeded")
    estimated = pc.equal(t["method"], "estimate")
    emissions_ug = ints(t["emissions_kg_co2e"], _UG_PER_KG)
    total_uwh = ints(t["energy_total_kwh"], _UWH_PER_KWH)
    # The day is one value here: it is added after grouping instead of hashed with the rest.
    group_keys = [k for k in _KEYS if k not in ("date", "month")]
    columns: dict[str, Any] = {k: t[k] for k in group_keys}
    columns.update(
        {
            "failed": pc.cast(failed, pa.int64()),
            "estimated": pc.cast(estimated, pa.int64()),
            "cpu_uwh": ints(t["energy_cpu_kwh"], _UWH_PER_KWH),
            "gpu_uwh": ints(t["energy_gpu_kwh"], _UWH_PER_KWH),
            "ram_uwh": ints(t["energy_ram_kwh"], _UWH_PER_KWH),
            "remote_uwh": ints(t["energy_remote_kwh"], _UWH_PER_KWH),
            "total_uwh": total_uwh,
            "facility_uwh": ints(facility_kwh, _UWH_PER_KWH),
            "emissions_ug": emissions_ug,
            "local_ug": ints(pc.multiply(facility_kwh, t["intensity_g_per_kwh"]), _UG_PER_G),
            "remote_ug": ints(t["remote_emissions_kg_co2e"], _UG_PER_KG),
            "failed_ug": when(failed, emissions_ug),
            "estimated_uwh": when(estimated, total_uwh),
            "estimated_ug": when(estimated, emissions_ug),
            "duration_ms": ints(t["duration_s"], _MS_PER_S),
        }
    )
    grouped = (
        pa.table(columns)
        .group_by(group_keys, use_threads=False)
        .aggregate([("failed", "count")] + [(s, "sum") for s in _SUMS if s != "records"])
    )
    n = grouped.num_rows
    cube = pa.table(
        {"date": constant(day, n), "month": constant(day[:7], n)}
        | {k: text(grouped[k]) for k in group_keys}
        | {"records": grouped["failed_count"]}
        | {s: grouped[f"{s}_sum"] for s in _SUMS if s != "records"}
    )
    runs = (
        pa.table({"team": t["team"], "pipeline": t["pipeline"], "run_id": t["run_id"]})
        .group_by(["team", "pipeline", "run_id"], use_threads=False)
        .aggregate([])
    )
    runs = pa.table(
        {
            "month": constant(day[:7], runs.num_rows),
            "team": text(runs["team"]),
            "pipeline": text(runs["pipeline"]),
            "run_id": runs["run_id"],
        }
    )
    alerts: list[dict[str, Any]] = []
    with_alerts = t.filter(pc.is_valid(t["alerts_json"]))
    for row in with_alerts.select(["record_id", "team", "alerts_json"]).to_pylist():
        for alert in json.loads(row["alerts_json"]):
            if isinstance(alert, dict) and alert.get("kind") == "carbon_regression":
                alerts.append(
                    {**alert, "record_id": row["record_id"], "date": day, "team": row["team"]}
                )
    return cube, runs, alerts


@dataclass(frozen=True)
class ReadStats:
    """Where the records came from (not part of the report: it changes as days are compacted)."""

    days: int = 0
    compacted_records: int = 0
    json_records: int = 0
    invalid_records: int = 0


def _day_table(
    store: Store,
    day: str,
    pipeline: str | None,
    listing: tuple[list[str], list[str]],
    part_obj: StoredObject | None,
    fetch_pool: ThreadPoolExecutor | None,
) -> tuple[pa.Table | None, ReadStats]:
    """One day's rows: its part (if any) plus the JSON records the part lacks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys, ids = listing
    part = _decode_part(part_obj, day)
    pending = _pending(keys, ids, part)
    tables = []
    compacted = 0
    if part is not None:
        table = part.table
        if pipeline is not None:
            table = table.filter(pc.equal(table["pipeline"], pipeline))
        compacted = table.num_rows
        if pending:  # rare: records that arrived after compaction
            table = table.cast(_arrow_schema())
        tables.append(table)
    if fetch_pool is None:
        fetched = [_fetch(store, k) for k in pending]
    else:
        fetched = list(fetch_pool.map(lambda k: _fetch(store, k), pending))
    records = [r for r in fetched if r is not None]
    if pipeline is not None:
        records = [r for r in records if r.pipeline == pipeline]
    if records:
        tables.append(_records_table(records, day))
    stats = ReadStats(
        1, compacted, len(records), len(fetched) - sum(r is not None for r in fetched)
    )
    if not tables:
        return None, stats
    return (tables[0] if len(tables) == 1 else pa.concat_tables(tables)), stats


@dataclass(frozen=True)
class Metrics:
    """Totals of a set of cube rows, with units in the names; built from exact integer sums."""

    sums: tuple[int, ...]
    runs: int | None = None

    def _s(self, name: str) -> int:
        return self.sums[_SUMS.index(name)]

    @property
    def records(self) -> int:
        """Step attempts."""
        return self._s("records")

    @property
    def emissions_kg_co2e(self) -> float:
        """Location-based emissions."""
        return self._s("emissions_ug") / _UG_PER_KG

    @property
    def emissions_t_co2e(self) -> float:
        """Location-based emissions in tonnes."""
        return self._s("emissions_ug") / (_UG_PER_KG * 1000)

    @property
    def energy_total_kwh(self) -> float:
        """Energy of every device, local and remote."""
        return self._s("total_uwh") / _UWH_PER_KWH

    @property
    def facility_energy_kwh(self) -> float:
        """Local device energy times PUE: what the grid supplied to the data centre."""
        return self._s("facility_uwh") / _UWH_PER_KWH

    @property
    def intensity_g_per_kwh(self) -> float | None:
        """Grid intensity weighted by the facility energy it applied to."""
        uwh = self._s("facility_uwh")
        return None if uwh == 0 else self._s("local_ug") / uwh * 1000.0

    @property
    def failed_attempt_share(self) -> float:
        """Share of attempts that did not succeed."""
        return _share(self._s("failed"), self.records)

    @property
    def estimated_energy_share(self) -> float:
        """Share of energy that was estimated rather than measured."""
        return _share(self._s("estimated_uwh"), self._s("total_uwh"))

    def energy_dict(self) -> dict[str, float]:
        """Energy per device in kWh."""
        return {
            part: self._s(f"{part}_uwh") / _UWH_PER_KWH
            for part in ("cpu", "gpu", "ram", "remote", "total")
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the figures every breakdown row carries."""
        out: dict[str, Any] = {
            "records": self.records,
            "failed_attempts": self._s("failed"),
            "failed_attempt_share": _share(self._s("failed"), self.records),
            "energy_kwh": self.energy_dict(),
            "facility_energy_kwh": self.facility_energy_kwh,
            "emissions_kg_co2e": self.emissions_kg_co2e,
            "intensity_g_per_kwh": _round(self.intensity_g_per_kwh, 4),
            "estimated_energy_share": _share(self._s("estimated_uwh"), self._s("total_uwh")),
            "duration_h": self._s("duration_ms") / 3.6e6,
        }
        if self.runs is not None:
            out["runs"] = self.runs
        return out


def _share(part: int | float, whole: int | float) -> float:
    return 0.0 if not whole else round(part / whole, 6)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


_ZERO = tuple([0] * len(_SUMS))


@dataclass(frozen=True)
class Aggregate:
    """A period's records as an Arrow cube of exact integer sums, plus runs and alerts.

    The cube has one row per (date, team, pipeline, step, location, intensity source,
    measurement method) and the integer columns of ``_SUMS``; every breakdown is a group-by
    over it, so a report over a million records costs a few hundred small group-bys.
    """

    period: Period
    cube: pa.Table
    runs: Mapping[tuple[str, ...], int]  # distinct runs per (month, team, pipeline)
    runs_by: Mapping[str, Mapping[str, int]]  # distinct runs per team, per pipeline, and "total"
    alerts: tuple[dict[str, Any], ...]
    stats: ReadStats = ReadStats()
    pipeline: str | None = None

    def _select(self, scope: str) -> pa.Table:
        import pyarrow.compute as pc

        if scope == "all":
            return self.cube
        kind, _, name = scope.partition(":")
        if kind not in ("team", "pipeline"):
            raise ValueError(f"scope {scope!r} is not all, team:NAME or pipeline:NAME")
        return self.cube.filter(pc.equal(self.cube[kind], name))

    def totals(self, scope: str = "all") -> Metrics:
        """Sum the cube, or the part of it in ``scope`` (``all``, ``team:X``, ``pipeline:X``)."""
        table = self._select(scope)
        sums = tuple(int(table[s].combine_chunks().sum().as_py() or 0) for s in _SUMS)
        runs = self.runs_by["total"].get("", 0) if scope == "all" else None
        if scope != "all":
            kind, _, name = scope.partition(":")
            runs = self.runs_by.get(kind, {}).get(name)
        return Metrics(sums, runs)

    def breakdown(self, *dims: str, scope: str = "all") -> list[tuple[tuple[str, ...], Metrics]]:
        """Group the cube by some of its key columns; sorted by key."""
        unknown = [d for d in dims if d not in _KEYS]
        if unknown or not dims:
            raise ValueError(f"breakdown dimensions {unknown or dims} not among {_KEYS}")
        table = self._select(scope)
        if table.num_rows == 0:
            return []
        grouped = table.group_by(list(dims), use_threads=False).aggregate(
            [(s, "sum") for s in _SUMS]
        )
        keys = [grouped[d].to_pylist() for d in dims]
        sums = [grouped[f"{s}_sum"].to_pylist() for s in _SUMS]
        runs = self.runs_by.get(dims[0], {}) if len(dims) == 1 else {}
        out = []
        for i in range(grouped.num_rows):
            key = tuple(k[i] for k in keys)
            metrics = Metrics(tuple(int(c[i]) for c in sums), runs.get(key[0]) if runs else None)
            out.append((key, metrics))
        out.sort(key=lambda item: item[0])
        return out


def aggregate(
    store: Store | str,
    period: str | Period,
    *,
    pipeline: str | None = None,
    progress: ProgressFn | None = None,
    workers: int = 4,
    fetch_workers: int = 16,
) -> Aggregate:
    """Read every record of ``period`` (compacted parts plus JSON they lack) and sum it up."""
    import pyarrow as pa

    store = open_store(store)
    per = parse_period(period)
    days = [d.isoformat() for d in per.days()]
    cubes: list[pa.Table] = []
    runs: list[pa.Table] = []
    alerts: list[dict[str, Any]] = []
    stats = [0, 0, 0, 0]
    if progress:
        progress(0, len(days), 0)

    def fetch_day(day: str) -> tuple[tuple[list[str], list[str]], StoredObject | None]:
        return _list_day(store, day, pipeline), _get_part(store, day)

    # Threads only wait on the network (listing, GETs); decoding and reducing stay on this
    # thread, because on a small machine threads fighting over the GIL cost more than they win.
    remote = not isinstance(store, LocalStore)
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as day_pool,
        ThreadPoolExecutor(max_workers=max(1, fetch_workers)) as fetch_pool,
    ):
        ahead = max(1, workers) * 2 if remote else 0
        queued = {i: day_pool.submit(fetch_day, d) for i, d in enumerate(days[:ahead])}
        for i, day in enumerate(days):
            if remote:
                if i + ahead < len(days):
                    queued[i + ahead] = day_pool.submit(fetch_day, days[i + ahead])
                listing, part_obj = queued.pop(i).result()  # popped: its bytes go with it
            else:
                listing, part_obj = fetch_day(day)
            table, st = _day_table(
                store, day, pipeline, listing, part_obj, fetch_pool if remote else None
            )
            if table is not None and table.num_rows:
                cube, day_runs, day_alerts = _reduce(table, day)
                cubes.append(cube)
                runs.append(day_runs)
                alerts.extend(day_alerts)
            for j, v in enumerate(
                (st.days, st.compacted_records, st.json_records, st.invalid_records)
            ):
                stats[j] += v
            if progress:
                progress(i + 1, len(days), stats[1] + stats[2])
    run_counts: dict[tuple[str, ...], int] = {}
    runs_by: dict[str, dict[str, int]] = {"team": {}, "pipeline": {}, "total": {"": 0}}
    cube = pa.concat_tables(cubes) if cubes else _empty_cube()
    if runs:
        run_counts, runs_by = _count_runs(pa.concat_tables(runs))
    alerts.sort(
        key=lambda a: (a.get("date", ""), a.get("pipeline", ""), a.get("step", ""), a["record_id"])
    )
    return Aggregate(
        period=per,
        cube=cube,
        runs=run_counts,
        runs_by=runs_by,
        alerts=tuple(alerts),
        stats=ReadStats(*stats),
        pipeline=pipeline,
    )


def _empty_cube() -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {k: pa.array([], pa.string()) for k in _KEYS} | {s: pa.array([], pa.int64()) for s in _SUMS}
    )


def _count_runs(table: pa.Table) -> tuple[dict[tuple[str, ...], int], dict[str, dict[str, int]]]:
    distinct = table.group_by(list(_RUN_KEYS), use_threads=False).aggregate([])
    per_month = distinct.group_by(["month", "team", "pipeline"], use_threads=False).aggregate(
        [("run_id", "count")]
    )
    counts: dict[tuple[str, ...], int] = {
        (r["month"], r["team"], r["pipeline"]): r["run_id_count"] for r in per_month.to_pylist()
    }
    runs = distinct.group_by(["team", "pipeline", "run_id"], use_threads=False).aggregate([])
    by: dict[str, dict[str, int]] = {"total": {"": runs.num_rows}}
    for dim in ("team", "pipeline"):
        grouped = runs.group_by([dim], use_threads=False).aggregate([("run_id", "count")])
        by[dim] = {r[dim]: r["run_id_count"] for r in grouped.to_pylist()}
    return counts, by


# ---------------------------------------------------------------------------------------------
# The report


def _team(name: str) -> str:
    return name or NO_TEAM


def _scope_of(provider: str, config: EsgConfig) -> str:
    return "scope_3_category_1" if provider in CLOUD_PROVIDERS else config.own_compute_scope


def _applies_to(scope: str, config: EsgConfig) -> str:
    cloud = f"steps whose location names a cloud provider ({', '.join(CLOUD_PROVIDERS)})"
    own = "steps with no cloud provider (hardware the organisation operates)"
    if scope == "scope_3_category_1":
        return cloud if config.own_compute_scope == "scope_2" else f"{cloud}, and {own}"
    return own if config.own_compute_scope == "scope_2" else "none (esg.own_compute_scope)"


def _market_factor(config: EsgConfig, provider: str, region: str) -> MarketFactor | None:
    exact = [f for f in config.market_factors if f.provider == provider and f.region == region]
    loose = [f for f in config.market_factors if f.provider == provider and f.region is None]
    found = exact or loose
    return found[0] if found else None


def build_report(
    agg: Aggregate, config: EsgConfig | None = None, *, store: Store | None = None
) -> dict[str, Any]:
    """Assemble ``report.json`` (see the module docstring) from an aggregate and carbon.yaml."""
    config = config or EsgConfig()
    doc = statements()
    total = agg.totals()
    total_kg = total.emissions_kg_co2e
    per = agg.period

    by_scope: dict[str, int] = dict.fromkeys(SCOPES, 0)
    for (provider,), m in agg.breakdown("provider"):
        by_scope[_scope_of(provider, config)] += m._s("emissions_ug")
    emissions: dict[str, Any] = {
        "method": "location-based",
        "location_based_kg_co2e": total_kg,
        "location_based_t_co2e": total.emissions_t_co2e,
        "by_scope_kg_co2e": {s: v / _UG_PER_KG for s, v in by_scope.items()},
        "market_based": _market_based(agg, config),
    }
    ghg = {
        "classification": [
            {
                "scope": scope,
                "applies_to": _applies_to(scope, config),
                "emissions_kg_co2e": by_scope[scope] / _UG_PER_KG,
                "share": _share(by_scope[scope], sum(by_scope.values())),
            }
            for scope in SCOPES
        ],
        "statements": doc["statements"],
    }
    teams = _team_breakdown(agg, config, total_kg)
    budgets = _budgets(agg, config, store)
    regressions = list(agg.alerts)
    impact = _optimisation_impact(agg, config, total_kg)
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_for": per.label,
        "reporting_period": per.to_dict(),
        "organisation": {
            "name": config.organisation,
            "boundary": dict(config.boundary),
            "pipeline_filter": agg.pipeline,
        },
        "ghg_scope": ghg,
        "emissions": emissions,
        "energy_kwh": {**total.energy_dict(), "facility_incl_pue": total.facility_energy_kwh},
        "activity": {
            "step_attempts": total.records,
            "runs": total.runs or 0,
            "failed_attempts": total.to_dict()["failed_attempts"],
            "failed_attempt_share": _share(total._s("failed"), total.records),
            "duration_h": total.to_dict()["duration_h"],
        },
        "measurement": _measurement(agg, total),
        "intensity_sources": _sources(agg),
        "executive_summary": _summary(agg, config, total, teams, budgets, regressions),
        "team_breakdown": teams,
        "pipeline_breakdown": _pipeline_breakdown(agg, total_kg),
        "region_breakdown": _region_breakdown(agg, config, total_kg),
        "daily": _daily(agg),
        "monthly": [{"month": k[0], **m.to_dict()} for k, m in agg.breakdown("month")],
        "budgets": budgets,
        "targets": _targets(agg, config),
        "optimisation_impact": impact,
        "recommendations": _recommendations(agg, total, impact, regressions),
        "regressions": regressions,
        "methodology": {
            **doc["methodology"],
            "emission_factors_in_use": sorted(
                {f"{s['name']} ({s['vintage']})" for s in _sources(agg)}
            ),
        },
    }
    return report


def _market_based(agg: Aggregate, config: EsgConfig) -> dict[str, Any] | None:
    if not config.market_factors:
        return None
    covered_uwh = 0
    ug = 0.0
    for (provider, region), m in agg.breakdown("provider", "region"):
        s = dict(zip(_SUMS, m.sums, strict=True))
        factor = _market_factor(config, provider, region)
        if factor is None:
            ug += s["emissions_ug"]  # location-based where no contractual factor exists
            continue
        covered_uwh += s["facility_uwh"]
        ug += (
            s["facility_uwh"] / _UWH_PER_KWH * factor.intensity_g_per_kwh * _UG_PER_G
            + s["remote_ug"]
        )
    facility = agg.totals()._s("facility_uwh")
    return {
        "label": config.market_label,
        "kg_co2e": round(ug) / _UG_PER_KG,
        "covered_energy_share": _share(covered_uwh, facility),
        "uncovered": "location-based figure used where no contractual factor is configured",
        "factors": [
            {
                "provider": f.provider,
                "region": f.region,
                "intensity_g_per_kwh": f.intensity_g_per_kwh,
                "source": f.source,
                "vintage": f.vintage,
            }
            for f in config.market_factors
        ],
    }


def _measurement(agg: Aggregate, total: Metrics) -> dict[str, Any]:
    methods = [
        {
            "method": k[0] or "unknown",
            "records": m.records,
            "energy_kwh": m.energy_total_kwh,
            "emissions_kg_co2e": m.emissions_kg_co2e,
            "share_of_energy": _share(m._s("total_uwh"), total._s("total_uwh")),
        }
        for k, m in agg.breakdown("method")
    ]
    est_share = total.estimated_energy_share
    return {
        "by_method": methods,
        "estimated_share_of_energy": _share(total._s("estimated_uwh"), total._s("total_uwh")),
        "measured_share_of_energy": round(1.0 - est_share, 6) if total._s("total_uwh") else 0.0,
        "estimated_share_of_records": _share(total._s("estimated"), total.records),
        "estimated_share_of_emissions": _share(total._s("estimated_ug"), total._s("emissions_ug")),
        "estimated_means": 'measurement.method == "estimate": no meter, energy modelled from duration',
    }


def _sources(agg: Aggregate) -> list[dict[str, Any]]:
    out = []
    for k, m in agg.breakdown(
        "provider", "region", "country_iso", "source_name", "source_vintage", "source_kind"
    ):
        out.append(
            {
                "provider": k[0] or None,
                "region": k[1] or None,
                "country_iso": k[2] or None,
                "name": k[3],
                "vintage": k[4],
                "kind": k[5],
                "energy_kwh": m.energy_total_kwh,
                "emissions_kg_co2e": m.emissions_kg_co2e,
                "intensity_g_per_kwh": _round(m.intensity_g_per_kwh, 4),
            }
        )
    return out


def _team_breakdown(agg: Aggregate, config: EsgConfig, total_kg: float) -> list[dict[str, Any]]:
    pipelines: dict[str, list[str]] = {}
    for (team, pipeline), _ in agg.breakdown("team", "pipeline"):
        pipelines.setdefault(team, []).append(pipeline)
    out = []
    for (team,), m in agg.breakdown("team"):
        size = config.team_sizes.get(team)
        out.append(
            {
                "team": _team(team),
                **m.to_dict(),
                "share_of_emissions": _share(m.emissions_kg_co2e, total_kg),
                "developers": size,
                "emissions_per_developer_kg_co2e": m.emissions_kg_co2e / size if size else None,
                "pipelines": sorted(pipelines[team]),
            }
        )
    out.sort(key=lambda t: (-t["emissions_kg_co2e"], t["team"]))
    return out


def _pipeline_breakdown(agg: Aggregate, total_kg: float) -> list[dict[str, Any]]:
    steps: dict[str, list[dict[str, Any]]] = {}
    teams: dict[str, set[str]] = {}
    for (pipeline, step), m in agg.breakdown("pipeline", "step"):
        steps.setdefault(pipeline, []).append({"step": step, **m.to_dict()})
    for (pipeline, team), _ in agg.breakdown("pipeline", "team"):
        teams.setdefault(pipeline, set()).add(_team(team))
    out = [
        {
            "pipeline": p,
            "teams": sorted(teams[p]),
            **m.to_dict(),
            "share_of_emissions": _share(m.emissions_kg_co2e, total_kg),
            "steps": sorted(steps[p], key=lambda s: (-s["emissions_kg_co2e"], s["step"])),
        }
        for (p,), m in agg.breakdown("pipeline")
    ]
    out.sort(key=lambda p: (-p["emissions_kg_co2e"], p["pipeline"]))
    return out


def _region_breakdown(agg: Aggregate, config: EsgConfig, total_kg: float) -> list[dict[str, Any]]:
    out = [
        {
            "provider": k[0] or None,
            "region": k[1] or None,
            "country_iso": k[2] or None,
            "scope": _scope_of(k[0], config),
            **m.to_dict(),
            "share_of_emissions": _share(m.emissions_kg_co2e, total_kg),
        }
        for k, m in agg.breakdown("provider", "region", "country_iso")
    ]
    out.sort(key=lambda r: (-r["emissions_kg_co2e"], r["provider"] or "", r["region"] or ""))
    return out


def _daily(agg: Aggregate) -> list[dict[str, Any]]:
    found = {k[0]: m for k, m in agg.breakdown("date")}
    out = []
    for d in agg.period.days():
        m = found.get(d.isoformat(), Metrics(_ZERO))
        out.append(
            {
                "date": d.isoformat(),
                "records": m.records,
                "energy_kwh": m.energy_total_kwh,
                "emissions_kg_co2e": m.emissions_kg_co2e,
            }
        )
    return out


def _summary(
    agg: Aggregate,
    config: EsgConfig,
    total: Metrics,
    teams: list[dict[str, Any]],
    budgets: list[dict[str, Any]],
    regressions: list[dict[str, Any]],
) -> dict[str, Any]:
    from carbonpipe.impact import equivalents, load_factors

    kg = total.emissions_kg_co2e
    eq = equivalents(total.energy_total_kwh, kg)
    factors = load_factors()
    sized = [t for t in teams if t["developers"]]
    developers = sum(t["developers"] for t in sized)
    sized_kg = sum(t["emissions_kg_co2e"] for t in sized)
    percents = [b["percent"] for b in budgets if b["percent"] is not None]
    return {
        "total_emissions_t_co2e": total.emissions_t_co2e,
        "total_emissions_kg_co2e": kg,
        "total_energy_kwh": total.energy_total_kwh,
        "intensity_g_per_kwh": _round(total.intensity_g_per_kwh, 4),
        "per_team_kg_co2e": {t["team"]: t["emissions_kg_co2e"] for t in teams},
        "developers": developers or None,
        "emissions_per_developer_kg_co2e": sized_kg / developers if developers else None,
        "teams_without_size": sorted(t["team"] for t in teams if not t["developers"]),
        "equivalents": {
            "car_km": round(eq.car_km, 3),
            "tree_seedlings_grown_10_years": round(kg / factors.tree_seedling_co2.value, 4),
            "tree_minutes": round(eq.tree_minutes, 3),
            "smartphone_charges": round(eq.smartphone_charges, 3),
            "led_bulb_hours": round(eq.led_bulb_hours, 3),
            "factors": [
                {
                    "name": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "source": f.source,
                    "vintage": f.vintage,
                }
                for f in (
                    factors.passenger_car_co2_per_mile,
                    factors.tree_seedling_co2,
                    factors.tree_seedling_growing_period,
                    factors.smartphone_charge_energy,
                    factors.led_bulb_power,
                )
            ],
        },
        "budget_utilisation_max_percent": max(percents) if percents else None,
        "budgets_exceeded": sorted({b["scope"] for b in budgets if b["exceeded"]}),
        "regressions": len(regressions),
        "failed_attempt_share": _share(total._s("failed"), total.records),
        "estimated_energy_share": _share(total._s("estimated_uwh"), total._s("total_uwh")),
    }


def _budget_windows(budget: Budget, per: Period) -> list[Any]:
    from carbonpipe.budget import period_window

    if budget.period == "total":
        return [period_window("total", per.end_exclusive)]
    seen: dict[str, Any] = {}
    d = per.start
    while d <= per.end:
        w = period_window(budget.period, datetime.combine(d, datetime.min.time(), timezone.utc))
        seen.setdefault(w.period_id, w)
        d += timedelta(days=1)
    return list(seen.values())


def _fixed_clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def _budgets(agg: Aggregate, config: EsgConfig, store: Store | None) -> list[dict[str, Any]]:
    if not config.budgets or store is None:
        return []
    from carbonpipe.budget import BudgetLedger

    out = []
    for budget in config.budgets:
        for w in _budget_windows(budget, agg.period):
            # Status as of the window's (or the period's) last instant: repeatable, unlike "now".
            end = min(w.end or agg.period.end_exclusive, agg.period.end_exclusive)
            as_of = end - timedelta(microseconds=1)
            ledger = BudgetLedger(store, budgets=[budget], clock=_fixed_clock(as_of))
            st = ledger.status(budget)
            limit = st.limit_kg or budget.limit_kg_co2e
            out.append(
                {
                    "scope": budget.scope,
                    "period": budget.period,
                    "period_id": st.period_id,
                    "as_of": as_of.date().isoformat(),
                    "limit_kg_co2e": limit,
                    "used_kg_co2e": st.used_kg,
                    "remaining_kg_co2e": round(limit - st.used_kg, 9),
                    "percent": round(100.0 * st.used_kg / limit, 4),
                    "warn_ratio": budget.warn_ratio,
                    "warning": st.warning,
                    "exceeded": st.exceeded,
                    "on_exceed": budget.on_exceed,
                    "charges": st.charges,
                    "source": "budget ledger (charges by record)",
                }
            )
    return out


def _targets(agg: Aggregate, config: EsgConfig) -> list[dict[str, Any]]:
    out = []
    for t in config.targets:
        m = agg.totals(t.scope)
        if t.max_intensity_g_per_kwh is not None:
            current = m.intensity_g_per_kwh
            out.append(
                {
                    "name": t.name,
                    "scope": t.scope,
                    "kind": "intensity",
                    "target_intensity_g_per_kwh": t.max_intensity_g_per_kwh,
                    "current_intensity_g_per_kwh": _round(current, 4),
                    "achieved": bool(current is not None and current <= t.max_intensity_g_per_kwh),
                    "progress_percent": None
                    if not current
                    else round(min(100.0, 100.0 * t.max_intensity_g_per_kwh / current), 2),
                }
            )
            continue
        assert t.baseline_kg_co2e is not None and t.reduction_percent is not None
        year_days = 366 if calendar.isleap(agg.period.start.year) else 365
        annualised = m.emissions_kg_co2e * year_days / agg.period.n_days
        goal = t.baseline_kg_co2e * (1 - t.reduction_percent / 100.0)
        progress = (t.baseline_kg_co2e - annualised) / (t.baseline_kg_co2e - goal) * 100.0
        out.append(
            {
                "name": t.name,
                "scope": t.scope,
                "kind": "reduction",
                "baseline_year": t.baseline_year,
                "baseline_kg_co2e_per_year": t.baseline_kg_co2e,
                "reduction_percent": t.reduction_percent,
                "target_year": t.target_year,
                "target_kg_co2e_per_year": round(goal, 9),
                "period_kg_co2e": m.emissions_kg_co2e,
                "annualised_kg_co2e": round(annualised, 9),
                "annualised_how": f"period total x {year_days} / {agg.period.n_days} days",
                "reduction_so_far_percent": round(
                    100.0 * (t.baseline_kg_co2e - annualised) / t.baseline_kg_co2e, 2
                ),
                "progress_percent": round(progress, 2),
                "achieved": annualised <= goal,
            }
        )
    return out


def _optimisation_impact(agg: Aggregate, config: EsgConfig, total_kg: float) -> dict[str, Any]:
    from carbonpipe.intensity import regional_recommendations

    workloads = agg.breakdown("pipeline", "step", "provider", "region", "country_iso")
    workloads.sort(key=lambda w: (-w[1]._s("emissions_ug"), w[0]))
    out: list[dict[str, Any]] = []
    for (pipeline, step, provider, region, country), m in workloads[: config.top_workloads]:
        rec = None
        try:
            recs = regional_recommendations(
                provider or None, region or None, country_iso=country or None, limit=1
            )
            rec = next((r for r in recs if r.kind == "region"), None)
        except (ValueError, TypeError) as exc:
            log.debug("no recommendation for %s/%s: %s", provider, region, exc)
        current = m.intensity_g_per_kwh
        saving_kg = 0.0
        if rec is not None and rec.intensity_g_per_kwh is not None and current is not None:
            saving_ug = (
                m._s("facility_uwh")
                / _UWH_PER_KWH
                * (current - rec.intensity_g_per_kwh)
                * _UG_PER_G
            )
            saving_kg = max(round(saving_ug), 0) / _UG_PER_KG
        out.append(
            {
                "pipeline": pipeline,
                "step": step,
                "provider": provider or None,
                "region": region or None,
                "country_iso": country or None,
                "emissions_kg_co2e": m.emissions_kg_co2e,
                "facility_energy_kwh": m.facility_energy_kwh,
                "intensity_g_per_kwh": _round(current, 4),
                "recommended_provider": rec.provider if rec else None,
                "recommended_region": rec.region if rec else None,
                "recommended_intensity_g_per_kwh": rec.intensity_g_per_kwh if rec else None,
                "recommendation": rec.text if rec else None,
                "saving_kg_co2e": saving_kg,
                "saving_percent_of_workload": round(100.0 * saving_kg / m.emissions_kg_co2e, 2)
                if m.emissions_kg_co2e
                else 0.0,
            }
        )
    saved = sum(float(w["saving_kg_co2e"]) for w in out)
    return {
        "workloads": out,
        "total_saving_kg_co2e": round(saved, 9),
        "total_saving_percent": round(100.0 * saved / total_kg, 2) if total_kg else 0.0,
        "basis": "facility energy (local energy x PUE) of each workload at the recommended region's "
        "grid intensity instead of the intensity its records carry; remote emissions unchanged",
    }


def _priority(saving_kg: float | None, total_kg: float) -> str:
    if not saving_kg or not total_kg:
        return "Low"
    share = saving_kg / total_kg
    return (
        "High"
        if share >= HIGH_PRIORITY_SHARE
        else ("Medium" if share >= MEDIUM_PRIORITY_SHARE else "Low")
    )


def _recommendations(
    agg: Aggregate, total: Metrics, impact: dict[str, Any], regressions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    total_kg = total.emissions_kg_co2e
    out: list[dict[str, Any]] = []

    def add(category: str, text: str, saving_kg: float | None, basis: str, **extra: Any) -> None:
        out.append(
            {
                "category": category,
                "priority": _priority(saving_kg, total_kg),
                "recommendation": text,
                "estimated_saving_kg_co2e": None if saving_kg is None else round(saving_kg, 9),
                "estimated_saving_percent": None
                if saving_kg is None or not total_kg
                else round(100.0 * saving_kg / total_kg, 2),
                "basis": basis,
                **extra,
            }
        )

    moves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for w in impact["workloads"]:
        if w["saving_kg_co2e"] > 0:
            here = f"{w['provider']}:{w['region']}" if w["region"] else (w["country_iso"] or "?")
            there = f"{w['recommended_provider']}:{w['recommended_region']}"
            moves.setdefault((here, there), []).append(w)
    for (here, there), ws in moves.items():
        names = ", ".join(f"{w['pipeline']}/{w['step']}" for w in ws)
        add(
            "Region",
            f"Move {names} from {here} to {there}. {ws[0]['recommendation']}",
            sum(w["saving_kg_co2e"] for w in ws),
            "the workloads' facility energy this period at the recommended region's intensity",
            workloads=[f"{w['pipeline']}/{w['step']}" for w in ws],
            from_location=here,
            to_location=there,
        )
    failed_kg = total._s("failed_ug") / _UG_PER_KG
    if failed_kg > 0:
        add(
            "Reliability",
            f"{total._s('failed')} failed or killed step attempts emitted {failed_kg:.3g} kg CO2e; "
            "checkpointing and fixing the most frequent failures avoids re-spending it.",
            failed_kg,
            "emissions of the period's failed and killed attempts (an upper bound)",
        )
    excess: dict[tuple[str, str], list[float]] = {}
    for a in regressions:
        over = float(a.get("emissions_kg_co2e", 0.0)) - float(a.get("baseline_mean_kg_co2e", 0.0))
        excess.setdefault((str(a.get("pipeline")), str(a.get("step"))), []).append(max(over, 0.0))
    ranked = sorted(excess.items(), key=lambda item: (-sum(item[1]), item[0]))
    for (pipeline, step), overs in ranked[:REGRESSIONS_LISTED]:
        add(
            "Regression",
            f"{pipeline}/{step} ran above its carbon baseline {len(overs)} time(s); find the change "
            "that made it heavier.",
            sum(overs),
            "emissions above the baseline mean in the alerting attempts",
            pipeline=pipeline,
            step=step,
        )
    rest = ranked[REGRESSIONS_LISTED:]
    if rest:
        add(
            "Regression",
            f"{len(rest)} more steps ran above their carbon baselines "
            f"({sum(len(o) for _, o in rest)} attempts); see the regressions section.",
            sum(sum(o) for _, o in rest),
            "emissions above the baseline mean in the alerting attempts",
        )
    est = total.estimated_energy_share
    if est >= ESTIMATED_SHARE_WORTH_FLAGGING:
        rec = {
            "category": "Data quality",
            "priority": "Medium",
            "recommendation": f"{100 * est:.1f}% of the energy was estimated, not measured: run "
            "steps where RAPL/NVML counters are readable, or with tracking_mode machine.",
            "estimated_saving_kg_co2e": None,
            "estimated_saving_percent": None,
            "basis": "measurement.method == estimate",
        }
        out.append(rec)
    order = {"High": 0, "Medium": 1, "Low": 2}
    out.sort(
        key=lambda r: (
            order[r["priority"]],
            -(r["estimated_saving_kg_co2e"] or 0.0),
            r["recommendation"],
        )
    )
    return out


# ---------------------------------------------------------------------------------------------
# CSV, artifacts, the nightly job

CSV_COLUMNS = (
    "generated_for",
    "month",
    "team",
    "pipeline",
    "step_attempts",
    "runs",
    "failed_attempts",
    "failed_attempt_share",
    "energy_cpu_kwh",
    "energy_gpu_kwh",
    "energy_ram_kwh",
    "energy_remote_kwh",
    "energy_total_kwh",
    "emissions_kg_co2e",
    "intensity_g_per_kwh",
    "estimated_energy_share",
)


def report_csv(agg: Aggregate) -> bytes:
    """Return ``report.csv``: one row per team x pipeline x month."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for (month, team, pipeline), m in agg.breakdown("month", "team", "pipeline"):
        e = m.energy_dict()
        w.writerow(
            [
                agg.period.label,
                month,
                _team(team),
                pipeline,
                m.records,
                agg.runs.get((month, team, pipeline), 0),
                m._s("failed"),
                m.failed_attempt_share,
                e["cpu"],
                e["gpu"],
                e["ram"],
                e["remote"],
                e["total"],
                m.emissions_kg_co2e,
                "" if m.intensity_g_per_kwh is None else round(m.intensity_g_per_kwh, 4),
                _share(m._s("estimated_uwh"), m._s("total_uwh")),
            ]
        )
    return buf.getvalue().encode()


def report_json(report: Mapping[str, Any]) -> bytes:
    """Serialise the report deterministically (sorted keys, fixed indentation)."""
    return (json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_report(
    store: Store | str,
    aggregate: Aggregate,
    *,
    out_dir: str | Path | None = None,
    config: EsgConfig | Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write report.json, report.csv, report.html and the charts to ``esg/<period>/``.

    Returns ``{artifact name: store URI}``; with ``out_dir`` the same files are also written
    there (``<out_dir>/<artifact name>``). ``config`` is an :class:`EsgConfig`, a parsed
    carbon.yaml mapping, or None to read carbon.yaml.
    """
    return _write(open_store(store), aggregate, out_dir, config)[0]


def _write(
    store: Store,
    aggregate: Aggregate,
    out_dir: str | Path | None,
    config: EsgConfig | Mapping[str, Any] | None,
) -> tuple[dict[str, str], dict[str, Any]]:
    from carbonpipe import plot

    cfg = config if isinstance(config, EsgConfig) else load_esg_config(config)
    report = build_report(aggregate, cfg, store=store)
    charts = plot.report_charts(report)
    artifacts: dict[str, tuple[bytes, str]] = {
        "report.json": (report_json(report), "application/json"),
        "report.csv": (report_csv(aggregate), "text/csv"),
        "report.html": (plot.report_html(report, charts).encode(), "text/html; charset=utf-8"),
    }
    for name, png in charts.items():
        artifacts[name] = (png, "image/png")
    base = f"{ESG_PREFIX}/{aggregate.period.label}"
    if aggregate.pipeline:
        base += f"/pipeline={partition_value(aggregate.pipeline)}"
    uris = {
        name: store.put_artifact(f"{base}/{name}", data, content_type=content_type)
        for name, (data, content_type) in artifacts.items()
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, (data, _) in artifacts.items():
            (out / name).write_bytes(data)
    return uris, report


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The few figures a pipeline step returns and a CLI prints."""
    s = report["executive_summary"]
    return {
        "generated_for": report["generated_for"],
        "total_emissions_kg_co2e": s["total_emissions_kg_co2e"],
        "total_energy_kwh": s["total_energy_kwh"],
        "step_attempts": report["activity"]["step_attempts"],
        "runs": report["activity"]["runs"],
        "estimated_energy_share": s["estimated_energy_share"],
        "regressions": s["regressions"],
        "budgets_exceeded": s["budgets_exceeded"],
    }


def run_nightly(
    store_uri: Store | str,
    period: str | Period,
    *,
    out_dir: str | None = None,
    compact_first: bool = True,
    config: EsgConfig | Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Compact closed days, aggregate the period, write the artifacts; return URIs and totals.

    This is what the KFP component and the Airflow DAG call. Its result is JSON-ready:
    ``{"artifacts": {name: store URI}, "local": {name: path under out_dir}, "totals": {...},
    "regressions": [...], "regression_action": "warn" | "fail", "compaction": {...},
    "read": {...}}``.
    """
    from carbonpipe.baseline import regression_action

    store = open_store(store_uri)
    per = parse_period(period)
    cfg = config if isinstance(config, EsgConfig) else load_esg_config(config)
    done = compact(store, per, now=now) if compact_first else []
    agg = aggregate(store, per)
    uris, report = _write(store, agg, out_dir, cfg)
    return {
        "artifacts": uris,
        "local": {n: str(Path(out_dir) / n) for n in uris} if out_dir is not None else {},
        "totals": headline(report),
        "regressions": report["regressions"],
        "regression_action": regression_action(),
        "compaction": {
            "days_compacted": sum(c.written for c in done),
            "records_added": sum(c.added for c in done),
        },
        "read": {
            "compacted_records": agg.stats.compacted_records,
            "json_records": agg.stats.json_records,
            "invalid_records": agg.stats.invalid_records,
        },
    }
