"""Charts (matplotlib, Agg, no pyplot state) and the self-contained HTML page of the ESG report.

Everything here is drawn from ``report.json`` (or, for a pipeline's trend, from an aggregate),
so the page shows exactly what the JSON says. PNGs carry no timestamp or version metadata and the
page embeds them as base64, so a re-run writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from carbonpipe.esg import Aggregate

CHART_NAMES = ("daily_emissions.png", "breakdown.png", "regions.png")
_GREEN = "#2e7d32"
_AMBER = "#f9a825"
_RED = "#c62828"
_GREY = "#9e9e9e"
_PALETTE = ("#2e7d32", "#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#558b2f", "#4e342e")
_TOP_N = 10
_WIDTH_IN = 10.4  # at 100 dpi: the width of the page's content column


def mass_unit(max_kg: float) -> tuple[str, float]:
    """Return the unit (g, kg or t CO2e) that shows ``max_kg`` best, and the factor from kg."""
    if max_kg >= 1000:
        return "t", 0.001
    if max_kg >= 1:
        return "kg", 1.0
    return "g", 1000.0


def sig(value: float | None, digits: int = 3) -> str:
    """Format a number to ``digits`` significant figures, thousands separated, no exponent."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:,.{decimals}f}"


def mass(kg: float | None) -> str:
    """Format a mass of CO2e in the unit that suits it."""
    if kg is None:
        return "-"
    unit, k = mass_unit(abs(kg))
    return f"{sig(kg * k)} {unit} CO2e"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" (version) or date metadata: the same data must give the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, axis="y", alpha=0.3)


def daily_chart(daily: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Daily emissions as bars with the period's daily average as a dashed line."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    days = date2num([date.fromisoformat(d["date"]) for d in daily])
    kg = [float(d["emissions_kg_co2e"]) for d in daily]
    unit, k = mass_unit(max(kg, default=0.0))
    values = [v * k for v in kg]
    avg = sum(values) / len(values) if values else 0.0
    fig = _figure(_WIDTH_IN, 3.6)
    ax = fig.add_subplot()
    ax.bar(days, values, color=_GREEN, width=0.8, label="daily emissions")
    ax.axhline(
        avg, color=_RED, linestyle="--", linewidth=1.5, label=f"daily average: {sig(avg)} {unit}"
    )
    ax.xaxis_date()
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(f"{unit} CO2e per day")
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, fontsize=9)
    _style(ax)
    return _png(fig)


def _hbar(ax: Axes, labels: list[str], kg: list[float], title: str, color: str) -> None:
    unit, k = mass_unit(max(kg, default=0.0))
    values = [v * k for v in kg]
    ax.barh(labels[::-1], values[::-1], color=color)
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {sig(v)}", va="center", fontsize=8)
    ax.set_xlabel(f"{unit} CO2e")
    ax.set_title(title, loc="left", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.2)


def breakdown_chart(report: Mapping[str, Any]) -> bytes:
    """Emissions by team and by pipeline (the top ten of each), side by side."""
    teams = report["team_breakdown"][:_TOP_N]
    pipes = report["pipeline_breakdown"][:_TOP_N]
    fig = _figure(_WIDTH_IN, max(2.6, 0.35 * max(len(teams), len(pipes), 1) + 1.4))
    left, right = fig.subplots(1, 2)
    _hbar(
        left, [t["team"] for t in teams], [t["emissions_kg_co2e"] for t in teams], "By team", _GREEN
    )
    _hbar(
        right,
        [p["pipeline"] for p in pipes],
        [p["emissions_kg_co2e"] for p in pipes],
        "By pipeline",
        "#1565c0",
    )
    return _png(fig)


def _region_label(r: Mapping[str, Any]) -> str:
    if r.get("region"):
        return f"{r['provider']}:{r['region']}"
    return r.get("country_iso") or "unknown"


