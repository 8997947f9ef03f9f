"""The ESG report's self-contained HTML page, drawn from ``report.json`` and its charts.

Every figure on the page comes from the report document, so the page shows exactly what the
JSON says; one function per section (cards, tables, budget bars) and :func:`report_html`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from carbonpipe.esg.charts import _AMBER, _GREEN, _RED, _region_label, mass, sig
from carbonpipe.units import format_distance, format_energy, sig3

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
        (format_energy(s["total_energy_kwh"]), "energy (all devices)"),
        (
            f"{report['activity']['step_attempts']:,} / {report['activity']['runs']:,}",
            "step attempts / runs",
        ),
        (f"{sig(s['intensity_g_per_kwh'])} g/kWh", "grid intensity (energy-weighted)"),
        (format_distance(eq["car_km"]), "driven by an average petrol car"),
        (sig3(eq["tree_seedlings_grown_10_years"]), "tree seedlings grown for 10 years"),
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
        return (
            '<p class="note">No budgets configured (carbon.yaml <code>budgets:</code>) '
            "and none used by a step (store <code>budgets/definitions/</code>).</p>"
        )
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
                _e(b.get("defined_in", "carbon.yaml")),
            ]
        )
    head = ["Scope", "Period", "Utilisation", "%", "Used", "Limit", "Defined in"]
    return _table(head, rows, numeric=(3, 4, 5))


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
                "Energy",
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
                    _e(format_energy(t["energy_kwh"]["total"])),
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

    from carbonpipe.esg.sci import sci_html

    parts.append(sci_html(report.get("sci") or []))
    from carbonpipe.esg.shifting import shifting_html

    parts.append(shifting_html(report.get("time_shifting") or {}))
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
            ["Location", "Intensity source", "Vintage", "Kind", "g/kWh", "Energy"],
            [
                [
                    _e(_region_label(s)),
                    _e(s["name"]),
                    _e(s["vintage"]),
                    _e(s["kind"]),
                    sig(s["intensity_g_per_kwh"]),
                    _e(format_energy(s["energy_kwh"])),
                ]
                for s in report["intensity_sources"]
            ],
            numeric=(4, 5),
        )
    )
    revised = report.get("revisions") or {}
    if revised.get("revised_records"):
        parts.append(
            f'<p class="src">{revised["revised_records"]} figures revised after the fact with a '
            "time series (carbonpipe reprice): "
            + "; ".join(
                f"{_e(r['source'])} ({_e(r['vintage'])}): {r['records']} records"
                for r in revised.get("sources", [])
            )
            + ".</p>"
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
