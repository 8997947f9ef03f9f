"""Charts of the ESG report (matplotlib, Agg, no pyplot state), as PNG bytes.

Drawn from ``report.json`` (or, for a pipeline's trend, from an aggregate); PNGs carry no
timestamp or version metadata, so a rerun writes the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from carbonpipe.esg.aggregation import Aggregate

CHART_NAMES = ("daily_emissions.png", "breakdown.png", "regions.png")
_GREEN = "#2e7d32"
_AMBER = "#f9a825"
_RED = "#c62828"
_GREY = "#9e9e9e"
_PALETTE = ("#2e7d32", "#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#558b2f", "#4e342e")
_TOP_N = 10
_WIDTH_IN = 10.4  # at 100 dpi: the width of the page's content column


def mass_unit(max_kg: float) -> tuple[str, float]:
    """Return the unit (µg, mg, g, kg or t CO2e) that shows ``max_kg`` with three significant
    digits, and the factor from kg."""
    from carbonpipe.units import MASS_UNITS

    grams = max_kg * 1000
    unit, size = next(((u, s) for u, s in MASS_UNITS if s == 1.0))
    if grams > 0:
        for u, s in MASS_UNITS:
            if grams >= s or u == MASS_UNITS[0][0]:
                unit, size = u, s
    return unit, 1000 / size


def sig(value: float | None, digits: int = 3) -> str:
    """Format a number to ``digits`` significant figures, thousands separated, no exponent."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:,.{decimals}f}"


def mass(kg: float | None) -> str:
    """Format a mass of CO2e in the unit that keeps three significant digits (µg to t)."""
    from carbonpipe.units import format_mass

    return "-" if kg is None else f"{format_mass(kg)} CO2e"


def _figure(width: float, height: float) -> Figure:
    with needs_extra("esg", "ESG charts"):
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
    with needs_extra("esg", "ESG charts"):
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
    with needs_extra("esg", "ESG charts"):
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
