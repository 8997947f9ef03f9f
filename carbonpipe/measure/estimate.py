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
    (half the TDP), process mode one busy core (TDP / CPU count); RAM follows CodeCarbon's model.
    """
    if tracking_mode not in TRACKING_MODES:
        raise ValueError(
            f"tracking_mode must be one of {', '.join(map(repr, TRACKING_MODES))}, got {tracking_mode!r}"
        )
    from carbonpipe.measure import hwprofile

    duration = max((ended_at - started_at).total_seconds(), 0.0)
    tdp_w = hwprofile.find_cpu_tdp_w(None) or _DEFAULT_TDP_W
    if tracking_mode == "process":
        cpu_w, memory_gb = tdp_w / (os.cpu_count() or 1), _peak_rss_gb()
    else:
        cpu_w, memory_gb = tdp_w * _CONSTANT_LOAD_RATIO, _machine_memory_gb()
    energy = {
        "cpu": cpu_w * duration * _KWH_PER_J,
        "gpu": 0.0,
        "ram": _ram_power_w(memory_gb) * duration * _KWH_PER_J,
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


def _stat_totals(stat: tuple[int, ...]) -> tuple[int, int]:
    """Return (busy, total) ticks the way CodeCarbon's SystemCPULoadMeter counts them."""
    padded = stat + (0,) * max(0, 10 - len(stat))
    user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice = padded[:10]
    # Guest time is already inside user and nice time.
    total = sum(padded[:10]) - guest - guest_nice
    return total - idle - iowait, total


def _machine_load(start: tuple[int, ...] | None, end: tuple[int, ...] | None) -> float | None:
    if not start or not end:
        return None
    busy0, total0 = _stat_totals(start)
    busy1, total1 = _stat_totals(end)
    if total1 <= total0:
        return None
    return min(max((busy1 - busy0) / (total1 - total0), 0.0), 1.0)


def _busy_fraction(
    step_cpu_s: object, start: tuple[int, ...] | None, end: tuple[int, ...] | None
) -> float | None:
    """Return the step's fraction of the machine's busy CPU time over the window."""
    if not isinstance(step_cpu_s, (int, float)) or not start or not end:
        return None
    busy_ticks = _stat_totals(end)[0] - _stat_totals(start)[0]
    if busy_ticks <= 0:
        return None
    busy_s = busy_ticks / os.sysconf("SC_CLK_TCK")
    return min(max(float(step_cpu_s) / busy_s, 0.0), 1.0)


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