def regions_chart(report: Mapping[str, Any]) -> bytes:
    """Emissions per location with its energy-weighted grid intensity beside it."""
    regions = report["region_breakdown"][:_TOP_N]
    labels = [_region_label(r) for r in regions]
    fig = _figure(_WIDTH_IN, max(2.6, 0.35 * max(len(regions), 1) + 1.4))
    left, right = fig.subplots(1, 2, sharey=True)
    _hbar(left, labels, [r["emissions_kg_co2e"] for r in regions], "Emissions by location", _GREEN)
    intensity = [r["intensity_g_per_kwh"] or 0.0 for r in regions]
    colors = [_GREEN if v < 100 else (_AMBER if v < 300 else _RED) for v in intensity]
    right.barh(labels[::-1], intensity[::-1], color=colors[::-1])
    for y, v in enumerate(intensity[::-1]):
        right.text(v, y, f" {sig(v)}", va="center", fontsize=8)
    right.set_xlabel("g CO2e per kWh (energy-weighted)")
    right.set_title("Grid intensity", loc="left", fontsize=11)
    right.spines[["top", "right"]].set_visible(False)
    right.margins(x=0.2)
    return _png(fig)


def report_charts(report: Mapping[str, Any]) -> dict[str, bytes]:
    """Draw the report's charts, keyed by artifact name."""
    label = report["generated_for"]
    return {
        "daily_emissions.png": daily_chart(report["daily"], f"Daily emissions, {label}"),
        "breakdown.png": breakdown_chart(report),
        "regions.png": regions_chart(report),
    }


