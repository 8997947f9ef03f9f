"""The estimate a step falls back to when no meter could measure it: CPU load x TDP, RAM by size.

The same power model as CodeCarbon's (its constant-load and per-DIMM figures), computed from
``/proc`` counters read at the step's edges; a record so measured says ``method: estimate``.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
from carbonpipe.measure.base import _KWH_PER_J, TRACKING_MODES, Measurement, _Edge, _measurement
from carbonpipe.measure.counters import read_memory_used_bytes
from carbonpipe.measure.share import fraction, stat_busy_total

# The estimate reuses CodeCarbon 3.3's models and defaults (codecarbon/external/hardware.py and
# codecarbon/external/ram.py), so a failed sidecar does not change the order of magnitude:
# an unknown CPU is taken as 85 W TDP (POWER_CONSTANT), shared per core in process mode; machine
# mode draws TDP x (0.1 + 0.9 load^3), or 50 % of TDP without a load; RAM is 5 W per DIMM (x86)
# or 1.5 W (ARM), DIMMs guessed from the memory size, with a 10 W (x86) or 3 W (ARM) floor.
_DEFAULT_TDP_W = 85.0
_CONSTANT_LOAD_RATIO = 0.5
_RAM_W_PER_DIMM = {"x86": 5.0, "arm": 1.5}
_RAM_MIN_W = {"x86": 10.0, "arm": 3.0}


def estimate_without_meter(
    started_at: datetime, ended_at: datetime, *, tracking_mode: str = "machine"
) -> Measurement:
    """Estimate a window no :class:`Meter` watched (one could not even be built), from its length.

    Without counters there is no load to go on: machine mode takes CodeCarbon's constant mode
    (half the TDP), process mode one busy core's share of it (1 / CPU count); RAM follows
    CodeCarbon's model for the machine, process mode charged its peak memory's share of it.
    """
    if tracking_mode not in TRACKING_MODES:
        raise ValueError(
            f"tracking_mode must be one of {', '.join(map(repr, TRACKING_MODES))}, got {tracking_mode!r}"
        )
    from carbonpipe.measure import hwprofile

    duration = max((ended_at - started_at).total_seconds(), 0.0)
    tdp_w = hwprofile.find_cpu_tdp_w(None) or _DEFAULT_TDP_W
    cpu_w, ram_w = tdp_w * _CONSTANT_LOAD_RATIO, _ram_power_w(_machine_memory_gb())
    if tracking_mode == "process":
        # Never more than the machine: a share of machine mode's figures (see measure.share).
        cpu_w *= fraction(1.0, os.cpu_count() or 1)
        ram_w *= fraction(_peak_rss_gb() * 1024**3, read_memory_used_bytes())
    energy = {
        "cpu": cpu_w * duration * _KWH_PER_J,
        "gpu": 0.0,
        "ram": ram_w * duration * _KWH_PER_J,
    }
    t0 = _Edge(
        perf_s=0.0,
        wall_s=started_at.timestamp(),
        boot_s=None,
        proc_cpu_s=0.0,
        cgroup_cpu_s=None,
        stat=None,
    )
    return _measurement(
        t0,
        duration,
        energy,
        method="estimate",
        cpu_method="estimate",
        tracking_mode=tracking_mode,
        share="machine" if tracking_mode == "machine" else "process",
        codecarbon_version=None,
        cpu_model=hwprofile.read_cpu_model(),
        gpu_model=None,
        errors=[
            "no energy meter ran: estimated from the duration alone with CodeCarbon's defaults"
        ],
    )


def _machine_load(start: tuple[int, ...] | None, end: tuple[int, ...] | None) -> float | None:
    if not start or not end:
        return None
    busy0, total0 = stat_busy_total(start)
    busy1, total1 = stat_busy_total(end)
    if total1 <= total0:
        return None
    return min(max((busy1 - busy0) / (total1 - total0), 0.0), 1.0)


def _peak_rss_gb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
    return peak_bytes / 1024**3


def _machine_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 0.0


def _dimm_count(memory_gb: float) -> int:
    """CodeCarbon 3.3's guess of the DIMMs behind ``memory_gb`` (RAM._estimate_dimm_count)."""
    if memory_gb <= 2:
        return 1
    if memory_gb <= 16:
        return 2
    if memory_gb <= 32:
        return 4
    if memory_gb <= 64:
        return 4
    if memory_gb <= 128:
        return 8
    for size in (128, 64, 32, 16, 8, 4):
        if size <= memory_gb / 8:
            return min(math.ceil(memory_gb / size), 32)
    return 8


def _ram_power_w(memory_gb: float) -> float:
    """CodeCarbon 3.3's RAM power model (RAM._calculate_ram_power), with diminishing W per DIMM."""
    arch = "arm" if os.uname().machine.lower().startswith(("arm", "aarch")) else "x86"
    per_dimm = _RAM_W_PER_DIMM[arch]
    dimms = _dimm_count(memory_gb)
    tiers = ((4, 1.0), (4, 0.9), (8, 0.8), (math.inf, 0.7))
    power, left = 0.0, float(dimms)
    for size, factor in tiers:
        used = min(left, size)
        power += per_dimm * factor * used
        left -= used
        if left <= 0:
            break
    return max(_RAM_MIN_W[arch], power)
