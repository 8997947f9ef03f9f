"""Records as CodeCarbon's ``emissions.csv`` (``carbonpipe export --format codecarbon``).

One row per record, with the columns of CodeCarbon 3.3's ``EmissionsData`` in its order
(``codecarbon/output_methods/emissions_data.py``, CodeCarbon 3.3.2) and in its units: duration
in s, emissions in kg CO2e, emissions_rate in kg/s, powers in W, energies in kWh, RAM in GiB
(``ram_total_size``). As in CodeCarbon, the powers and energies include the PUE; a record's
remote energy (``energy_kwh.remote``, reported by model servers) has no device column and is
counted in ``energy_consumed`` and ``emissions`` only. How the other columns are filled:

* ``timestamp``: the record's ``ended_at`` in UTC, in CodeCarbon's format (``%Y-%m-%dT%H:%M:%S``).
* ``project_name`` the record's project; ``experiment_id`` its pipeline run (``run_id``);
  ``run_id`` its ``record_id`` (one row per step attempt, as CodeCarbon has one per tracker run).
* location columns from ``location`` and carbonpipe's intensity table (country name, the cloud
  region's place and coordinates); ``on_cloud`` is ``Y`` when a cloud provider is known.
* ``os``, ``python_version``, ``codecarbon_version``, ``cpu_count``, ``cpu_model``,
  ``gpu_model``, ``ram_total_size``, ``tracking_mode`` from ``measurement``; ``gpu_count`` is 0
  when no GPU was seen (as CodeCarbon writes it), empty when one was (its count is not recorded).
* carbonpipe measures no water and no utilisation: ``wue`` is 0 and ``water_consumed`` 0.0, as
  CodeCarbon writes them at its default WUE of 0; the utilisation columns and ``ram_used_gb``
  are empty.

Figures are written as Python writes floats (the shortest text that reads back as the same
float), so the column sums are the records' sums.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date
from typing import Any, TextIO

from carbonpipe.record import Record, parse_utc
from carbonpipe.report import read_records, record_keys
from carbonpipe.stores.base import Store

FORMATS = ("codecarbon",)

#: CodeCarbon 3.3's ``EmissionsData`` fields, in order: the columns of its ``emissions.csv``.
CODECARBON_COLUMNS = (
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
)
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S"


def codecarbon_row(record: Record) -> dict[str, Any]:
    """The record as one row of CodeCarbon's ``emissions.csv`` (``None``: an empty cell)."""
    from carbonpipe.intensity.table import load_table

    table = load_table()
    loc, m = record.location, record.measurement
    provider, region, iso = loc.get("provider"), loc.get("region"), loc.get("country_iso")
    place = table.region(provider, region) if provider and region else None
    iso = iso or (place.country_iso if place else None)
    country = table.country(iso) if iso else None
    pue = record.pue
    energy, power = record.energy_kwh, record.power_w
    emissions, duration = record.emissions_kg_co2e, record.duration_s
    local = [energy[p] * pue for p in ("cpu", "gpu", "ram")]
    row: dict[str, Any] = {
        "timestamp": parse_utc(record.ended_at).strftime(_TIMESTAMP),
        "project_name": record.project,
        "run_id": record.record_id,
        "experiment_id": record.run_id,
        "duration": float(duration),
        "emissions": float(emissions),
        "emissions_rate": emissions / duration if duration > 0 else 0.0,
        "cpu_power": power["cpu"] * pue,
        "gpu_power": power["gpu"] * pue,
        "ram_power": power["ram"] * pue,
        "cpu_energy": local[0],
        "gpu_energy": local[1],
        "ram_energy": local[2],
        "energy_consumed": sum(local) + energy["remote"],
        "water_consumed": 0.0,
        "country_name": country.name if country else None,
        "country_iso_code": iso,
        "region": place.location_name if place else None,
        "cloud_provider": provider,
        "cloud_region": region,
        "os": m.get("os"),
        "python_version": m.get("python_version"),
        "codecarbon_version": m.get("codecarbon_version"),
        "cpu_count": m.get("cpu_count"),
        "cpu_model": m.get("cpu_model"),
        "gpu_count": 0 if m.get("gpu_model") is None and energy["gpu"] == 0 else None,
        "gpu_model": m.get("gpu_model"),
        "longitude": place.longitude if place else None,
        "latitude": place.latitude if place else None,
        "ram_total_size": m.get("ram_total_size_gib"),
        "tracking_mode": m.get("tracking_mode"),
        "cpu_utilization_percent": None,
        "gpu_utilization_percent": None,
        "ram_utilization_percent": None,
        "ram_used_gb": None,
        "on_cloud": "Y" if provider else "N",
        "pue": float(pue),
        "wue": 0.0,
    }
    return row


def write_codecarbon_csv(records: Iterable[Record], out: TextIO) -> int:
    """Write ``records`` as CodeCarbon's ``emissions.csv`` to ``out``; return the row count.

    Rows are in the order of ``ended_at``, then ``record_id``.
    """
    writer = csv.DictWriter(out, fieldnames=CODECARBON_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows = sorted(records, key=lambda r: (parse_utc(r.ended_at), r.record_id))
    for record in rows:
        writer.writerow(codecarbon_row(record))
    return len(rows)


def export_records(
    store: Store,
    out: TextIO,
    *,
    fmt: str = "codecarbon",
    start: date | None = None,
    end: date | None = None,
    pipeline: str | None = None,
) -> int:
    """Write the records of ``store`` ended between ``start`` and ``end`` (UTC dates,
    inclusive; all by default) to ``out`` in format ``fmt``; return how many.

    Raises:
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    keys = record_keys(store, start=start, end=end, pipeline=pipeline)
    records = [r for r in read_records(store, keys) if not pipeline or r.pipeline == pipeline]
    return write_codecarbon_csv(records, out)
