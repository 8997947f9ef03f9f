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
    share, path, _ = choose_share(tracking_mode, wanted)
    return share, path


def choose_share(tracking_mode: str, wanted: str) -> tuple[str, str | None, str | None]:
    """Return the share to charge, the cgroup file to read it from, and why a cgroup was not used.

    The cgroup counts only when it is the step's own container: not the machine's root cgroup,
    and holding no process but the step's tree and its ancestors (a container's init or shell).
    An Airflow worker running several tasks, or a host's root cgroup, is charged by process tree.
    """
    if tracking_mode == "machine":
        return "machine", None, None
    # Outside a container the cgroup files are the host's root or a login session: not the step.
    if wanted == "process" or (wanted == "auto" and not in_container()):
        return "process", None, None
    for path in CGROUP_CPU_FILES:
        if read_cgroup_cpu_s(path) is not None:
            problem = (
                "the cgroup is the machine's root cgroup (/), which every process shares"
                if _in_root_cgroup()
                else cgroup_not_own(os.path.dirname(path))
            )
            if problem is None:
                return "cgroup", path, None
            return "process", None, problem
    return "process", None, "cgroup CPU accounting is not readable"


# The inode of the initial cgroup namespace (PROC_CGROUP_INIT_INO): there, "/" is the host's root.
_INIT_CGROUP_NS_INODE = 0xEFFFFFFB
_MAX_CGROUP_DIRS = 256
_MAX_CGROUP_PIDS = 4096


def cgroup_not_own(directory: str, pid: int | None = None) -> str | None:
    """Return why the cgroup at ``directory`` is not ``pid``'s own container, or None if it is.

    Its CPU time covers every process in it and below it: each must be ``pid``, a descendant
    (the step's tree, the measuring sidecar) or an ancestor (the container's init, a shell).
    """
    pid = os.getpid() if pid is None else pid
    ancestors = _ancestors(pid)
    verdicts: dict[int, bool] = {}
    seen_dirs = seen_pids = 0
    for folder, _, _ in os.walk(directory):
        seen_dirs += 1
        if seen_dirs > _MAX_CGROUP_DIRS:
            return f"the cgroup {directory} has more than {_MAX_CGROUP_DIRS} sub-cgroups"
        try:
            with open(os.path.join(folder, "cgroup.procs"), "rb") as f:
                listed = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
        for other in listed:
            seen_pids += 1
            if seen_pids > _MAX_CGROUP_PIDS:
                return f"the cgroup {directory} holds more than {_MAX_CGROUP_PIDS} processes"
            if other == pid or other in ancestors:
                continue
            if not _descends_from(other, pid, ancestors, verdicts):
                return (
                    f"the cgroup {directory} is shared with processes outside the step "
                    f"(pid {other}{_comm(other)})"
                )
    return None


def _in_root_cgroup() -> bool:
    """Whether this process sits in the host's root cgroup ("/" in the initial namespace)."""
    try:
        with open("/proc/self/cgroup", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    paths = []
    for line in lines:
        _, controllers, path = (line.split(b":", 2) + [b"", b""])[:3]
        if not controllers or b"cpuacct" in controllers.split(b","):
            paths.append(path)
    if not paths or any(path != b"/" for path in paths):
        return False
    try:
        return os.stat("/proc/self/ns/cgroup").st_ino == _INIT_CGROUP_NS_INODE
    except OSError:
        return not in_container()


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _ancestors(pid: int) -> set[int]:
    found: set[int] = set()
    parent = _parent(pid)
    while parent and parent not in found:
        found.add(parent)
        parent = _parent(parent)
    return found


def _descends_from(pid: int, root: int, ancestors: set[int], verdicts: dict[int, bool]) -> bool:
    """Whether ``pid`` is ``root``'s descendant; a process gone meanwhile does not count against."""
    chain: list[int] = []
    current: int | None = pid
    verdict = False
    while True:
        if current is None:
            verdict = len(chain) == 1  # ``pid`` itself is gone: it no longer runs
            break
        if current in verdicts:
            verdict = verdicts[current]
            break
        if current == root:
            verdict = True
            break
        if current in ancestors or current <= 1 or current in chain:
            break
        chain.append(current)
        current = _parent(current)
    for link in chain:
        verdicts[link] = verdict
    return verdict


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return ", " + f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


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


def read_memory_used_bytes() -> int | None:
    """Return the machine's used memory (MemTotal - MemAvailable in /proc/meminfo), in bytes."""
    try:
        with open("/proc/meminfo", "rb") as f:
            text = f.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(b":")
        if name in (b"MemTotal", b"MemAvailable"):
            try:
                values[name] = int(rest.split()[0]) * 1024
            except (IndexError, ValueError):
                return None
    if len(values) < 2:
        return None
    return max(values[b"MemTotal"] - values[b"MemAvailable"], 0)


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
