"""Aggregation: a period's records reduced to exact sums by day, team, pipeline, step and region.

Each day is read once, from its compacted Parquet part plus any JSON record the part does not
hold yet (:mod:`carbonpipe.esg.rows`), reduced to a small table of sums, and the days are added
up; :class:`Aggregate` answers every breakdown the report needs from that table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra
from carbonpipe.stores.base import Store, StoredObject
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.opener import open_store

if TYPE_CHECKING:
    import pyarrow as pa

from carbonpipe.esg.period import Period, parse_period
from carbonpipe.esg.revisions import apply_revisions, load_revisions
from carbonpipe.esg.rows import (
    Listing,
    _arrow_schema,
    _decode_part,
    _fetch,
    _get_part,
    _has_legacy,
    _list_day,
    _pending,
    _records_table,
)
from carbonpipe.esg.section_rows import SectionRow, section_rows

_NWH_PER_KWH = 10**12
_NG_PER_KG = 10**12
_NG_PER_G = 10**9
_MS_PER_S = 1e3

ProgressFn = Callable[[int, int, int], None]  # (days done, days in all, records so far)


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
    "cpu_nwh",
    "gpu_nwh",
    "ram_nwh",
    "remote_nwh",
    "total_nwh",
    "facility_nwh",
    "emissions_ng",
    "local_ng",
    "remote_ng",
    "failed_ng",
    "estimated_nwh",
    "estimated_ng",
    "duration_ms",
)
# The lowest and highest grid intensity of the records with facility energy: a group's
# energy-weighted intensity is a weighted mean of them, so it is kept between the two.
_BOUNDS = (("intensity_min", "min"), ("intensity_max", "max"))
_RUN_KEYS = ("month", "team", "pipeline", "run_id")


def _reduce(t: pa.Table, day: str) -> tuple[pa.Table, pa.Table, list[dict[str, Any]]]:
    """Reduce one day's rows to its cube, its distinct runs and its regression alerts."""
    with needs_extra("esg", "ESG reports"):
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

    failed = pc.not_equal(t["status"], "succeeded")
    estimated = pc.equal(t["method"], "estimate")
    emissions_ng = t["emissions_ng"]
    total_nwh = t["energy_total_nwh"]
    weighed = pc.if_else(
        pc.greater(t["facility_nwh"], 0), t["intensity_g_per_kwh"], pa.scalar(None, pa.float64())
    )
    # The day is one value here: it is added after grouping instead of hashed with the rest.
    group_keys = [k for k in _KEYS if k not in ("date", "month")]
    columns: dict[str, Any] = {k: t[k] for k in group_keys}
    columns.update(
        {
            "failed": pc.cast(failed, pa.int64()),
            "estimated": pc.cast(estimated, pa.int64()),
            "cpu_nwh": t["energy_cpu_nwh"],
            "gpu_nwh": t["energy_gpu_nwh"],
            "ram_nwh": t["energy_ram_nwh"],
            "remote_nwh": t["energy_remote_nwh"],
            "total_nwh": total_nwh,
            "facility_nwh": t["facility_nwh"],
            "emissions_ng": emissions_ng,
            "local_ng": t["local_ng"],
            "remote_ng": t["remote_ng"],
            "failed_ng": when(failed, emissions_ng),
            "estimated_nwh": when(estimated, total_nwh),
            "estimated_ng": when(estimated, emissions_ng),
            "duration_ms": ints(t["duration_s"], _MS_PER_S),
            "intensity_min": weighed,
            "intensity_max": weighed,
        }
    )
    grouped = (
        pa.table(columns)
        .group_by(group_keys, use_threads=False)
        .aggregate(
            [("failed", "count")]
            + [(s, "sum") for s in _SUMS if s != "records"]
            + [(b, how) for b, how in _BOUNDS]
        )
    )
    n = grouped.num_rows
    cube = pa.table(
        {"date": constant(day, n), "month": constant(day[:7], n)}
        | {k: text(grouped[k]) for k in group_keys}
        | {"records": grouped["failed_count"]}
        | {s: grouped[f"{s}_sum"] for s in _SUMS if s != "records"}
        | {b: grouped[f"{b}_{how}"] for b, how in _BOUNDS}
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
    with needs_extra("esg", "ESG reports"):
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
    # (lowest, highest) grid intensity of the records with facility energy; None if none.
    intensity_range: tuple[float, float] | None = None

    def _s(self, name: str) -> int:
        return self.sums[_SUMS.index(name)]

    @property
    def records(self) -> int:
        """Step attempts."""
        return self._s("records")

    @property
    def emissions_kg_co2e(self) -> float:
        """Location-based emissions."""
        return self._s("emissions_ng") / _NG_PER_KG

    @property
    def emissions_t_co2e(self) -> float:
        """Location-based emissions in tonnes."""
        return self._s("emissions_ng") / (_NG_PER_KG * 1000)

    @property
    def energy_total_kwh(self) -> float:
        """Energy of every device, local and remote."""
        return self._s("total_nwh") / _NWH_PER_KWH

    @property
    def facility_energy_kwh(self) -> float:
        """Local device energy times PUE: what the grid supplied to the data centre."""
        return self._s("facility_nwh") / _NWH_PER_KWH

    @property
    def intensity_g_per_kwh(self) -> float | None:
        """Grid intensity weighted by the facility energy it applied to.

        Sum of local CO2e (ng) over sum of facility energy (nWh), both exact integers; a
        weighted mean of the records' intensities, so it is held within their range (the
        per-record rounding to whole ng could otherwise move it past the ends by a hair).
        """
        nwh = self._s("facility_nwh")
        if nwh == 0:
            return None
        value = self._s("local_ng") * 1000 / nwh  # ng/nWh = 1000 g/kWh; int / int, exact
        if self.intensity_range is not None:
            low, high = self.intensity_range
            value = min(max(value, low), high)
        return value

    @property
    def failed_attempt_share(self) -> float:
        """Share of attempts that did not succeed."""
        return _share(self._s("failed"), self.records)

    @property
    def estimated_energy_share(self) -> float:
        """Share of energy that was estimated rather than measured."""
        return _share(self._s("estimated_nwh"), self._s("total_nwh"))

    def energy_dict(self) -> dict[str, float]:
        """Energy per device in kWh."""
        return {
            part: self._s(f"{part}_nwh") / _NWH_PER_KWH
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
            "emissions_ng": self._s("emissions_ng"),  # the exact sum behind the kg
            "energy_total_nwh": self._s("total_nwh"),
            "intensity_g_per_kwh": _round(self.intensity_g_per_kwh, 4),
            "estimated_energy_share": _share(self._s("estimated_nwh"), self._s("total_nwh")),
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
    # The rows the SCI and time-shifting sections read (carbonpipe.esg.section_rows), taken
    # from the rows this pass read, so that those sections read no JSON record again.
    section_rows: tuple[SectionRow, ...] = ()

    def _select(self, scope: str) -> pa.Table:
        with needs_extra("esg", "ESG reports"):
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
        with needs_extra("esg", "ESG reports"):
            import pyarrow.compute as pc

        sums = tuple(int(table[s].combine_chunks().sum().as_py() or 0) for s in _SUMS)
        runs = self.runs_by["total"].get("", 0) if scope == "all" else None
        if scope != "all":
            kind, _, name = scope.partition(":")
            runs = self.runs_by.get(kind, {}).get(name)
        low = pc.min(table["intensity_min"]).as_py()
        high = pc.max(table["intensity_max"]).as_py()
        return Metrics(sums, runs, None if low is None or high is None else (low, high))

    def breakdown(self, *dims: str, scope: str = "all") -> list[tuple[tuple[str, ...], Metrics]]:
        """Group the cube by some of its key columns; sorted by key."""
        unknown = [d for d in dims if d not in _KEYS]
        if unknown or not dims:
            raise ValueError(f"breakdown dimensions {unknown or dims} not among {_KEYS}")
        table = self._select(scope)
        if table.num_rows == 0:
            return []
        grouped = table.group_by(list(dims), use_threads=False).aggregate(
            [(s, "sum") for s in _SUMS] + [(b, how) for b, how in _BOUNDS]
        )
        keys = [grouped[d].to_pylist() for d in dims]
        sums = [grouped[f"{s}_sum"].to_pylist() for s in _SUMS]
        lows, highs = (grouped[f"{b}_{how}"].to_pylist() for b, how in _BOUNDS)
        runs = self.runs_by.get(dims[0], {}) if len(dims) == 1 else {}
        out = []
        for i in range(grouped.num_rows):
            key = tuple(k[i] for k in keys)
            bounds = None if lows[i] is None or highs[i] is None else (lows[i], highs[i])
            metrics = Metrics(
                tuple(int(c[i]) for c in sums), runs.get(key[0]) if runs else None, bounds
            )
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
    listings: Mapping[str, Listing] | None = None,
) -> Aggregate:
    """Read every record of ``period`` (compacted parts plus JSON they lack) and sum it up.

    ``listings``: days already listed (``{day: (keys, record ids)}``, what
    :func:`carbonpipe.esg.compaction.compact` just listed), used instead of listing them
    again; a record written since is counted by the next aggregation. Ignored with
    ``pipeline``.
    """
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    store = open_store(store)
    per = parse_period(period)
    days = [d.isoformat() for d in per.days()]
    cubes: list[pa.Table] = []
    runs: list[pa.Table] = []
    alerts: list[dict[str, Any]] = []
    sections: list[SectionRow] = []
    stats = [0, 0, 0, 0]
    if progress:
        progress(0, len(days), 0)

    # Records repriced by `carbonpipe reprice` (carbonpipe.esg.revisions): one LIST a month.
    revisions = load_revisions(store, days) if days else {}

    known = dict(listings or {}) if pipeline is None else {}
    legacy = _has_legacy(store) if any(d not in known for d in days) else False

    def fetch_day(day: str) -> tuple[Listing, StoredObject | None]:
        listing = known.get(day)
        if listing is None:
            listing = _list_day(store, day, pipeline, legacy=legacy)
        return listing, _get_part(store, day)

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
                table = apply_revisions(table, revisions.get(day))
                cube, day_runs, day_alerts = _reduce(table, day)
                cubes.append(cube)
                runs.append(day_runs)
                alerts.extend(day_alerts)
                sections.extend(section_rows(table))
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
        section_rows=tuple(sections),
    )


def _empty_cube() -> pa.Table:
    with needs_extra("esg", "ESG reports"):
        import pyarrow as pa

    return pa.table(
        {k: pa.array([], pa.string()) for k in _KEYS}
        | {s: pa.array([], pa.int64()) for s in _SUMS}
        | {b: pa.array([], pa.float64()) for b, _ in _BOUNDS}
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
