"""ESG reporting: a period's records aggregated into report.json, report.csv and report.html.

By stage: ``period`` (which days), ``config`` (the ``esg:`` settings and the report's
statements), ``rows`` (reading a day's JSON records and Parquet part), ``compaction`` (closed
days rewritten as Parquet), ``aggregation`` (exact sums by day, team, pipeline, step, region),
``report`` (the report document, one function per section), ``advice`` (region moves and
recommendations), ``charts`` (matplotlib PNGs),
``html`` (the self-contained page), ``nightly`` (the artifacts and the nightly job).

May import: everything below the tracker (``errors``, ``record``, ``stores``, ``intensity``,
``budgets``, ``config``, ``baseline``, ``impact``); pyarrow and matplotlib only inside functions.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "Aggregate": "carbonpipe.esg.aggregation",
    "Metrics": "carbonpipe.esg.aggregation",
    "ReadStats": "carbonpipe.esg.aggregation",
    "aggregate": "carbonpipe.esg.aggregation",
    "CHART_NAMES": "carbonpipe.esg.charts",
    "pipeline_trend": "carbonpipe.esg.charts",
    "report_charts": "carbonpipe.esg.charts",
    "Compaction": "carbonpipe.esg.compaction",
    "closed_days": "carbonpipe.esg.compaction",
    "compact": "carbonpipe.esg.compaction",
    "compact_day": "carbonpipe.esg.compaction",
    "EsgConfig": "carbonpipe.esg.config",
    "load_esg_config": "carbonpipe.esg.config",
    "report_html": "carbonpipe.esg.html",
    "CSV_COLUMNS": "carbonpipe.esg.nightly",
    "headline": "carbonpipe.esg.nightly",
    "report_csv": "carbonpipe.esg.nightly",
    "report_json": "carbonpipe.esg.nightly",
    "run_nightly": "carbonpipe.esg.nightly",
    "write_report": "carbonpipe.esg.nightly",
    "PERIOD_FORMS": "carbonpipe.esg.period",
    "Period": "carbonpipe.esg.period",
    "parse_period": "carbonpipe.esg.period",
    "REPORT_SCHEMA": "carbonpipe.esg.report",
    "build_report": "carbonpipe.esg.report",
}

__all__ = [
    "Aggregate",
    "CHART_NAMES",
    "CSV_COLUMNS",
    "Compaction",
    "EsgConfig",
    "Metrics",
    "PERIOD_FORMS",
    "Period",
    "REPORT_SCHEMA",
    "ReadStats",
    "aggregate",
    "build_report",
    "closed_days",
    "compact",
    "compact_day",
    "headline",
    "load_esg_config",
    "parse_period",
    "pipeline_trend",
    "report_charts",
    "report_csv",
    "report_html",
    "report_json",
    "run_nightly",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.esg.aggregation import Aggregate, Metrics, ReadStats, aggregate
    from carbonpipe.esg.charts import CHART_NAMES, pipeline_trend, report_charts
    from carbonpipe.esg.compaction import Compaction, closed_days, compact, compact_day
    from carbonpipe.esg.config import EsgConfig, load_esg_config
    from carbonpipe.esg.html import report_html
    from carbonpipe.esg.nightly import (
        CSV_COLUMNS,
        headline,
        report_csv,
        report_json,
        run_nightly,
        write_report,
    )
    from carbonpipe.esg.period import PERIOD_FORMS, Period, parse_period
    from carbonpipe.esg.report import REPORT_SCHEMA, build_report
