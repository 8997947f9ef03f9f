"""What the ESG report's SCI and time-shifting sections read: the rows the aggregation pass
already has, not the JSON records again.

:func:`section_rows` keeps, from a day's rows (its compacted part plus the JSON records the
part lacks, as :mod:`carbonpipe.esg.aggregation` reads them once), the records that declared
functional units, planned their start (``scheduling``), or were priced with a time series (a
zone), as :class:`SectionRow` objects with the attributes of a
:class:`~carbonpipe.record.Record` that :mod:`carbonpipe.esg.sci` and
:mod:`carbonpipe.esg.shifting` use. Rows of parts written before ``carbonpipe.compact/4`` have
these columns null and so contribute nothing to the two sections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from carbonpipe._optional import needs_extra

if TYPE_CHECKING:
    import pyarrow as pa

    from carbonpipe.record import Record


@dataclass(frozen=True)
class SectionRow:
    """One record as the SCI and time-shifting sections see it (a Record's attributes)."""

    pipeline: str
    step: str
    started_at: str
    duration_s: float
    energy_kwh: dict[str, float]
    pue: float
    intensity_g_per_kwh: float
    emissions_kg_co2e: float
    intensity_source: dict[str, Any]
    remote: list[dict[str, Any]]
    functional_units: dict[str, Any] | None
    embodied_kg_co2e: float | None
    embodied: dict[str, Any] | None
    pue_source: dict[str, Any] | None
    scheduling: dict[str, Any] | None


#: What the two sections accept: section rows, or records (tests, callers with records).
SectionInput = Union[SectionRow, "Record"]

_READ = (
    "pipeline",
    "step",
    "started_at",
    "duration_s",
    "energy_cpu_kwh",
    "energy_gpu_kwh",
    "energy_ram_kwh",
    "energy_remote_kwh",
    "energy_total_kwh",
    "pue",
    "intensity_g_per_kwh",
    "emissions_kg_co2e",
    "source_name",
    "source_vintage",
    "source_kind",
    "source_zone",
    "remote_reported_kg_co2e",
    "functional_unit",
    "functional_unit_count",
    "embodied_kg_co2e",
    "embodied_json",
    "pue_source_json",
    "scheduling_json",
)


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def section_rows(table: pa.Table) -> list[SectionRow]:
    """The rows of ``table`` (a day's rows) that either section reads, in table order."""
    with needs_extra("esg", "ESG reports"):
        import pyarrow.compute as pc

    if table.num_rows == 0:
        return []
    wanted = pc.or_(
        pc.or_(pc.is_valid(table["functional_unit"]), pc.is_valid(table["scheduling_json"])),
        pc.is_valid(table["source_zone"]),
    )
    picked = table.filter(wanted)
    if picked.num_rows == 0:
        return []
    c = {name: picked[name].to_pylist() for name in _READ}
    out = []
    for i in range(picked.num_rows):
        unit = c["functional_unit"][i]
        started = c["started_at"][i]
        source = {k: c[f"source_{k}"][i] for k in ("name", "vintage", "kind")}
        if c["source_zone"][i]:
            source["zone"] = c["source_zone"][i]
        out.append(
            SectionRow(
                pipeline=c["pipeline"][i],
                step=c["step"][i],
                started_at=started.isoformat() if started is not None else "",
                duration_s=float(c["duration_s"][i] or 0.0),
                energy_kwh={
                    p: float(c[f"energy_{p}_kwh"][i] or 0.0)
                    for p in ("cpu", "gpu", "ram", "remote", "total")
                },
                pue=float(c["pue"][i]),
                intensity_g_per_kwh=float(c["intensity_g_per_kwh"][i]),
                emissions_kg_co2e=float(c["emissions_kg_co2e"][i]),
                intensity_source=source,
                remote=[{"emissions_kg_co2e": float(c["remote_reported_kg_co2e"][i] or 0.0)}],
                functional_units=(
                    None
                    if unit is None
                    else {"name": unit, "count": float(c["functional_unit_count"][i])}
                ),
                embodied_kg_co2e=c["embodied_kg_co2e"][i],
                embodied=_loads(c["embodied_json"][i]),
                pue_source=_loads(c["pue_source_json"][i]),
                scheduling=_loads(c["scheduling_json"][i]),
            )
        )
    return out
