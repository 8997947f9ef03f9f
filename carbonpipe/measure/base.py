"""What a meter gives back (:class:`Measurement`) and the one interface every meter implements.

:class:`EnergyMeter` is the shape :class:`carbonpipe.measure.meter.Meter` (CodeCarbon in a
sidecar) already has; a new measurement source (Kepler, a second method for cross-checks) is a
new module here, not a branch in the tracker. The edges (the cheap counters read at a step's
start and end) live here too, since both the meter and the estimate are computed from them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from carbonpipe.measure import counters as _counters

if TYPE_CHECKING:
    from collections.abc import Mapping


TRACKING_MODES = ("machine", "process")
CPU_SHARES = ("auto", "process", "cgroup")
METHODS = ("rapl", "cpu_load", "tdp", "nvml", "estimate", "kepler")
_KWH_PER_J = 1 / 3.6e6


@dataclass(frozen=True)
class Measurement:
    """Energy a step used, per device, over the step's whole wall-clock window.

    ``method`` is how the energy was obtained: ``rapl`` (a hardware energy counter), ``cpu_load``
    (CodeCarbon's TDP x CPU-load model), ``tdp`` (a constant share of TDP), ``nvml`` (NVIDIA GPUs
    measured; the CPU's method is then in ``cpu_method``), ``kepler`` (the pod's own counters
    from Kepler; CodeCarbon's figure in ``cross_check``) or ``estimate`` (CodeCarbon failed; see
    ``errors``). Powers are mean powers over the window, so energy = power x duration.
    """

    started_at: datetime
    ended_at: datetime
    duration_s: float
    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    cpu_power_w: float
    gpu_power_w: float
    ram_power_w: float
    method: str
    tracking_mode: str
    share: str
    codecarbon_version: str | None
    cpu_model: str | None
    gpu_model: str | None
    errors: tuple[str, ...] = ()
    cpu_method: str | None = None
    # (start offset s, kWh) per interval over the window (carbonpipe.measure.profile); empty
    # when only the total is known (one interval: the whole window at its mean power).
    energy_profile: tuple[tuple[float, float], ...] = ()
    # method "kepler": CodeCarbon's figure for the same window {method, energy_kwh, ratio}.
    cross_check: Mapping[str, Any] | None = None
    # The GPUs measured ({index, uuid, mig_uuid} each; carbonpipe.measure.gpus); None: not known.
    gpu_devices: tuple[Mapping[str, Any], ...] | None = None
    # The host's facts (carbonpipe.measure.host.host_facts), read by the sidecar while the step
    # ran; None: not read there (the stop path reads them then).
    host: Mapping[str, Any] | None = None
    # What the step could use (carbonpipe.measure.resources.step_resources), read by the sidecar
    # in the step's cgroup; None: not read there.
    resources: Mapping[str, Any] | None = None

    @classmethod
    def nothing(
        cls,
        at: datetime,
        *,
        tracking_mode: str,
        share: str,
        errors: tuple[str, ...] = (),
        cpu_method: str | None = None,
    ) -> Measurement:
        """No energy measured at all: an empty window at ``at``, flagged as an estimate."""
        return cls(
            started_at=at,
            ended_at=at,
            duration_s=0.0,
            cpu_energy_kwh=0.0,
            gpu_energy_kwh=0.0,
            ram_energy_kwh=0.0,
            cpu_power_w=0.0,
            gpu_power_w=0.0,
            ram_power_w=0.0,
            method="estimate",
            tracking_mode=tracking_mode,
            share=share,
            codecarbon_version=None,
            cpu_model=None,
            gpu_model=None,
            errors=errors,
            cpu_method=cpu_method,
        )

    @property
    def total_energy_kwh(self) -> float:
        """Return CPU + GPU + RAM energy in kWh."""
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


class EnergyMeter(Protocol):
    """Measures one step's energy: ``prepare`` early (optional), ``start`` at the step, ``stop``."""

    @property
    def tracking_mode(self) -> str:
        """``machine`` or ``process``: what the measurement covers."""
        ...

    def prepare(self) -> None:
        """Get ready before the step starts (load, detect hardware); never raises."""
        ...

    def start(self, *, at: Mapping[str, Any] | None = None) -> None:
        """Open the step's window now, or at counters read earlier (``at``)."""
        ...

    def stop(self) -> Measurement:
        """Close the window and return what the step used; falls back, never raises."""
        ...


@dataclass(frozen=True)
class _Edge:
    """Cheap cumulative counters read at the step's start or end (microseconds, no imports)."""

    perf_s: float
    wall_s: float
    boot_s: float | None
    proc_cpu_s: float
    cgroup_cpu_s: float | None
    stat: tuple[int, ...] | None
    rapl_uj: dict[str, int] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _measurement(
    t0: _Edge,
    duration: float,
    energy: dict[str, float],
    *,
    method: str,
    cpu_method: str,
    tracking_mode: str,
    share: str,
    codecarbon_version: object,
    cpu_model: object,
    gpu_model: object,
    errors: list[str],
) -> Measurement:
    def power(part: str) -> float:
        return energy[part] / _KWH_PER_J / duration if duration > 0 else 0.0

    started = datetime.fromtimestamp(t0.wall_s, tz=timezone.utc)
    return Measurement(
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        duration_s=duration,
        cpu_energy_kwh=energy["cpu"],
        gpu_energy_kwh=energy["gpu"],
        ram_energy_kwh=energy["ram"],
        cpu_power_w=power("cpu"),
        gpu_power_w=power("gpu"),
        ram_power_w=power("ram"),
        method=method,
        tracking_mode=tracking_mode,
        share=share,
        codecarbon_version=None if codecarbon_version is None else str(codecarbon_version),
        cpu_model=None if not cpu_model else str(cpu_model),
        gpu_model=None if not gpu_model else str(gpu_model),
        errors=tuple(dict.fromkeys(errors)),
        cpu_method=cpu_method,
    )


def _read_edge(cgroup_file: str | None, *, rapl: bool) -> _Edge:
    return _Edge(**_counters.read_counters(cgroup_file, rapl=rapl))


def _bare_edge() -> _Edge:
    return _Edge(
        perf_s=time.perf_counter(),
        wall_s=time.time(),
        boot_s=None,
        proc_cpu_s=0.0,
        cgroup_cpu_s=None,
        stat=None,
    )
