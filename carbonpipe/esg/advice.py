"""The report's advice: what moving regions would save, and the prioritised recommendations."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from carbonpipe.esg.aggregation import (
    _NG_PER_KG,
    Aggregate,
    Metrics,
    _round,
)
from carbonpipe.esg.config import EsgConfig

log = logging.getLogger(__name__)
# Priority of a recommendation by the share of the period's emissions it would save.
HIGH_PRIORITY_SHARE = 0.10
MEDIUM_PRIORITY_SHARE = 0.02
# An estimated-energy share above this makes "measure more" a recommendation.
ESTIMATED_SHARE_WORTH_FLAGGING = 0.25
# Steps with regressions get a recommendation each, up to this many; the rest share one.
REGRESSIONS_LISTED = 5


def _optimisation_impact(agg: Aggregate, config: EsgConfig, total_kg: float) -> dict[str, Any]:
    from carbonpipe.intensity.table import regional_recommendations

    workloads = agg.breakdown("pipeline", "step", "provider", "region", "country_iso")
    workloads.sort(key=lambda w: (-w[1]._s("emissions_ng"), w[0]))
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
            # nWh x g/kWh = pg: / 1000 = ng
            saving_ng = m._s("facility_nwh") * (current - rec.intensity_g_per_kwh) / 1000
            saving_kg = max(round(saving_ng), 0) / _NG_PER_KG
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
    failed_kg = total._s("failed_ng") / _NG_PER_KG
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
