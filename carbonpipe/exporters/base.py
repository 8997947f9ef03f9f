"""What every metrics sink shares: the :class:`Exporter` interface and a record's labels."""

from __future__ import annotations

from typing import Protocol

from carbonpipe.record import Record

_KWH_TO_J = 3.6e6


class Exporter(Protocol):
    """A sink for one finished step's figures."""

    name: str

    def export(self, record: Record, *, timeout_s: float) -> str | None:
        """Send ``record``'s figures within ``timeout_s``; an error text, or ``None``. Never raises."""
        ...


def figures(record: Record) -> tuple[float, float, float]:
    """``(energy J, emissions g CO2e, duration s)`` of ``record``."""
    energy_j = float(record.energy_kwh.get("total", 0.0)) * _KWH_TO_J
    return energy_j, float(record.emissions_kg_co2e) * 1000.0, float(record.duration_s)


def attributes(record: Record) -> dict[str, str]:
    """The step's attributes, OpenTelemetry's names where they exist; absent ones are left out."""
    attrs = {
        "pipeline": record.pipeline,
        "step": record.step,
        "team": record.team,
        "status": record.status,
        "cloud.provider": record.location.get("provider"),
        "cloud.region": record.location.get("region"),
    }
    return {k: str(v) for k, v in attrs.items() if v not in (None, "")}
