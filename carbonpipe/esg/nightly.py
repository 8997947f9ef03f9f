"""The report's artifacts (json, csv, html, charts) and the nightly job that writes them."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonpipe.record import partition_value
from carbonpipe.stores.base import Store
from carbonpipe.stores.opener import open_store

if TYPE_CHECKING:
    pass
from carbonpipe.esg.aggregation import Aggregate, _share, aggregate
from carbonpipe.esg.compaction import compact
from carbonpipe.esg.config import EsgConfig, load_esg_config
from carbonpipe.esg.period import Period, parse_period
from carbonpipe.esg.report import _team, build_report

ESG_PREFIX = "esg"

logger = logging.getLogger(__name__)


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
                _share(m._s("estimated_nwh"), m._s("total_nwh")),
            ]
        )
    return buf.getvalue().encode()


def report_json(report: Mapping[str, Any]) -> bytes:
    """Serialise the report deterministically (sorted keys, fixed indentation)."""
    return (
        json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()


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
    from carbonpipe.esg.charts import report_charts
    from carbonpipe.esg.html import report_html

    cfg = config if isinstance(config, EsgConfig) else load_esg_config(config)
    report = build_report(aggregate, cfg, store=store)
    charts = report_charts(report)
    artifacts: dict[str, tuple[bytes, str]] = {
        "report.json": (report_json(report), "application/json"),
        "report.csv": (report_csv(aggregate), "text/csv"),
        "report.html": (report_html(report, charts).encode(), "text/html; charset=utf-8"),
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
    sweep_from: Sequence[str] = (),
) -> dict[str, Any]:
    """Compact closed days, aggregate the period, write the artifacts; return URIs and totals.

    This is what the KFP component and the Airflow DAG call. Its result is JSON-ready:
    ``{"artifacts": {name: store URI}, "local": {name: path under out_dir}, "totals": {...},
    "regressions": [...], "regression_action": "warn" | "fail", "compaction": {...},
    "read": {...}, "lost_steps": {...}, "rollups": {...}}``. First, steps whose process died
    before they stopped and left an open entry in this machine's spool get their ``lost`` record
    (:func:`carbonpipe.lost_steps.sweep`), so the night counts them. Then the record copies
    that steps left with their orchestrator in each ``sweep_from`` source (a KFP pipeline root,
    ``airflow:``) are delivered once (:func:`carbonpipe.sweep.sweep`; ``"swept"`` in the result).
    After compacting, every budget's closed days are rolled up (:func:`roll_up_budgets`;
    ``"rollups"``), so the day's first gate decision does not list them; a failure there is
    noted, never raised.
    """
    from carbonpipe import lost_steps
    from carbonpipe.baseline import regression_action
    from carbonpipe.sweep import sweep

    lost = lost_steps.sweep()
    store = open_store(store_uri)
    swept = [sweep(source, store).to_dict() for source in sweep_from]
    per = parse_period(period)
    cfg = config if isinstance(config, EsgConfig) else load_esg_config(config)
    # Each closed day is listed once: the compaction's listing serves the aggregation too.
    listings: dict[str, tuple[list[str], list[str]]] = {}
    done = compact(store, per, now=now, listings=listings) if compact_first else []
    rollups = roll_up_budgets(store, cfg, now)
    agg = aggregate(store, per, listings=listings)
    uris, report = _write(store, agg, out_dir, cfg)
    return {
        "artifacts": uris,
        "local": {n: str(Path(out_dir) / n) for n in uris} if out_dir is not None else {},
        "totals": headline(report),
        "regressions": report["regressions"],
        "regression_action": regression_action(),
        "swept": swept,
        "compaction": {
            "days_compacted": sum(c.written for c in done),
            "records_added": sum(c.added for c in done),
        },
        "read": {
            "compacted_records": agg.stats.compacted_records,
            "json_records": agg.stats.json_records,
            "invalid_records": agg.stats.invalid_records,
        },
        "lost_steps": lost.to_dict(),
        "rollups": rollups,
    }


def roll_up_budgets(store: Store, cfg: EsgConfig, now: datetime | None) -> dict[str, Any]:
    """Write the rollups of every budget's closed days (carbon.yaml's and the store's), so
    the first gate decision of the day reads each closed day from one object.

    Never raises: a rollup only saves the gates work, so a failure is logged and noted in
    the result (``{"scopes": [...], "failed": n, "error": ...}``), and the report goes on.
    """
    from carbonpipe.budgets.rollup import roll_up_all
    from carbonpipe.stores.redact import redact

    try:
        reports = roll_up_all(store, cfg.budgets, now=now, stored=True)
    except Exception as exc:  # noqa: BLE001 - the report must not fail for a rollup
        error = redact(f"{type(exc).__name__}: {exc}")
        logger.warning("carbonpipe: budget rollups not written: %s", error)
        return {"scopes": [], "failed": None, "error": error}
    failed = [r for r in reports if r.error or r.unwritten]
    for r in reports:
        logger.info(
            "carbonpipe: budget rollup %s [%s]: %d days listed, %d already rolled up, %.2f s",
            r.scope,
            r.period,
            r.listed,
            r.rolled,
            r.elapsed_s,
        )
    if failed:
        logger.warning(
            "carbonpipe: budget rollups incomplete for %s",
            ", ".join(f"{r.scope} [{r.period}]" for r in failed),
        )
    return {"scopes": [r.to_dict() for r in reports], "failed": len(failed), "error": None}
