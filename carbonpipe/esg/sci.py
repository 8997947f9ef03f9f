"""The ESG report's SCI section: Software Carbon Intensity per pipeline and functional unit.

``SCI = (O + M) per R`` (ISO/IEC 21031:2024), summed over the period's records that declared
functional units (``functional_units``): ``O`` their operational emissions (local energy at the
data centre's PUE times the location-based grid intensity, plus what remote model servers
reported through ``x_carbon_trace``), ``M`` their embodied share, ``R`` their units. Each
entry discloses what the SCI specification asks a report to: the score, O and M apart, E and
I, the intensity sources, the software boundary (what is in, what is out) and every factor
used (PUE and its source, the embodied method, source and lifetime).

The section reads the rows the aggregation pass already read (:mod:`carbonpipe.esg.section_rows`:
the compacted parts carry the functional units since ``carbonpipe.compact/4``), not the JSON
records again; records of older parts contribute nothing to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carbonpipe.esg.section_rows import SectionInput as Record

#: What the SCI of a carbonpipe step covers, and what it leaves out (the software boundary).
BOUNDARY_IN = (
    "CPU energy of the step's process or machine (RAPL, CPU load or TDP model)",
    "GPU energy (NVML)",
    "RAM energy",
    "data-centre overhead: local energy times the PUE",
    "remote model inference charged through x_carbon_trace (the server's reported emissions)",
    "embodied emissions share of the hardware (M), where measured",
)
BOUNDARY_OUT = (
    "networking (data transfer between services and regions)",
    "storage (object stores, disks, databases)",
    "idle or reserved capacity not used by a tracked step",
    "training-data creation and labelling",
    "end-user devices",
)
METHOD = (
    "SCI = (O + M) / R per ISO/IEC 21031:2024; O = E x I with E the local energy at the data "
    "centre's PUE and I the location-based grid intensity (market-based instruments are "
    "excluded), plus remote servers' reported emissions; M the embodied share; R the declared "
    "functional units summed over the period."
)
NOT_MEASURED = "embodied not measured: M = 0 (the score covers operational emissions only)"


def sci_section(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One entry per (pipeline, unit), sorted: see the module docstring."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for rec in records:
        if rec.functional_units:
            groups.setdefault((rec.pipeline, str(rec.functional_units["name"])), []).append(rec)
    return [_entry(p, u, recs) for (p, u), recs in sorted(groups.items())]


def _embodied(rec: Record) -> float | None:
    value = getattr(rec, "embodied_kg_co2e", None)
    return None if value is None else float(value)


def _entry(pipeline: str, unit: str, recs: list[Record]) -> dict[str, Any]:
    units = sum(float((r.functional_units or {})["count"]) for r in recs)
    o_g = sum(r.emissions_kg_co2e for r in recs) * 1000.0
    measured = [r for r in recs if _embodied(r) is not None]
    m_g = sum(_embodied(r) or 0.0 for r in recs) * 1000.0
    local = [
        (r.energy_kwh["cpu"] + r.energy_kwh["gpu"] + r.energy_kwh["ram"]) * r.pue for r in recs
    ]
    e_local = sum(local)
    remote_kwh = sum(r.energy_kwh["remote"] for r in recs)
    remote_g = sum(float(x.get("emissions_kg_co2e", 0.0)) for r in recs for x in r.remote) * 1000
    o_local_g = sum(k * r.intensity_g_per_kwh for k, r in zip(local, recs, strict=True))
    return {
        "pipeline": pipeline,
        "functional_unit": unit,
        "records": len(recs),
        "steps": sorted({r.step for r in recs}),
        "units": units,
        "sci_g_per_unit": (o_g + m_g) / units,
        "operational_g_co2e": o_g,
        "embodied_g_co2e": m_g,
        "embodied_measured_share": len(measured) / len(recs),
        "energy_kwh": e_local + remote_kwh,
        "energy_local_incl_pue_kwh": e_local,
        "energy_remote_kwh": remote_kwh,
        "remote_g_co2e": remote_g,
        "intensity_g_per_kwh": o_local_g / e_local if e_local else None,
        "intensity_method": "location-based",
        "intensity_sources": _count(
            recs,
            lambda r: {k: r.intensity_source.get(k) for k in ("name", "vintage", "kind")},
        ),
        "pue": _count(recs, _pue),
        "embodied": _count(recs, _embodied_factor),
        "boundary": {"included": list(BOUNDARY_IN), "excluded": list(BOUNDARY_OUT)},
        "method": METHOD,
    }


def _pue(rec: Record) -> dict[str, Any]:
    source = getattr(rec, "pue_source", None)
    if isinstance(source, dict):
        text = ", ".join(str(source[k]) for k in ("name", "kind", "vintage") if source.get(k))
    else:
        text = "carbon.yaml pue / CARBONPIPE_PUE (1.0 when unset)"
    return {"value": rec.pue, "source": text}


def _embodied_factor(rec: Record) -> dict[str, Any]:
    block = getattr(rec, "embodied", None)
    if _embodied(rec) is None or not isinstance(block, dict):
        return {"method": None, "note": NOT_MEASURED}
    keys = ("method", "source", "vintage", "instance_type", "share", "lifetime_years", "note")
    return {k: block.get(k) for k in keys}


def _count(recs: list[Record], key: Any) -> list[dict[str, Any]]:
    """The distinct values of ``key(record)``, each with how many records used it."""
    found: dict[str, tuple[dict[str, Any], int]] = {}
    for rec in recs:
        value = key(rec)
        k = repr(sorted(value.items()))
        found[k] = (value, found.get(k, (value, 0))[1] + 1)
    return [{**v, "records": n} for v, n in sorted(found.values(), key=lambda x: -x[1])]


def sci_html(entries: list[dict[str, Any]]) -> str:
    """The report page's SCI section: a table per pipeline and unit, then each disclosure."""
    from html import escape

    from carbonpipe.units import format_energy, format_mass

    def e(value: Any) -> str:
        return escape("-" if value is None else str(value))

    if not entries:
        return (
            "<h2>Software Carbon Intensity (SCI)</h2>"
            '<p class="note">No step declared functional units in this period.</p>'
        )
    head = ["Pipeline", "Unit", "SCI per unit", "O", "M", "E", "I", "Units", "Records"]
    rows = []
    for x in entries:
        i = x["intensity_g_per_kwh"]
        cells = [
            x["pipeline"],
            x["functional_unit"],
            format_mass(x["sci_g_per_unit"] / 1000.0),
            format_mass(x["operational_g_co2e"] / 1000.0),
            format_mass(x["embodied_g_co2e"] / 1000.0),
            format_energy(x["energy_kwh"]),
            "-" if i is None else f"{i:.4g} g/kWh",
            f"{x['units']:g}",
            x["records"],
        ]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts = [
        "<h2>Software Carbon Intensity (SCI)</h2>",
        f'<p class="note">{e(METHOD)}</p>',
        "<table><thead><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>",
    ]
    for x in entries:
        sources = "; ".join(
            f"{s['name']} ({s['vintage']}, {s['kind']}): {s['records']} record(s)"
            for s in x["intensity_sources"]
        )
        pue = "; ".join(f"{p['value']:g} ({p['source']})" for p in x["pue"])
        embodied = "; ".join(
            str(m.get("note"))
            if m.get("method") is None
            else ", ".join(f"{k} {m[k]}" for k in m if k != "records" and m[k] is not None)
            for m in x["embodied"]
        )
        parts.append(
            f"<h3>{e(x['pipeline'])} per {e(x['functional_unit'])}: disclosure</h3><ul>"
            f"<li>Intensity (location-based): {e(sources)}</li>"
            f"<li>PUE: {e(pue)}</li>"
            f"<li>Embodied: {e(embodied)}</li>"
            f"<li>Inside the boundary: {e('; '.join(x['boundary']['included']))}</li>"
            f"<li>Outside the boundary: {e('; '.join(x['boundary']['excluded']))}</li>"
            "</ul>"
        )
    return "\n".join(parts)
