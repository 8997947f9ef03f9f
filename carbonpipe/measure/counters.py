"""The cumulative counters a step's window is measured between, read in microseconds.

Only ``os`` and ``time``: ``carbonpipe run`` reads them before it starts the command, when
nothing else is imported yet, and :mod:`carbonpipe.measure.meter` builds its edges from the same code.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CGROUP_CPU_FILES = (
    "/sys/fs/cgroup/cpu.stat",  # v2, as mounted in a container with its own cgroup namespace
    "/sys/fs/cgroup/cpuacct/cpuacct.usage",  # v1, the container's own cgroup mounted there
    "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage",
    "/sys/fs/cgroup/cpuacct,cpu/cpuacct.usage",
)


def in_container() -> bool:
    """Return True inside Docker, Podman, Kubernetes or systemd-nspawn."""
    return (
        os.path.exists("/.dockerenv")
        or os.path.exists("/run/.containerenv")
        or "KUBERNETES_SERVICE_HOST" in os.environ
        # systemd-nspawn and podman announce themselves in a lower-case variable.
        or bool(os.environ.get("container"))  # noqa: SIM112
    )


def resolve_share(tracking_mode: str, wanted: str) -> tuple[str, str | None]:
    """Return the CPU share to charge and the cgroup file to read it from, if any."""
    if tracking_mode == "machine":
        return "machine", None
    # Outside a container the cgroup files are the host's root or a login session: not the step.
    if wanted == "process" or (wanted == "auto" and not in_container()):
        return "process", None
    for path in CGROUP_CPU_FILES:
        if read_cgroup_cpu_s(path) is not None:
            return "cgroup", path
    return "process", None


def read_cgroup_cpu_s(path: str) -> float | None:
    """Return the CPU seconds a cgroup v2 ``cpu.stat`` or v1 ``cpuacct.usage`` file shows."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return None
    try:
        if path.endswith("cpu.stat"):
            for line in text.splitlines():
                name, _, value = line.partition(b" ")
                if name == b"usage_usec":
                    return int(value) / 1e6
            return None
        return int(text.strip()) / 1e9
    except ValueError:
        return None


def read_proc_stat() -> tuple[int, ...] | None:
    """Return the machine's aggregate ``cpu`` line of /proc/stat, in clock ticks."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu":
        return None
    try:
        return tuple(int(x) for x in fields[1:])
    except ValueError:
        return None


def read_rapl() -> dict[str, int]:
    """Return the readable RAPL energy counters (µJ) by file."""
    base = "/sys/class/powercap"
    try:
        zones = [z for z in os.listdir(base) if z.startswith("intel-rapl")]
    except OSError:
        return {}
    values = {}
    for zone in zones:
        path = f"{base}/{zone}/energy_uj"
        try:
            with open(path, "rb") as f:
                values[path] = int(f.read())
        except (OSError, ValueError):
            continue  # unreadable without privileges on most kernels since 2020
    return values


def boot_clock() -> float | None:
    """Return seconds since boot (Linux), the clock /proc stamps process start times with."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return None if clock is None else time.clock_gettime(clock)


def read_counters(cgroup_file: str | None, *, rapl: bool) -> dict[str, Any]:
    """Read every counter of a window's edge (the fields of ``measure._Edge``)."""
    perf, wall = time.perf_counter(), time.time()
    times = os.times()
    return {
        "perf_s": perf,
        "wall_s": wall,
        "boot_s": boot_clock(),
        # Reaped children count too: a subprocess the step ran and waited for is its work.
        "proc_cpu_s": times.user + times.system + times.children_user + times.children_system,
        "cgroup_cpu_s": read_cgroup_cpu_s(cgroup_file) if cgroup_file else None,
        "stat": read_proc_stat(),
        "rapl_uj": read_rapl() if rapl else {},
    }
