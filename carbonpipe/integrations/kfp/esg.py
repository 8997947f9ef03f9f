"""The ``esg_aggregate`` component's body: the nightly ESG report, published as KFP artifacts."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from carbonpipe.integrations.kfp.context import (
    MetricsArtifact,
    _given,
    _numbers,
    _write_json,
    publish_metrics,
)


def run_esg_aggregate(
    *,
    store: str = "",
    period: str = "",
    metrics: MetricsArtifact | None = None,
    report_html_path: str | None = None,
    report_json_path: str | None = None,
    sweep_from: str = "",
) -> dict[str, Any]:
    """Run :func:`carbonpipe.esg.nightly.run_nightly` on ``store`` for ``period`` and publish the result.

    ``period`` is what ``run_nightly`` accepts (e.g. ``2026-11``); empty means
    :func:`nightly_period`.

    The totals go to ``metrics``; the HTML report is copied to ``report_html_path`` and the
    summary (artifact URIs and totals) written to ``report_json_path``. ``sweep_from`` (a
    pipeline root) is swept for the records steps left there as ``carbon_record`` artifacts
    first, so steps whose store was down are counted. Returns the summary.
    """
    from carbonpipe._optional import one_line_when_missing

    one_line_when_missing()  # a missing extra ends the task with one line, not a traceback
    from carbonpipe.config import resolve_settings
    from carbonpipe.esg.nightly import run_nightly

    store_uri = resolve_settings(store=_given(store)).store
    period = _given(period) or nightly_period()
    with tempfile.TemporaryDirectory(prefix="carbonpipe-esg-") as out_dir:
        sources = [s for s in [_given(sweep_from)] if s]
        result = dict(run_nightly(store_uri, period, out_dir=out_dir, sweep_from=sources))
        totals = result.get("totals")
        figures = _numbers(totals if isinstance(totals, Mapping) else {})
        if "total_emissions_kg_co2e" in figures:
            figures["total_emissions_g_co2e"] = figures["total_emissions_kg_co2e"] * 1000.0
        publish_metrics(metrics, figures)
        html = _find_html(result, Path(out_dir))
        if report_html_path:
            Path(report_html_path).parent.mkdir(parents=True, exist_ok=True)
            if html is not None:
                shutil.copyfile(html, report_html_path)
            else:
                Path(report_html_path).write_text(_fallback_html(result))
    _write_json(report_json_path, result)
    print(f"carbonpipe: ESG report for {period} written to {store_uri}", file=sys.stderr)
    return result


def nightly_period(now: datetime | None = None) -> str:
    """The month (``YYYY-MM``, UTC) a nightly run reports on: the day that just ended's.

    A run just after midnight on the 1st writes the final report of the month before, as the
    Airflow DAG does with its data interval.
    """
    day = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) - timedelta(days=1)
    return f"{day:%Y-%m}"


def _find_html(result: Mapping[str, Any], out_dir: Path) -> Path | None:
    """The local HTML report ``run_nightly`` produced, wherever its result says it is."""
    candidates: list[Any] = [result.get("html"), result.get("report_html")]
    for key in ("artifacts", "local", "files", "paths"):
        group = result.get(key)
        if isinstance(group, Mapping):
            candidates += [group.get("html"), group.get("report.html"), group.get("report_html")]
    for c in candidates:
        if isinstance(c, (str, os.PathLike)) and Path(c).is_file():
            return Path(c)
    found = sorted(out_dir.rglob("*.html"))
    return found[0] if found else None


def _fallback_html(result: Mapping[str, Any]) -> str:
    import html

    body = html.escape(json.dumps(result, indent=2, sort_keys=True, default=str, allow_nan=False))
    return f"<!doctype html><html><body><h1>carbonpipe ESG report</h1><pre>{body}</pre></body></html>\n"
