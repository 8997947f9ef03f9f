"""The meter: a step's energy, measured with CodeCarbon in a sidecar, or estimated.

``base`` (the :class:`EnergyMeter` interface and :class:`Measurement`), ``meter`` (CodeCarbon in a
sidecar process), ``sidecar`` and ``sidecar_imports`` (what runs in that process), ``heartbeat``
(its one sampling thread, and the energy so far it leaves for a step that dies), ``inbox`` (its
stdin, read while it watches the step's process), ``steptree`` (the step's process tree in
``/proc``), ``process`` (its pipes and reaping), ``counters`` (the cheap counters a window opens and closes at),
``hwprofile`` (hardware detection cached on disk), ``estimate`` (the fallback).

May import: ``errors`` and the standard library; CodeCarbon only inside functions.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "CPU_SHARES": "carbonpipe.measure.base",
    "EnergyMeter": "carbonpipe.measure.base",
    "METHODS": "carbonpipe.measure.base",
    "Measurement": "carbonpipe.measure.base",
    "TRACKING_MODES": "carbonpipe.measure.base",
    "estimate_without_meter": "carbonpipe.measure.estimate",
    "DEFAULT_MEASURE_POWER_SECS": "carbonpipe.measure.meter",
    "DEFAULT_STOP_TIMEOUT_S": "carbonpipe.measure.meter",
    "Meter": "carbonpipe.measure.meter",
    "warm_hardware_profile": "carbonpipe.measure.meter",
}

__all__ = [
    "CPU_SHARES",
    "DEFAULT_MEASURE_POWER_SECS",
    "DEFAULT_STOP_TIMEOUT_S",
    "EnergyMeter",
    "METHODS",
    "Measurement",
    "Meter",
    "TRACKING_MODES",
    "estimate_without_meter",
    "warm_hardware_profile",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.measure.base import (
        CPU_SHARES,
        METHODS,
        TRACKING_MODES,
        EnergyMeter,
        Measurement,
    )
    from carbonpipe.measure.estimate import estimate_without_meter
    from carbonpipe.measure.meter import (
        DEFAULT_MEASURE_POWER_SECS,
        DEFAULT_STOP_TIMEOUT_S,
        Meter,
        warm_hardware_profile,
    )
