"""The ESG report's "Time shifting" section: steps started later on a cleaner grid, and what
that avoided.

From the period's records that carry ``scheduling`` (``carbonpipe run --shift-within``,
``CarbonTrackedOperator(shift_within=...)``, ``carbon_component(shift_within=...)``):

* ``steps_planned``: steps whose start was planned; ``steps_shifted``: those that waited
  (``waited_s`` > 1 s); ``hours_waited``: their waits summed.
* ``co2_avoided_kg_co2e``: **an estimate of the counterfactual**, not a measurement: for each
  step whose record has both figures from the time series, its facility energy (local energy x
  PUE) times ``intensity_if_started_at_decision - intensity_actual`` (the series' mean over the
  same run length starting at the decision, and over the actual run). Negative when a step
  ran on a dirtier grid than it would have at once (a forecast that was wrong); never clipped.
* ``recommendations``: a time-shift figure per pipeline only when the zone's measured history
  backs it (see :func:`time_shift_advice`); none otherwise.

The section reads the rows the aggregation pass already read (:mod:`carbonpipe.esg.section_rows`:
records that planned their start or were priced with a time series), not the JSON records
again; records of parts older than ``carbonpipe.compact/4`` contribute nothing to it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.record import parse_utc

if TYPE_CHECKING:
    from carbonpipe.esg.period import Period
    from carbonpipe.esg.section_rows import SectionInput as Record

#: A step that waited less than this was not shifted (the plan said "now").
SHIFTED_AFTER_S = 1.0
ESTIMATE_LABEL = (
    "estimate of the counterfactual: each shifted step's facility energy at the time series' "
    "intensity had it started at once (at the decision) minus at the intensity over its "
    "actual run; not a measurement"
)
#: Advice needs this many days of measured history at both hours, and at least this saving.
ADVICE_MIN_DAYS = 7
ADVICE_MIN_SAVING = 0.05
ADVICE_LOOKBACK_DAYS = 30


def _facility_kwh(rec: Record) -> float:
    e = rec.energy_kwh
    return (float(e["cpu"]) + float(e["gpu"]) + float(e["ram"])) * float(rec.pue)


def _avoided_kg(rec: Record) -> float | None:
    s = rec.scheduling or {}
    before, actual = s.get("intensity_if_started_at_decision"), s.get("intensity_actual")
    if before is None or actual is None:
        return None
    return _facility_kwh(rec) * (float(before) - float(actual)) / 1e6


def shifting_section(
    records: Iterable[Record], advice: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The section: totals, per pipeline, and the advice given (see the module docstring)."""
    pipelines: dict[str, dict[str, Any]] = {}
    for rec in records:
        if not rec.scheduling:
            continue
        s = rec.scheduling
        row = pipelines.setdefault(
            rec.pipeline,
            {
                "pipeline": rec.pipeline,
                "steps_planned": 0,
                "steps_shifted": 0,
                "hours_waited": 0.0,
                "co2_avoided_kg_co2e": 0.0,
                "steps_estimated": 0,
            },
        )
        row["steps_planned"] += 1
        waited = float(s.get("waited_s") or 0.0)
        if waited > SHIFTED_AFTER_S:
            row["steps_shifted"] += 1
            row["hours_waited"] += waited / 3600.0
        avoided = _avoided_kg(rec)
        if avoided is not None and math.isfinite(avoided):
            row["co2_avoided_kg_co2e"] += avoided
            row["steps_estimated"] += 1
    rows = [pipelines[p] for p in sorted(pipelines)]
    return {
        "steps_planned": sum(r["steps_planned"] for r in rows),
        "steps_shifted": sum(r["steps_shifted"] for r in rows),
        "hours_waited": float(sum(r["hours_waited"] for r in rows)),
        "co2_avoided_kg_co2e": float(sum(r["co2_avoided_kg_co2e"] for r in rows)),
        "steps_estimated": sum(r["steps_estimated"] for r in rows),
        "co2_avoided_is": ESTIMATE_LABEL,
        "by_pipeline": rows,
        "recommendations": list(advice or []),
    }


def empty_section() -> dict[str, Any]:
    """The section of a report with no planned steps (or built without its store)."""
    return shifting_section([])


