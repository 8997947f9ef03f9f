"""Hardware profiles: CodeCarbon's slow hardware detection, done once per machine type and kept on disk.

CodeCarbon 3.3 spends ~1.5 s in its first ``start()`` of a process finding the CPU model, its TDP,
RAPL and GPUs, and caches the outcome only for that process (``codecarbon.core.hardware_cache``).
Every Kubeflow step is a fresh process, so carbonpipe saves that outcome (a ``_HardwarePlan``,
plain JSON) under ``<cache dir>/hw/<key>.json`` and injects it before the next start, which then
takes milliseconds. The key covers everything the plan depends on: the CodeCarbon version, the CPU
model and count, the tracking mode, the GPUs visible, whether RAPL is readable, and CodeCarbon's
own cache key (its ``force_*`` and GPU-id settings). A profile that cannot be read, does not match
or no longer fits CodeCarbon's private API is ignored: detection then runs as usual and the caller
says so in the measurement's errors.

A profile decides the power every later step is measured with, so one is used only when it is
plausible: a CPU TDP of 1-1000 W per socket, the CPU model this machine reports, RAM no larger
than twice this machine's, the ``force_*`` powers and tracking mode its key names, RAPL read from
``/sys/class/powercap`` only (:func:`plan_problem`). A poisoned or implausible profile is
ignored, noted in the record's ``tracking_errors`` and rewritten from fresh detection. The cache
folder must be this user's alone (:mod:`carbonpipe._private`: created 0700, refused when another
user owns it or can write to it: no profile is then read or written there); files are read with
``O_NOFOLLOW`` and written through an exclusive ``0600`` temporary name, then renamed.

Because the key names the CPU, a profile warmed while building an image only helps on machines of
the builder's type. On Kubernetes, point ``CARBONPIPE_CACHE_DIR`` at a node-local ``hostPath``
folder: the first step on each node pays the detection (its window is still whole, it only waits
for the sidecar at stop if it is shorter than ~2 s) and every later pod on that node skips it.

Nothing here imports CodeCarbon at module import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from carbonpipe._private import ensure_private_dir

__all__ = [
    "CACHE_DIR_ENV",
    "PROFILE_SCHEMA",
    "find_cpu_tdp_w",
    "gpu_fingerprint",
    "load_profile",
    "plan_problem",
    "profile_path",
    "read_cpu_model",
    "resolve_cache_dir",
    "save_profile",
    "warm_hardware_profile",
]

PROFILE_SCHEMA = "carbonpipe.hwprofile/1"
CACHE_DIR_ENV = "CARBONPIPE_CACHE_DIR"

_TRACKING_MODES = ("machine", "process")
_RAPL_PROBE = "/sys/class/powercap/intel-rapl:0/energy_uj"
_PLAN_STR_FIELDS = ("ram_tracker", "cpu_tracker", "gpu_tracker")
# A CPU package draws more than 1 W and less than 1 kW (the largest server parts are ~500 W).
TDP_RANGE_W = (1.0, 1000.0)
_RAPL_ROOT = "/sys/class/powercap/"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return carbonpipe's cache folder: the argument, ``$CARBONPIPE_CACHE_DIR``, then the XDG default."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "carbonpipe"


def read_cpu_model() -> str | None:
    """Return the CPU model string from ``/proc/cpuinfo``, or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # x86 names it "model name"; ARM kernels use "Model" or "Hardware" instead.
    for field in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{field}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def gpu_fingerprint() -> dict[str, Any]:
    """Describe the GPUs this process can see, cheaply, from their device nodes.

    The ids CodeCarbon tracks (``CUDA_VISIBLE_DEVICES`` and friends) are already in its own cache
    key, which is part of ours.
    """
    try:
        nvidia = sorted(n for n in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", n))
    except OSError:
        nvidia = []
    return {"nvidia_devices": len(nvidia), "amd_kfd": os.path.exists("/dev/kfd")}


def _rapl_readable() -> bool:
    return os.access(_RAPL_PROBE, os.R_OK)


def machine_key(
    tracking_mode: str, codecarbon_version: str, codecarbon_key: Mapping[str, Any]
) -> dict[str, Any]:
    """Return everything a hardware plan depends on, as a JSON-ready mapping."""
    # Round-trip through JSON so tuples and lists compare equal after a save and a load.
    key = {
        "codecarbon": codecarbon_version,
        "cpu_model": read_cpu_model(),
        "cpu_count": os.cpu_count(),
        "tracking_mode": tracking_mode,
        "gpu": gpu_fingerprint(),
        "rapl_readable": _rapl_readable(),
        "codecarbon_key": dict(codecarbon_key),
    }
    loaded: dict[str, Any] = json.loads(
        json.dumps(key, sort_keys=True, default=str, allow_nan=False)
    )
    return loaded


def profile_path(cache_dir: str | os.PathLike[str] | None, key: Mapping[str, Any]) -> Path:
    """Return the file that holds the profile for ``key``."""
    text = json.dumps(key, sort_keys=True, allow_nan=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return resolve_cache_dir(cache_dir) / "hw" / f"{digest}.json"


def _private_hw_dir(path: Path) -> None:
    """Refuse (UnsafeFolder) a cache folder, or its ``hw`` folder, that others could write."""
    for folder in (path.parent.parent, path.parent):
        ensure_private_dir(folder, what="hardware cache folder", env=CACHE_DIR_ENV)


def _read_nofollow(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode("utf-8")


def load_profile(path: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the saved plan for ``key``, None when there is none; ValueError when it is unusable.

    Raises :class:`~carbonpipe.errors.UnsafeFolder` when the cache folder is not private.
    """
    _private_hw_dir(path)
    try:
        text = _read_nofollow(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:  # a symlink (ELOOP) or a binary file
        raise ValueError(f"hardware profile {path} cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"hardware profile {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"hardware profile {path} is not a {PROFILE_SCHEMA} document")
    if data.get("key") != dict(key):
        raise ValueError(f"hardware profile {path} was made for another machine or configuration")
    plan = data.get("plan")
    _check_plan(plan, path)
    assert isinstance(plan, dict)
    problem = plan_problem(plan, key)
    if problem:
        raise ValueError(
            f"hardware profile {path} is implausible, ignored and rewritten: {problem}"
        )
    return plan


def _norm_model(model: str) -> str:
    return re.sub(r"[^a-z0-9]", "", model.lower().replace("(r)", "").replace("(tm)", ""))


def _other_cpu(model: object, machine: object) -> bool:
    """Whether a profile's CPU ``model`` names another CPU than this ``machine`` reports.

    Compared on x86 only, where CodeCarbon's name (CPUID's brand string) and /proc/cpuinfo's are
    the same string; ARM kernels name the board or nothing instead.
    """
    if not (isinstance(model, str) and model and isinstance(machine, str) and machine):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return _norm_model(model) != _norm_model(machine)


def _tdp_problem(tdp: object) -> str | None:
    if tdp is None:
        return None
    low, high = TDP_RANGE_W
    if isinstance(tdp, bool) or not isinstance(tdp, (int, float)) or not low <= tdp <= high:
        return f"CPU TDP {tdp!r} W is outside {low:g}-{high:g} W"
    return None


def _machine_ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return None


def plan_problem(plan: Mapping[str, Any], key: Mapping[str, Any]) -> str | None:
    """Why a well-formed ``plan`` cannot be this machine's hardware, or None when it is plausible."""
    cc_key = key.get("codecarbon_key") if isinstance(key.get("codecarbon_key"), dict) else {}
    assert isinstance(cc_key, dict)
    machine = key.get("cpu_model")
    conf = plan.get("conf", {})
    if _other_cpu(conf.get("cpu_model"), machine):
        return f"it claims CPU {conf.get('cpu_model')!r}; this machine has {machine!r}"
    count = conf.get("cpu_count")
    if count is not None and count != key.get("cpu_count"):
        return f"it claims {count!r} CPUs; this machine has {key.get('cpu_count')!r}"
    sockets = conf.get("cpu_physical_count")
    if sockets is not None and (
        isinstance(sockets, bool) or not isinstance(sockets, int) or not 1 <= sockets <= 64
    ):
        return f"it claims {sockets!r} physical CPUs"
    ram, machine_ram = conf.get("ram_total_size"), _machine_ram_gb()
    if ram is not None and (
        isinstance(ram, bool)
        or not isinstance(ram, (int, float))
        or ram <= 0
        or (machine_ram is not None and ram > 2 * machine_ram)
    ):
        return f"it claims {ram!r} GB of RAM; this machine has {machine_ram or 0:.1f} GB"
    for spec in plan.get("hardware_specs", ()):
        if spec.get("kind") == "cpu":
            if _other_cpu(spec.get("model"), machine):
                return f"its CPU spec names {spec.get('model')!r}; this machine has {machine!r}"
            problem = _tdp_problem(spec.get("tdp"))
            if problem:
                return problem
            rapl_dir = spec.get("rapl_dir")
            if rapl_dir is not None and not (
                isinstance(rapl_dir, str) and os.path.normpath(rapl_dir).startswith(_RAPL_ROOT)
            ):
                return f"its RAPL folder {rapl_dir!r} is not under {_RAPL_ROOT}"
        for name in ("force_ram_power", "force_cpu_power"):
            if name in spec and spec[name] != cc_key.get(name):
                return f"its {name} {spec[name]!r} is not the configured {cc_key.get(name)!r}"
        mode = spec.get("tracking_mode")
        if mode is not None and mode != key.get("tracking_mode"):
            return f"its tracking mode {mode!r} is not {key.get('tracking_mode')!r}"
    return None


def _check_plan(plan: object, path: Path) -> None:
    problem = None
    if not isinstance(plan, dict):
        problem = "its plan is not an object"
    elif any(not isinstance(plan.get(name), str) for name in _PLAN_STR_FIELDS):
        problem = "its plan lacks the tracker names"
    elif not isinstance(plan.get("conf"), dict):
        problem = "its plan lacks the configuration"
    elif not isinstance(plan.get("hardware_specs"), list) or not all(
        isinstance(spec, dict) and isinstance(spec.get("kind"), str)
        for spec in plan["hardware_specs"]
    ):
        problem = "its plan has malformed hardware specs"
    if problem:
        raise ValueError(f"hardware profile {path} is unusable: {problem}")


def save_profile(path: Path, key: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
    """Write a profile atomically (temporary file, then rename), so readers never see half of one."""
    document = {
        "schema": PROFILE_SCHEMA,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "key": dict(key),
        "plan": dict(plan),
    }
    _private_hw_dir(path)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, sort_keys=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def find_cpu_tdp_w(cache_dir: str | os.PathLike[str] | None) -> float | None:
    """Return the CPU TDP CodeCarbon found on this kind of machine, from any saved profile, if any.

    Only from a private cache folder, and only a TDP within :data:`TDP_RANGE_W` whose profile names
    this machine's CPU.
    """
    folder = resolve_cache_dir(cache_dir) / "hw"
    try:
        _private_hw_dir(folder / "x.json")
        paths = sorted(folder.glob("*.json"))
    except Exception:  # an unsafe or unreadable cache: the caller's default TDP applies
        return None
    model, count = read_cpu_model(), os.cpu_count()
    for path in paths:
        try:
            data = json.loads(_read_nofollow(path))
            key, specs = data["key"], data["plan"]["hardware_specs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (
            not isinstance(key, dict)
            or key.get("cpu_model") != model
            or key.get("cpu_count") != count
        ):
            continue
        for spec in specs if isinstance(specs, list) else ():
            tdp = spec.get("tdp") if isinstance(spec, dict) else None
            if (
                spec.get("kind") == "cpu"
                and isinstance(tdp, (int, float))
                and _tdp_problem(tdp) is None
                and not _other_cpu(spec.get("model"), model)
            ):
                return float(tdp)
    return None


# --- CodeCarbon side: everything below imports codecarbon, lazily ---------------------------------


def new_tracker(tracking_mode: str, measure_power_secs: float) -> Any:
    """Build the OfflineEmissionsTracker carbonpipe measures with; it never touches the network."""
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker(
        # CodeCarbon's emissions are not used (carbonpipe applies its own intensity): the country
        # and the forced intensity only keep it offline and away from Electricity Maps.
        country_iso_code="USA",
        force_carbon_intensity_g_co2e_kwh=0.0,
        # output_methods=[] is 3.3's replacement for the deprecated save_to_file=False, and also
        # switches off API, logger and Prometheus outputs a .codecarbon.config might turn on.
        output_methods=[],
        emissions_endpoint=None,
        api_call_interval=-1,
        log_level="error",
        allow_multiple_runs=True,
        measure_power_secs=measure_power_secs,
        tracking_mode=tracking_mode,
        # The record applies the data centre's PUE itself; CodeCarbon must report raw energy.
        pue=1.0,
        project_name="carbonpipe",
    )


def tracker_key(tracker: Any) -> dict[str, Any]:
    """Return the machine key of a tracker (its CodeCarbon version and cache key included)."""
    from codecarbon._version import __version__
    from codecarbon.core import hardware_cache

    cc_key = dataclasses.asdict(hardware_cache.make_key(tracker))
    return machine_key(tracker._tracking_mode, __version__, cc_key)


def inject_plan(tracker: Any, plan: Mapping[str, Any]) -> None:
    """Make CodeCarbon's per-process cache hold ``plan``, so the tracker's start skips detection."""
    from codecarbon.core import hardware_cache

    built = hardware_cache._HardwarePlan(**plan)
    with hardware_cache._cache_lock:
        hardware_cache._plans[hardware_cache.make_key(tracker)] = built


def forget_plan(tracker: Any) -> None:
    """Drop the tracker's plan from CodeCarbon's per-process cache (after it failed to apply)."""
    from codecarbon.core import hardware_cache

    with hardware_cache._cache_lock:
        hardware_cache._plans.pop(hardware_cache.make_key(tracker), None)


def codecarbon_cache_key(tracker: Any) -> Any:
    """Return CodeCarbon's own cache key for a tracker; take it before detection, as CodeCarbon does."""
    from codecarbon.core import hardware_cache

    return hardware_cache.make_key(tracker)


def captured_plan(cc_key: Any) -> dict[str, Any] | None:
    """Return the plan CodeCarbon cached under ``cc_key`` after detection, as JSON-ready data."""
    from codecarbon.core import hardware_cache

    with hardware_cache._cache_lock:
        plan = hardware_cache._plans.get(cc_key)
    if plan is None:
        return None
    loaded: dict[str, Any] = json.loads(
        json.dumps(dataclasses.asdict(plan), default=str, allow_nan=False)
    )
    return loaded


def warm_hardware_profile(
    *,
    tracking_modes: Iterable[str] = _TRACKING_MODES,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, ...]:
    """Run CodeCarbon's hardware detection here and save its profile, e.g. while building an image.

    Args:
        tracking_modes: The modes to warm ("machine", "process"); both by default.
        cache_dir: The cache folder; defaults to ``$CARBONPIPE_CACHE_DIR`` or ``~/.cache/carbonpipe``.

    Returns:
        The profile files written.

    Raises:
        ValueError: A tracking mode is not "machine" or "process".
        ImportError: CodeCarbon cannot be imported.
        OSError: The profile cannot be written.
        RuntimeError: CodeCarbon's private hardware cache is not where carbonpipe expects it.
    """
    modes = tuple(tracking_modes)
    for mode in modes:
        if mode not in _TRACKING_MODES:
            raise ValueError(f"tracking_modes: {mode!r} is not one of {', '.join(_TRACKING_MODES)}")
    import logging

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    written = []
    for mode in modes:
        tracker = new_tracker(mode, 15.0)
        key, cc_key = tracker_key(tracker), codecarbon_cache_key(tracker)
        tracker._ensure_hardware_ready()
        plan = captured_plan(cc_key)
        if plan is None:
            raise RuntimeError("CodeCarbon did not cache a hardware plan; its private API changed")
        path = profile_path(cache_dir, key)
        save_profile(path, key, plan)
        written.append(path)
    return tuple(written)
