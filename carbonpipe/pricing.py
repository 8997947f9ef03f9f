"""Price a measured step in CO2e and build its record: one pure function for every record.

The tracker prices a step it stopped; :mod:`carbonpipe.lost_steps` prices a step whose process
died, from its last heartbeat. Both go through :func:`build_record`, so a lost record is priced
exactly like any other: local energy x PUE x the grid intensity, plus what remote model servers
reported (``x_carbon_trace``). No I/O here: the location and the intensity come in resolved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from carbonpipe.record import HOST_FIELDS, Record, utc_iso
from carbonpipe.units import record_profile

if TYPE_CHECKING:
    from carbonpipe.intensity.base import Intensity, IntensitySeries
    from carbonpipe.measure.base import Measurement

#: What names one step attempt in a record (its id is derived from the others).
IDENTITY_FIELDS = (
    "record_id",
    "project",
    "experiment",
    "pipeline",
    "run_id",
    "step",
    "team",
    "attempt",
    "labels",
)


def emissions_kg_co2e(
    local_kwh: float, *, pue: float, intensity_g_per_kwh: float, remote_kg: float = 0.0
) -> float:
    """Local energy at the data centre's PUE and the grid's intensity, plus remote emissions."""
    return local_kwh * pue * intensity_g_per_kwh / 1000.0 + remote_kg


def build_record(
    identity: Mapping[str, Any],
    status: str,
    m: Measurement,
    *,
    location: Mapping[str, Any],
    intensity: Intensity,
    pue: float,
    tracking_mode: str,
    remote: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[str] = (),
    alerts: Sequence[Mapping[str, Any]] = (),
    host: Mapping[str, Any] | None = None,
    functional_units: Mapping[str, Any] | None = None,
    series: IntensitySeries | None = None,
    pue_source: Mapping[str, Any] | None = None,
    hardware: Mapping[str, Any] | None = None,
) -> Record:
    """The record of one step attempt measured as ``m``, priced at ``intensity`` and ``pue``.

    Args:
        identity: The step's :data:`IDENTITY_FIELDS`.
        status: ``succeeded``, ``failed``, ``killed`` or ``lost``.
        m: What the meter measured over the step's window.
        location: ``{provider, region, country_iso, detected_by}``.
        intensity: The grid intensity of that location, with its source.
        pue: The data centre's power usage effectiveness, applied to local energy.
        tracking_mode: The tracker's mode as configured (``offline`` included).
        remote: Energy and emissions attributed to remote calls, one mapping per server.
        errors: Tracking problems to write into ``tracking_errors``.
        alerts: Baseline regression alerts.
        host: The host the step ran on (:func:`carbonpipe.measure.host.host_facts`), or None
            where it is unknown (a lost step, priced elsewhere): its facts are then null.
        functional_units: The step's units of work ``{name, count}`` (SCI's R), checked by
            :mod:`carbonpipe.functional_unit`; the record's ``sci_g_per_unit`` is then
            ``(operational + embodied) g / count`` (embodied 0 where not measured).
        series: The grid's intensity over the step from a time-series source: each interval
            of the step's energy profile is priced at its own time's intensity
            (:mod:`carbonpipe.intensity.timed`); None, or one that cannot price every
            interval, leaves ``intensity`` (the table) pricing the step, noted.
        pue_source: Where ``pue`` came from (:func:`carbonpipe.hardware.pue.resolve_pue`).
        hardware: What the step ran on, for its embodied share (:func:`with_embodied`):
            ``{provider, instance_type, instance_type_by, resources, lifetime_years}``; None
            where it is unknown (a lost step): ``embodied_kg_co2e`` is then null.

    Returns:
        The record, not yet validated against the store's schema (``Record.from_dict`` does).
        Its figures are finite: one that came in as ``NaN`` is recorded as 0 and an infinite
        one as :data:`MAX_FIGURE`, each with a note in ``tracking_errors``, so the record is
        valid JSON and its budget charge is made.
    """
    record = _build(identity, status, m, location, intensity, pue, tracking_mode, remote)
    record = replace(record, measurement={**record.measurement, **_host(host)})
    e = record.energy_kwh
    local_kwh = float(e.get("cpu", 0.0)) + float(e.get("gpu", 0.0)) + float(e.get("ram", 0.0))
    profile = m.energy_profile or [(0.0, local_kwh)]
    record = replace(record, energy_profile=record_profile(profile, record.duration_s, local_kwh))
    notes: list[str] = []
    if series is not None:  # a time-series source: each interval at the grid of its own time
        from carbonpipe.intensity.timed import apply_series

        record, notes = apply_series(record, series, pue=pue)
    record = _finite_figures(record, notes)
    record = with_embodied(record, hardware, pue_source)
    record = replace(record, tracking_errors=[*errors, *notes], alerts=[dict(a) for a in alerts])
    return with_sci(record, functional_units)


def with_embodied(
    record: Record, hardware: Mapping[str, Any] | None, pue_source: Mapping[str, Any] | None
) -> Record:
    """``record`` with its PUE's source, its embodied share M (:mod:`carbonpipe.hardware.embodied`)
    over its duration, and ``total_kg_co2e`` = operational + embodied (both null without
    ``hardware``). ``emissions_kg_co2e`` stays operational."""
    record = replace(record, pue_source=dict(pue_source) if pue_source else None)
    if hardware is None:
        return record
    from carbonpipe.hardware.embodied import DEFAULT_LIFETIME_YEARS, embodied_figure

    kg, block = embodied_figure(
        provider=hardware.get("provider"),
        instance_type=hardware.get("instance_type"),
        instance_type_by=hardware.get("instance_type_by"),
        duration_s=record.duration_s,
        resources=hardware.get("resources") or {},
        lifetime_years=hardware.get("lifetime_years") or DEFAULT_LIFETIME_YEARS,
    )
    total = record.emissions_kg_co2e + kg
    return replace(record, embodied_kg_co2e=kg, embodied=block, total_kg_co2e=total)


def with_sci(record: Record, functional_units: Mapping[str, Any] | None) -> Record:
    """``record`` with ``functional_units`` and its SCI score (``sci_g_per_unit``)."""
    from carbonpipe.functional_unit import sci_g_per_unit

    units = dict(functional_units) if functional_units else None
    embodied = getattr(record, "embodied_kg_co2e", None)
    sci = sci_g_per_unit(record.emissions_kg_co2e, embodied, units)
    return replace(record, functional_units=units, sci_g_per_unit=sci)


def _host(host: Mapping[str, Any] | None) -> dict[str, Any]:
    """The host facts ``measurement`` carries, each ``None`` unless given."""
    given = host or {}
    return {name: given.get(name) for name in HOST_FIELDS}


#: The largest figure a record takes (kWh, kg CO2e, W, s): what an infinite one becomes.
MAX_FIGURE = 1e15


def _finite(label: str, value: Any, notes: list[str]) -> Any:
    """``value`` if it is not a float, or a finite one; else its stand-in, noted."""
    if not isinstance(value, float) or math.isfinite(value):
        return value
    fixed = 0.0 if math.isnan(value) or value < 0 else MAX_FIGURE
    notes.append(f"record figure {label} was {value!r}; recorded as {fixed:g}")
    return fixed


def _finite_figures(record: Record, notes: list[str]) -> Record:
    """The record with every non-finite figure replaced (see :func:`build_record`)."""
    return replace(
        record,
        duration_s=_finite("duration_s", record.duration_s, notes),
        emissions_kg_co2e=_finite("emissions_kg_co2e", record.emissions_kg_co2e, notes),
        energy_kwh={k: _finite(f"energy_kwh.{k}", v, notes) for k, v in record.energy_kwh.items()},
        power_w={k: _finite(f"power_w.{k}", v, notes) for k, v in record.power_w.items()},
        measurement={
            k: _finite(f"measurement.{k}", v, notes) for k, v in record.measurement.items()
        },
        remote=[
            {k: _finite(f"remote[{i}].{k}", v, notes) for k, v in entry.items()}
            for i, entry in enumerate(record.remote)
        ],
    )


def _build(
    identity: Mapping[str, Any],
    status: str,
    m: Measurement,
    location: Mapping[str, Any],
    intensity: Intensity,
    pue: float,
    tracking_mode: str,
    remote: Sequence[Mapping[str, Any]],
) -> Record:
    local_kwh = m.cpu_energy_kwh + m.gpu_energy_kwh + m.ram_energy_kwh
    remote_list = [dict(r) for r in remote]
    remote_kwh = sum((r["energy_kwh"] for r in remote_list), 0.0)
    remote_kg = sum((r["emissions_kg_co2e"] for r in remote_list), 0.0)
    return Record(
        record_id=identity["record_id"],
        project=identity["project"],
        experiment=identity["experiment"],
        pipeline=identity["pipeline"],
        run_id=identity["run_id"],
        step=identity["step"],
        team=identity["team"],
        attempt=identity["attempt"],
        labels=dict(identity["labels"]),
        started_at=utc_iso(m.started_at),
        ended_at=utc_iso(m.ended_at),
        duration_s=m.duration_s,
        status=status,
        energy_kwh={
            "cpu": m.cpu_energy_kwh,
            "gpu": m.gpu_energy_kwh,
            "ram": m.ram_energy_kwh,
            "remote": remote_kwh,
            "total": local_kwh + remote_kwh,
        },
        power_w={"cpu": m.cpu_power_w, "gpu": m.gpu_power_w, "ram": m.ram_power_w},
        pue=pue,
        intensity_g_per_kwh=intensity.intensity_g_per_kwh,
        emissions_kg_co2e=emissions_kg_co2e(
            local_kwh,
            pue=pue,
            intensity_g_per_kwh=intensity.intensity_g_per_kwh,
            remote_kg=remote_kg,
        ),
        location=dict(location),
        intensity_source=intensity.to_source_dict(),
        measurement={
            "method": m.method,
            "tracking_mode": tracking_mode,
            "share": m.share,
            "codecarbon_version": m.codecarbon_version,
            "cpu_model": m.cpu_model,
            "gpu_model": m.gpu_model,
            **({} if m.cross_check is None else {"cross_check": dict(m.cross_check)}),
            **({} if m.gpu_devices is None else {"gpu_devices": [dict(d) for d in m.gpu_devices]}),
        },
        remote=remote_list,
    )
