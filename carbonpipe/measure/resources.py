"""What a step could use, for its share of the host's embodied emissions (SCI's RR).

* CPUs: the container's CPU limit when one is set (cgroup v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us / cpu.cfs_period_us``, the smallest on the way up the step's cgroup),
  else None in ``machine`` mode (the whole instance) or the CPUs the process may run on in
  ``process`` mode (its affinity).
* GPUs: those ``CUDA_VISIBLE_DEVICES`` leaves visible when it is set, else None (the instance's).
* The machine it saw: its CPUs, its NVIDIA GPUs (``/dev/nvidiaN``) and its CPU sockets, which the
  default model prices where the instance type is unknown.

Only ``os``: no file here is read unless it exists, and nothing here raises.
"""

from __future__ import annotations

import contextlib
import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(256).strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """The process's v2 cgroup path and v1 ``cpu`` controller path, from /proc/self/cgroup."""
    v2 = v1 = None
    text = None
    try:
        with open(proc_cgroup, encoding="ascii", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestry(root: str, sub: str) -> list[str]:
    """``root/sub`` and each folder above it up to ``root``, deepest first."""
    parts = [p for p in sub.split("/") if p and p not in (".", "..")]
    return [os.path.join(root, *parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_cpu_limit(
    root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup"
) -> float | None:
    """The CPUs the process's cgroup may use (quota / period), or None when it is not limited."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    # Inside its own cgroup namespace a container sees its cgroup at the root: read both.
    for folder in _ancestry(root, v2 or ""):
        text = _read(os.path.join(folder, "cpu.max"))
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max":
                with contextlib.suppress(ValueError, ZeroDivisionError):
                    limits.append(int(quota) / int(period or "100000"))
    for controller in _V1_CPU_DIRS:
        base = os.path.join(root, controller)
        if not os.path.isdir(base):
            continue
        for folder in _ancestry(base, v1 or ""):
            quota_text = _read(os.path.join(folder, "cpu.cfs_quota_us"))
            period_text = _read(os.path.join(folder, "cpu.cfs_period_us"))
            try:
                quota_us, period_us = int(quota_text or "-1"), int(period_text or "0")
            except ValueError:
                continue
            if quota_us > 0 and period_us > 0:
                limits.append(quota_us / period_us)
        break
    positive = [x for x in limits if x > 0]
    return min(positive) if positive else None


def visible_gpus(environ: Mapping[str, str] | None = None) -> int | None:
    """How many GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible, or None when it is not set.

    CUDA stops at the first entry that names no device (``-1``, ``NoDevFiles``), as here.
    """
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    count = 0
    for entry in value.split(","):
        entry = entry.strip()
        if (
            not entry
            or entry.startswith("-")
            or not re.fullmatch(r"[0-9]+|(GPU|MIG)-[\w/-]+", entry)
        ):
            break
        count += 1
    return count


def host_gpus(dev_dir: str = "/dev") -> int:
    """The NVIDIA GPUs this machine (or container) has device files for."""
    try:
        return sum(1 for name in os.listdir(dev_dir) if re.fullmatch(r"nvidia[0-9]+", name))
    except OSError:
        return 0


def cpu_sockets(cpu_dir: str = "/sys/devices/system/cpu") -> int:
    """The CPU sockets (physical packages) this machine shows, 1 where it shows none."""
    packages: set[str] = set()
    try:
        names = os.listdir(cpu_dir)
    except OSError:
        return 1
    for name in names:
        if re.fullmatch(r"cpu[0-9]+", name):
            found = _read(os.path.join(cpu_dir, name, "topology", "physical_package_id"))
            if found is not None:
                packages.add(found)
    return max(len(packages), 1)


def step_resources(
    tracking_mode: str,
    *,
    cgroup_root: str = CGROUP_ROOT,
    proc_cgroup: str = "/proc/self/cgroup",
    dev_dir: str = "/dev",
    cpu_dir: str = "/sys/devices/system/cpu",
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the step could use and the machine it saw (see the module's docstring).

    Returns ``{cpus, cpus_from, gpus, host_cpus, host_gpus, sockets}``; ``cpus_from`` is
    ``cgroup``, ``instance`` or ``process``.
    """
    host_cpus = os.cpu_count() or 1
    cpus: float | None = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    cpus_from = "cgroup"
    if cpus is None and tracking_mode == "process":
        try:
            cpus, cpus_from = float(len(os.sched_getaffinity(0))), "process"
        except (AttributeError, OSError):
            cpus, cpus_from = float(host_cpus), "process"
    elif cpus is None:
        cpus_from = "instance"
    gpus = visible_gpus(environ)
    devices = host_gpus(dev_dir)
    return {
        "cpus": cpus,
        "cpus_from": cpus_from,
        "gpus": gpus,
        "host_cpus": host_cpus,
        "host_gpus": max(devices, gpus or 0),
        "sockets": cpu_sockets(cpu_dir),
    }


def hardware_facts(
    location: Any,
    provider: str | None,
    tracking_mode: str,
    lifetime_years: float,
    resources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a step ran on (``location``'s instance type, if it has one) and could use, as
    :func:`carbonpipe.pricing.build_record` takes them for the step's embodied share.

    ``resources``: :func:`step_resources` as the step's sidecar read them (in the step's cgroup,
    with its environment); None reads them here."""
    return {
        "provider": provider,
        "instance_type": getattr(location, "instance_type", None),
        "instance_type_by": getattr(location, "instance_type_by", None),
        "resources": dict(resources) if resources else step_resources(tracking_mode),
        "lifetime_years": lifetime_years,
    }


_CPUS_FROM = ("cgroup", "instance", "process")


def checked_resources(raw: Any) -> dict[str, Any] | None:
    """``raw`` if it has the shape :func:`step_resources` gives (read back from the sidecar's
    result or a heartbeat file), else None."""
    keys = ("cpus", "cpus_from", "gpus", "host_cpus", "host_gpus", "sockets")
    if not isinstance(raw, dict) or set(raw) != set(keys):
        return None

    def count(value: Any, low: int) -> bool:
        return type(value) is int and low <= value < 1 << 20

    cpus = raw["cpus"]
    cpus_ok = cpus is None or (
        isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and 0 < cpus < 1 << 20
    )
    ok = (
        cpus_ok
        and raw["cpus_from"] in _CPUS_FROM
        and (raw["gpus"] is None or count(raw["gpus"], 0))
        and count(raw["host_cpus"], 1)
        and count(raw["host_gpus"], 0)
        and count(raw["sockets"], 1)
    )
    return dict(raw) if ok else None
