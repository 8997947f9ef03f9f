"""Records as an Impact Framework manifest (``carbonpipe export --format impact-framework``).

The manifest (Green Software Foundation's Impact Framework, ``@grnsft/if`` 1.1.0) holds our
measurements as observations and computes the SCI with the framework's own builtin plugins,
so ``if-run --manifest exported.yml --output out`` recomputes each step's ``sci_g_per_unit``:

* one observation per record with functional units: ``energy`` (kWh: the local CPU, GPU and
  RAM energy times the data centre's PUE), ``grid/carbon-intensity`` (g CO2e/kWh, the
  location-based intensity the record was priced at), ``carbon-remote`` (g CO2e that remote
  model servers reported through ``x_carbon_trace``), ``carbon-embodied`` (g CO2e, the step's
  embodied share; 0 where not measured) and ``functional-units`` (R, the count);
* ``Multiply`` (energy x intensity), ``Sum`` (+ remote = operational O), ``Sum`` (+ embodied
  M = carbon) and ``Sci`` (carbon / functional-units = SCI, g CO2e per unit);
* the tree: one component per functional unit, its records (of every step) in time order; the
  time aggregation sums ``carbon`` and ``functional-units``, so each component's
  ``aggregated`` carries the pipeline's totals for that unit: their ratio is the pipeline's
  SCI per unit (the ESG report's figure).

IF's Sci plugin asks each observation for ``duration >= 1``; a step shorter than one second
is given ``duration: 1`` (no plugin here uses the duration). Records without functional
units have no SCI and are left out (counted in the manifest's description).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from carbonpipe.record import Record, parse_utc

#: The Impact Framework version the manifest is written for (and tested with).
IF_VERSION = "1.1.0"
UNITS_PARAM = "functional-units"
_COMPUTE = ("operational-local", "operational", "carbon", "sci")


def observation(record: Record) -> dict[str, Any]:
    """One record's observation: its measured inputs, as the framework names them."""
    e = record.energy_kwh
    local_kwh = e["cpu"] + e["gpu"] + e["ram"]
    remote_g = sum(float(r.get("emissions_kg_co2e", 0.0)) for r in record.remote) * 1000.0
    embodied = getattr(record, "embodied_kg_co2e", None)
    units = record.functional_units or {}
    return {
        "timestamp": record.started_at,
        "duration": max(1.0, record.duration_s),
        "energy": local_kwh * record.pue,
        "grid/carbon-intensity": record.intensity_g_per_kwh,
        "carbon-remote": remote_g,
        "carbon-embodied": (embodied or 0.0) * 1000.0,
        UNITS_PARAM: float(units.get("count", 0.0)),
        "carbonpipe/step": record.step,
        "carbonpipe/record-id": record.record_id,
    }


def _plugins() -> dict[str, Any]:
    units_meta = {
        "unit": "none",
        "description": "R: units of work the step declared (carbonpipe functional_units.count)",
        "aggregation-method": {"time": "sum", "component": "sum"},
    }
    return {
        "operational-local": {
            "method": "Multiply",
            "path": "builtin",
            "config": {
                "input-parameters": ["energy", "grid/carbon-intensity"],
                "output-parameter": "carbon-operational-local",
            },
        },
        "operational": {
            "method": "Sum",
            "path": "builtin",
            "config": {
                "input-parameters": ["carbon-operational-local", "carbon-remote"],
                "output-parameter": "carbon-operational",
            },
        },
        "carbon": {
            "method": "Sum",
            "path": "builtin",
            "config": {
                "input-parameters": ["carbon-operational", "carbon-embodied"],
                "output-parameter": "carbon",
            },
        },
        "sci": {
            "method": "Sci",
            "path": "builtin",
            "config": {"functional-unit": UNITS_PARAM},
            "parameter-metadata": {"inputs": {UNITS_PARAM: units_meta}},
        },
    }


def manifest(
    records: Iterable[Record], *, pipeline: str | None, period: str | None
) -> dict[str, Any]:
    """The manifest of ``records``: see the module docstring."""
    recs = sorted(records, key=lambda r: (parse_utc(r.started_at), r.record_id))
    with_units = [r for r in recs if r.functional_units]
    tree: dict[str, Any] = {}
    for rec in with_units:
        unit = str((rec.functional_units or {})["name"])
        leaf = tree.setdefault(unit, {"pipeline": {"compute": list(_COMPUTE)}, "inputs": []})
        leaf["inputs"].append(observation(rec))
    left_out = len(recs) - len(with_units)
    what = f"pipeline {pipeline}" if pipeline else "all pipelines"
    return {
        "name": f"carbonpipe SCI: {what}" + (f", {period}" if period else ""),
        "description": (
            f"SCI (ISO/IEC 21031:2024) of {len(with_units)} carbonpipe step record(s) with "
            f"functional units ({left_out} without units left out): per observation "
            "carbon = energy (kWh incl. PUE) x grid/carbon-intensity (location-based) "
            "+ carbon-remote + carbon-embodied, sci = carbon / functional-units (g CO2e)."
        ),
        "tags": {"kind": "carbonpipe", "complexity": "simple", "category": "sci"},
        "aggregation": {"metrics": ["carbon", UNITS_PARAM], "type": "horizontal"},
        "initialize": {"plugins": _plugins()},
        "tree": {"children": tree},
    }


def write_manifest(
    records: Iterable[Record],
    out: TextIO,
    *,
    pipeline: str | None = None,
    period: str | None = None,
) -> int:
    """Write the manifest as YAML to ``out``; return how many records it observes."""
    import yaml

    doc = manifest(records, pipeline=pipeline, period=period)
    yaml.safe_dump(doc, out, sort_keys=False, allow_unicode=True, width=100)
    return sum(len(leaf["inputs"]) for leaf in doc["tree"]["children"].values())


def sci_by_unit(records: Iterable[Record]) -> Mapping[str, float]:
    """The pipeline's SCI per unit name as carbonpipe computes it: sum(O + M) g / sum(R)."""
    carbon: dict[str, float] = {}
    count: dict[str, float] = {}
    for rec in records:
        if not rec.functional_units:
            continue
        unit = str(rec.functional_units["name"])
        embodied = getattr(rec, "embodied_kg_co2e", None) or 0.0
        carbon[unit] = carbon.get(unit, 0.0) + (rec.emissions_kg_co2e + embodied) * 1000.0
        count[unit] = count.get(unit, 0.0) + float(rec.functional_units["count"])
    return {u: carbon[u] / count[u] for u in carbon}
