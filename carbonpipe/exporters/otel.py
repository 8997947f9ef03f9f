"""OpenTelemetry metrics: each finished step, and each traced request, adds to the process's meters.

Only used when the process configured a ``MeterProvider`` itself
(:func:`carbonpipe.exporters.registry.otel_provider`); the instruments are made on it, and its
readers export them as the process set up (OTLP, Prometheus, in memory...). Steps add to
``carbonpipe.step.energy`` (counter, ``J``), ``carbonpipe.step.emissions`` (counter, ``g``
CO2e) and ``carbonpipe.step.duration`` (histogram, ``s``); requests measured by
:class:`~carbonpipe.trace.middleware.CarbonTraceMiddleware` add to ``carbonpipe.request.*``,
the same three, with ``http.route``, ``http.request.method`` and ``http.response.status_code``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from carbonpipe.exporters.base import attributes, figures
from carbonpipe.record import Record

_instruments: dict[tuple[int, str], tuple[Any, Any, Any]] = {}
_lock = threading.Lock()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("carbonpipe")
    except Exception:
        return "0"


def instruments(provider: Any, kind: str = "step") -> tuple[Any, Any, Any]:
    """``(energy counter, emissions counter, duration histogram)`` of ``kind`` on ``provider``."""
    key = (id(provider), kind)
    with _lock:
        found = _instruments.get(key)
        if found is None:
            meter = provider.get_meter("carbonpipe", _version())
            what = "step" if kind == "step" else "HTTP request"
            found = (
                meter.create_counter(
                    f"carbonpipe.{kind}.energy", unit="J", description=f"Energy of each {what}"
                ),
                meter.create_counter(
                    f"carbonpipe.{kind}.emissions",
                    unit="g",
                    description=f"Emissions of each {what}, CO2e",
                ),
                meter.create_histogram(
                    f"carbonpipe.{kind}.duration", unit="s", description=f"Duration of each {what}"
                ),
            )
            _instruments[key] = found
        return found


class OtelExporter:
    """Adds a finished step to the OpenTelemetry instruments of ``provider``."""

    name = "OpenTelemetry"

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def export(self, record: Record, *, timeout_s: float) -> str | None:
        """Add to the counters (in memory: the provider's readers export them on their own time)."""
        try:
            energy, emissions, duration = instruments(self.provider)
            energy_j, emissions_g, duration_s = figures(record)
            attrs = attributes(record)
            energy.add(max(energy_j, 0.0), attrs)
            emissions.add(max(emissions_g, 0.0), attrs)
            duration.record(max(duration_s, 0.0), attrs)
        except Exception as exc:
            return f"OpenTelemetry export failed: {exc!r}"
        return None


def record_request(provider: Any, trace: Mapping[str, Any], attrs: Mapping[str, str | int]) -> None:
    """Add one traced request (its ``x_carbon_trace``) to ``carbonpipe.request.*``."""
    energy, emissions, duration = instruments(provider, "request")
    energy.add(max(float(trace.get("energy_consumed_wh", 0.0)) * 3600.0, 0.0), attrs)
    emissions.add(max(float(trace.get("emissions_g_co2", 0.0)), 0.0), attrs)
    duration.record(max(float(trace.get("duration_seconds", 0.0)), 0.0), attrs)