def pipeline_trend(agg: Aggregate, pipeline: str) -> bytes:
    """A pipeline's daily emissions stacked by step, with the daily average line."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    days = agg.period.days()
    x = date2num(days)
    steps: dict[str, dict[str, float]] = {}
    for (day, step), m in agg.breakdown("date", "step"):
        steps.setdefault(step, {})[day] = m.emissions_kg_co2e
    totals = [sum(s.get(d.isoformat(), 0.0) for s in steps.values()) for d in days]
    unit, k = mass_unit(max(totals, default=0.0))
    fig = _figure(_WIDTH_IN, 3.8)
    ax = fig.add_subplot()
    bottom = [0.0] * len(days)
    ranked = sorted(steps, key=lambda s: -sum(steps[s].values()))
    for i, step in enumerate(ranked):
        values = [steps[step].get(d.isoformat(), 0.0) * k for d in days]
        color = _PALETTE[i % len(_PALETTE)] if i < len(_PALETTE) - 1 else _GREY
        ax.bar(x, values, bottom=bottom, width=0.8, color=color, label=step)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    avg = sum(totals) * k / len(days) if days else 0.0
    ax.axhline(
        avg, color=_RED, linestyle="--", linewidth=1.5, label=f"daily average: {sig(avg)} {unit}"
    )
    ax.xaxis_date()
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(f"{unit} CO2e per day")
    ax.set_title(
        f"{pipeline}: daily emissions by step, {agg.period.start} to {agg.period.end} "
        f"(total {mass(sum(totals))})",
        loc="left",
        fontsize=11,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8, title="step")
    _style(ax)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# The HTML page

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;
background:#f4f6f4;color:#1b1f1b}
main{max-width:1040px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:2px solid #2e7d32;
padding-bottom:4px}.sub{color:#555;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:600;color:#2e7d32}.card .l{font-size:12px;color:#555}
img{width:100%;background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e3e3;vertical-align:top}
th{background:#e8f1e8}td.n{text-align:right;white-space:nowrap}
.bar{background:#e0e0e0;border-radius:4px;height:14px;width:100%;position:relative}
.bar span{display:block;height:14px;border-radius:4px}
.High{color:#c62828;font-weight:600}.Medium{color:#ef6c00;font-weight:600}.Low{color:#555}
.note{font-size:12px;color:#555}.src{font-size:11px;color:#666}
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{sig(100 * share)}%"


def _cards(report: Mapping[str, Any]) -> str:
    s = report["executive_summary"]
    eq = s["equivalents"]
    cards = [
        (mass(s["total_emissions_kg_co2e"]), "location-based emissions"),
        (f"{sig(s['total_energy_kwh'])} kWh", "energy (all devices)"),
        (
            f"{report['activity']['step_attempts']:,} / {report['activity']['runs']:,}",
            "step attempts / runs",
        ),
        (f"{sig(s['intensity_g_per_kwh'])} g/kWh", "grid intensity (energy-weighted)"),
        (f"{sig(eq['car_km'])} km", "driven by an average petrol car"),
        (f"{sig(eq['tree_seedlings_grown_10_years'])}", "tree seedlings grown for 10 years"),
        (_pct(s["estimated_energy_share"]), "of energy estimated, not measured"),
        (_pct(s["failed_attempt_share"]), "of attempts failed or killed"),
    ]
    market = report["emissions"]["market_based"]
    if market:
        cards.insert(1, (mass(market["kg_co2e"]), market["label"]))
    if s["emissions_per_developer_kg_co2e"] is not None:
        cards.append(
            (mass(s["emissions_per_developer_kg_co2e"]), f"per developer ({s['developers']})")
        )
    inner = "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="l">{_e(label)}</div></div>'
        for v, label in cards
    )
    return f'<div class="cards">{inner}</div>'


def _budget_bars(budgets: Sequence[Mapping[str, Any]]) -> str:
    if not budgets:
        return '<p class="note">No budgets configured (carbon.yaml <code>budgets:</code>).</p>'
    rows = []
    for b in budgets:
        pct = b["percent"]
        color = _RED if b["exceeded"] else (_AMBER if b["warning"] else _GREEN)
        bar = f'<div class="bar"><span style="width:{min(pct, 100.0):.1f}%;background:{color}"></span></div>'
        rows.append(
            [
                _e(b["scope"]),
                _e(b["period_id"]),
                bar,
                f"{sig(pct)}%",
                _e(mass(b["used_kg_co2e"])),
                _e(mass(b["limit_kg_co2e"])),
            ]
        )
    return _table(["Scope", "Period", "Utilisation", "%", "Used", "Limit"], rows, numeric=(3, 4, 5))


def report_html(report: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    """Render the self-contained page: headline figures, charts, budgets, recommendations."""
    per = report["reporting_period"]
    org = report["organisation"]
    boundary = org["boundary"] or {}
    title = f"Carbon report {report['generated_for']}" + (
        f" - {org['name']}" if org["name"] else ""
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(per["start"])} to {_e(per["end"])} (UTC, {per["days"]} days)'
        + (
            f" &middot; boundary: {_e(boundary.get('approach'))}"
            if boundary.get("approach")
            else ""
        )
        + (f" &middot; pipeline {_e(org['pipeline_filter'])}" if org.get("pipeline_filter") else "")
        + "</p>",
        _cards(report),
    ]
    if boundary.get("description"):
        parts.append(f'<p class="note">{_e(boundary["description"])}</p>')
    parts += ["<h2>Trend</h2>", _img(charts["daily_emissions.png"], "Daily emissions with average")]
    parts += ["<h2>Breakdown</h2>", _img(charts["breakdown.png"], "Emissions by team and pipeline")]
    parts += ["<h2>Regions</h2>", _img(charts["regions.png"], "Emissions and intensity by region")]
    parts += ["<h2>Budgets</h2>", _budget_bars(report["budgets"])]

    recs = report["recommendations"]
    parts.append("<h2>Recommendations</h2>")
    if recs:
        parts.append(
            _table(
                ["Priority", "Category", "Recommendation", "Saving", "% of total"],
                [
                    [
                        f'<span class="{_e(r["priority"])}">{_e(r["priority"])}</span>',
                        _e(r["category"]),
                        _e(r["recommendation"]),
                        _e(mass(r["estimated_saving_kg_co2e"])),
                        "-"
                        if r["estimated_saving_percent"] is None
                        else f"{sig(r['estimated_saving_percent'])}%",
                    ]
                    for r in recs
                ],
                numeric=(3, 4),
            )
        )
    else:
        parts.append('<p class="note">Nothing to recommend for this period.</p>')

    targets = report["targets"]
    if targets:
        parts.append("<h2>Targets</h2>")
        rows = []
        for t in targets:
            if t["kind"] == "intensity":
                now, goal = (
                    f"{sig(t['current_intensity_g_per_kwh'])} g/kWh",
                    f"{sig(t['target_intensity_g_per_kwh'])} g/kWh",
                )
            else:
                now, goal = (
                    f"{mass(t['annualised_kg_co2e'])}/yr",
                    f"{mass(t['target_kg_co2e_per_year'])}/yr",
                )
            rows.append(
                [
                    _e(t["name"]),
                    _e(t["scope"]),
                    _e(now),
                    _e(goal),
                    _e(f"{sig(t['progress_percent'])}%"),
                    "yes" if t["achieved"] else "no",
                ]
            )
        parts.append(
            _table(
                ["Target", "Scope", "Now", "Goal", "Progress", "Achieved"], rows, numeric=(2, 3, 4)
            )
        )

    parts.append("<h2>Teams</h2>")
    parts.append(
        _table(
            [
                "Team",
                "Emissions",
                "Share",
                "Energy kWh",
                "Attempts",
                "Runs",
                "Failed",
                "Per developer",
            ],
            [
                [
                    _e(t["team"]),
                    _e(mass(t["emissions_kg_co2e"])),
                    _pct(t["share_of_emissions"]),
                    sig(t["energy_kwh"]["total"]),
                    f"{t['records']:,}",
                    f"{t.get('runs', 0):,}",
                    _pct(t["failed_attempt_share"]),
                    _e(mass(t["emissions_per_developer_kg_co2e"])),
                ]
                for t in report["team_breakdown"]
            ],
            numeric=(1, 2, 3, 4, 5, 6, 7),
        )
    )
    regressions = report["regressions"]
    if regressions:
        parts.append("<h2>Carbon regressions</h2>")
        parts.append(
            _table(
                ["Date", "Pipeline / step", "Emissions", "Baseline", "Increase", "Action"],
                [
                    [
                        _e(a.get("date")),
                        _e(f"{a.get('pipeline')}/{a.get('step')}"),
                        _e(mass(a.get("emissions_kg_co2e"))),
                        _e(mass(a.get("baseline_mean_kg_co2e"))),
                        _e(f"+{sig(a.get('increase_percent'))}%"),
                        _e(a.get("action")),
                    ]
                    for a in regressions[:50]
                ],
                numeric=(2, 3, 4),
            )
        )

    ghg = report["ghg_scope"]
    parts.append("<h2>GHG Protocol scope</h2>")
    parts.append(
        _table(
            ["Scope", "Applies to", "Emissions", "Share"],
            [
                [
                    _e(c["scope"]),
                    _e(c["applies_to"]),
                    _e(mass(c["emissions_kg_co2e"])),
                    _pct(c["share"]),
                ]
                for c in ghg["classification"]
            ],
            numeric=(2, 3),
        )
    )
    for s in ghg["statements"].values():
        parts.append(
            f"<p><b>{_e(s['title'])}.</b> {_e(s['statement'])} "
            f'<span class="src">Source: {_e(s["source"])} ({_e(s["vintage"])}).</span></p>'
        )

    parts.append("<h2>Method and sources</h2>")
    meas = report["measurement"]
    parts.append(
        f'<p class="note">{_e(report["methodology"]["formula"])}. Estimated share of energy: '
        f"{_pct(meas['estimated_share_of_energy'])}; measured: {_pct(meas['measured_share_of_energy'])}.</p>"
    )
    parts.append(
        _table(
            ["Location", "Intensity source", "Vintage", "Kind", "g/kWh", "Energy kWh"],
            [
                [
                    _e(_region_label(s)),
                    _e(s["name"]),
                    _e(s["vintage"]),
                    _e(s["kind"]),
                    sig(s["intensity_g_per_kwh"]),
                    sig(s["energy_kwh"]),
                ]
                for s in report["intensity_sources"]
            ],
            numeric=(4, 5),
        )
    )
    factors = report["executive_summary"]["equivalents"]["factors"]
    parts.append(
        '<p class="src">Equivalents: '
        + "; ".join(
            f"{_e(f['name'])} = {_e(f['value'])} {_e(f['unit'])} ({_e(f['source'])}, {_e(f['vintage'])})"
            for f in factors
        )
        + ".</p>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
