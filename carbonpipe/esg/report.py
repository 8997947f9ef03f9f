"""The ESG report document (``carbonpipe.esg_report/1``) built from an aggregate.

One function per section (summary, measurement, sources, breakdowns, budgets, targets,
optimisation impact, recommendations); :func:`build_report` puts them together.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.stores.base import Store

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget
from carbonpipe.esg.advice import _optimisation_impact, _recommendations
from carbonpipe.esg.aggregation import (
    _NG_PER_KG,
    _SUMS,
    _ZERO,
    Aggregate,
    Metrics,
    _round,
    _share,
)
from carbonpipe.esg.config import CLOUD_PROVIDERS, SCOPES, EsgConfig, MarketFactor, statements
from carbonpipe.esg.period import Period
from carbonpipe.esg.revisions import revisions_block
from carbonpipe.esg.shifting import recommendations as time_shift_recommendations
from carbonpipe.esg.shifting import report_section

log = logging.getLogger(__name__)
REPORT_SCHEMA = "carbonpipe.esg_report/1"
NO_TEAM = "(none)"


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
        by_scope[_scope_of(provider, config)] += m._s("emissions_ng")
    emissions: dict[str, Any] = {
        "method": "location-based",
        "location_based_kg_co2e": total_kg,
        "location_based_t_co2e": total.emissions_t_co2e,
        "by_scope_kg_co2e": {s: v / _NG_PER_KG for s, v in by_scope.items()},
        "market_based": _market_based(agg, config),
    }
    ghg = {
        "classification": [
            {
                "scope": scope,
                "applies_to": _applies_to(scope, config),
                "emissions_kg_co2e": by_scope[scope] / _NG_PER_KG,
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
        "revisions": revisions_block(agg),
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
        "sci": _sci(agg),
        "time_shifting": report_section(agg.section_rows, agg.period),
        "methodology": {
            **doc["methodology"],
            "emission_factors_in_use": sorted(
                {f"{s['name']} ({s['vintage']})" for s in _sources(agg)}
            ),
        },
    }
    report["recommendations"] += time_shift_recommendations(
        report["time_shifting"], report["pipeline_breakdown"], total_kg
    )
    return report


def _sci(agg: Aggregate) -> list[dict[str, Any]]:
    """The SCI section (:mod:`carbonpipe.esg.sci`), from the rows the aggregation read."""
    from carbonpipe.esg.sci import sci_section

    try:
        return sci_section(agg.section_rows)
    except Exception as exc:  # the rest of the report stands
        log.warning("carbonpipe: SCI section left empty: %s", exc)
        return []


def _market_based(agg: Aggregate, config: EsgConfig) -> dict[str, Any] | None:
    if not config.market_factors:
        return None
    from carbonpipe.units import exact_scale

    covered_nwh = 0
    ng = 0
    for (provider, region), m in agg.breakdown("provider", "region"):
        s = dict(zip(_SUMS, m.sums, strict=True))
        factor = _market_factor(config, provider, region)
        if factor is None:
            ng += s["emissions_ng"]  # location-based where no contractual factor exists
            continue
        covered_nwh += s["facility_nwh"]
        # nWh x g/kWh = pg: / 1000 = ng
        ng += exact_scale(factor.intensity_g_per_kwh, s["facility_nwh"], 1000) + s["remote_ng"]
    facility = agg.totals()._s("facility_nwh")
    return {
        "label": config.market_label,
        "kg_co2e": ng / _NG_PER_KG,
        "covered_energy_share": _share(covered_nwh, facility),
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
            "share_of_energy": _share(m._s("total_nwh"), total._s("total_nwh")),
        }
        for k, m in agg.breakdown("method")
    ]
    est_share = total.estimated_energy_share
    return {
        "by_method": methods,
        "estimated_share_of_energy": _share(total._s("estimated_nwh"), total._s("total_nwh")),
        "measured_share_of_energy": round(1.0 - est_share, 6) if total._s("total_nwh") else 0.0,
        "estimated_share_of_records": _share(total._s("estimated"), total.records),
        "estimated_share_of_emissions": _share(total._s("estimated_ng"), total._s("emissions_ng")),
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
        "total_emissions_ng": total._s("emissions_ng"),  # the exact sums behind the figures
        "total_energy_kwh": total.energy_total_kwh,
        "total_energy_nwh": total._s("total_nwh"),
        "intensity_g_per_kwh": _round(total.intensity_g_per_kwh, 4),
        "per_team_kg_co2e": {t["team"]: t["emissions_kg_co2e"] for t in teams},
        "developers": developers or None,
        "emissions_per_developer_kg_co2e": sized_kg / developers if developers else None,
        "teams_without_size": sorted(t["team"] for t in teams if not t["developers"]),
        "equivalents": {
            # Six significant digits, not decimals: a small footprint keeps its figures.
            "car_km": _sig6(eq.car_km),
            "tree_seedlings_grown_10_years": _sig6(kg / factors.tree_seedling_co2.value),
            "tree_minutes": _sig6(eq.tree_minutes),
            "smartphone_charges": _sig6(eq.smartphone_charges),
            "led_bulb_hours": _sig6(eq.led_bulb_hours),
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
        "estimated_energy_share": _share(total._s("estimated_nwh"), total._s("total_nwh")),
    }


def _sig6(value: float) -> float:
    return float(f"{value:.6g}")


def _budget_windows(budget: Budget, per: Period) -> list[Any]:
    from carbonpipe.budgets.period import period_window

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
    if store is None:
        return []
    from carbonpipe.budgets.definitions import LISTED_KINDS, read_definitions, union_budgets
    from carbonpipe.budgets.ledger import BudgetLedger

    out = []
    # carbon.yaml's budgets, and those given in code that steps recorded in the store.
    stored = read_definitions(store, kinds=LISTED_KINDS)
    for sourced in union_budgets(config.budgets, stored):
        budget = sourced.budget
        for w in _budget_windows(budget, agg.period):
            # Status as of the window's (or the period's) last instant: repeatable, unlike "now".
            end = min(w.end or agg.period.end_exclusive, agg.period.end_exclusive)
            as_of = end - timedelta(microseconds=1)
            ledger = BudgetLedger(store, budgets=[budget], clock=_fixed_clock(as_of))
            st = ledger.status(budget.on_book())  # a total-basis budget reads its total book
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
                    "defined_in": sourced.source,
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