def time_shift_advice(
    records: Iterable[Record], source: Any, *, now: datetime, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Per pipeline, the UTC start hour whose measured history over the last 30 days beats the
    hour it usually starts at, when the history backs it.

    A pipeline qualifies when its records name a time-series zone (``intensity_source.zone``
    or ``scheduling.source.zone``); the zone's ``history`` over the last
    ``ADVICE_LOOKBACK_DAYS`` days gives, for each hour of the day, the mean intensity of a run
    of the pipeline's median duration started then, on each day the history covers it. Advice
    is given only with ``ADVICE_MIN_DAYS`` days at both hours and a saving of at least
    ``ADVICE_MIN_SAVING``; nothing is said otherwise.
    """
    from carbonpipe.intensity.planner import window_mean

    by_pipeline: dict[str, list[Record]] = {}
    for rec in records:
        by_pipeline.setdefault(rec.pipeline, []).append(rec)
    out = []
    end = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=ADVICE_LOOKBACK_DAYS)
    for pipeline, recs in sorted(by_pipeline.items()):
        zone = _zone_of(recs)
        if zone is None or source is None:
            continue
        try:
            series = source.history(zone, start, end, timeout_s=timeout_s)
        except Exception:
            continue
        hours = [parse_utc(r.started_at).hour for r in recs]
        usual = max(set(hours), key=hours.count)
        run = timedelta(seconds=max(sorted(r.duration_s for r in recs)[len(recs) // 2], 60.0))
        means: dict[int, list[float]] = {}
        for day in range(ADVICE_LOOKBACK_DAYS):
            for hour in range(24):
                t = start + timedelta(days=day, hours=hour)
                if t + run > end:
                    continue
                mean, covered = window_mean(series, t, t + run)
                if covered >= run.total_seconds() * 0.999:
                    means.setdefault(hour, []).append(mean)
        usual_days = means.get(usual, [])
        if len(usual_days) < ADVICE_MIN_DAYS:
            continue
        usual_mean = sum(usual_days) / len(usual_days)
        best = min(
            (h for h, v in means.items() if len(v) >= ADVICE_MIN_DAYS),
            key=lambda h: sum(means[h]) / len(means[h]),
        )
        best_mean = sum(means[best]) / len(means[best])
        saving = 1.0 - best_mean / usual_mean if usual_mean > 0 else 0.0
        if best == usual or saving < ADVICE_MIN_SAVING:
            continue
        days = min(len(usual_days), len(means[best]))
        out.append(
            {
                "pipeline": pipeline,
                "zone": zone,
                "usual_start_utc": f"{usual:02d}:00",
                "best_start_utc": f"{best:02d}:00",
                "saving_percent": round(100.0 * saving, 1),
                "days_of_history": days,
                "message": (
                    f"over the last {days} days, starting pipeline {pipeline} at {best:02d}:00 "
                    f"UTC instead of {usual:02d}:00 would have cut its CO2 by "
                    f"{100.0 * saving:.0f} % ({zone}, measured history)"
                ),
            }
        )
    return out


def _zone_of(recs: list[Record]) -> str | None:
    for rec in reversed(recs):
        zone = (rec.intensity_source or {}).get("zone")
        if not zone and rec.scheduling:
            zone = (rec.scheduling.get("source") or {}).get("zone")
        if zone:
            return str(zone)
    return None


def shifting_html(section: Mapping[str, Any]) -> str:
    """The section as HTML (nothing when no step was planned)."""
    if not section or not section.get("steps_planned"):
        return ""
    e = html.escape
    kg = float(section.get("co2_avoided_kg_co2e") or 0.0)
    parts = [
        "<h2>Time shifting</h2>",
        "<p>"
        + e(
            f"{section['steps_shifted']} of {section['steps_planned']} planned steps started "
            f"later, {section['hours_waited']:.1f} h waited in all; CO2 avoided against "
            f"starting at once: {kg * 1000:.3g} g ({section['steps_estimated']} steps with "
            f"time-series figures). "
        )
        + "<em>"
        + e(str(section.get("co2_avoided_is", ESTIMATE_LABEL)))
        + "</em></p>",
        "<table><tr><th>Pipeline</th><th>Planned</th><th>Shifted</th><th>Hours waited</th>"
        "<th>CO2 avoided (estimate)</th></tr>",
    ]
    for row in section.get("by_pipeline") or []:
        parts.append(
            f"<tr><td>{e(str(row['pipeline']))}</td><td>{row['steps_planned']}</td>"
            f"<td>{row['steps_shifted']}</td><td>{row['hours_waited']:.1f}</td>"
            f"<td>{row['co2_avoided_kg_co2e'] * 1000:.3g} g</td></tr>"
        )
    parts.append("</table>")
    advice = section.get("recommendations") or []
    if advice:
        parts.append("<ul>" + "".join(f"<li>{e(a['message'])}</li>" for a in advice) + "</ul>")
    return "\n".join(parts)


def report_section(recs: Sequence[Record], period: Period) -> dict[str, Any]:
    """The section for :func:`carbonpipe.esg.report.build_report`, from the period's section
    rows (:attr:`carbonpipe.esg.aggregation.Aggregate.section_rows`); never raises (no advice,
    logged, when the source cannot be read)."""
    import logging

    recs = list(recs)
    advice: list[dict[str, Any]] = []
    if any(_zone_of([r]) for r in recs):  # steps priced with a time series: advice may apply
        try:
            from carbonpipe.intensity.scheduling import configured_source

            source = configured_source()[0]
            now = min(datetime.now(timezone.utc), period.end_exclusive)
            advice = time_shift_advice(recs, source, now=now)
        except Exception as exc:  # no advice without history: the figures stand
            logging.getLogger(__name__).info("carbonpipe: no time-shift advice: %s", exc)
    return shifting_section(recs, advice)


def recommendations(
    section: Mapping[str, Any], pipelines: list[dict[str, Any]], total_kg: float
) -> list[dict[str, Any]]:
    """The report's recommendations for the section's advice: each pipeline's period emissions
    times the saving its history shows (an estimate, as its basis says)."""
    from carbonpipe.esg.advice import _priority

    emitted = {p["pipeline"]: float(p.get("emissions_kg_co2e") or 0.0) for p in pipelines}
    out = []
    for a in section.get("recommendations") or []:
        kg = emitted.get(a["pipeline"], 0.0) * a["saving_percent"] / 100.0
        out.append(
            {
                "category": "Time shift",
                "priority": _priority(kg, total_kg),
                "recommendation": a["message"][0].upper() + a["message"][1:],
                "estimated_saving_kg_co2e": round(kg, 9),
                "estimated_saving_percent": round(100.0 * kg / total_kg, 2) if total_kg else None,
                "basis": (
                    f"{a['days_of_history']} days of {a['zone']}'s measured hourly history: the mean "
                    f"intensity of the pipeline's usual run started at {a['best_start_utc']} UTC "
                    f"against {a['usual_start_utc']} UTC, applied to its emissions this period"
                ),
            }
        )
    return out
