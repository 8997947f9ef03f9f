"""Measure a step's energy with CodeCarbon, over the whole step, for a few milliseconds of its time.

CodeCarbon's cold start costs a fresh process ~2 s (import, hardware detection, pandas at stop),
and starting it on a thread while a pure-Python step runs is slower still (the GIL). So
:class:`Meter` leaves CodeCarbon to a sidecar process (``python -m carbonpipe._meter``):

* ``start()`` reads a few cumulative counters (clocks, the step's CPU time, the cgroup's CPU time,
  ``/proc/stat``, RAPL), hands them to the sidecar (spawning it, unless ``prepare()`` did so
  earlier) and returns; no CodeCarbon, psutil or pandas in the step's process.
* The sidecar imports CodeCarbon, applies the saved hardware profile (:mod:`carbonpipe.hwprofile`),
  starts an ``OfflineEmissionsTracker`` and *back-dates* it to the step's start: its clocks and
  baselines are the step's snapshot (CPU time, ``/proc/stat``, RAPL counters; the GPUs' energy
  counters move back by their current power times the gap), so the window is the whole step, not
  the part after the sidecar got ready. Its start-up (~0.1 CPU-second) runs on another core when
  there is one; ``prepare()`` moves it ahead of the step where there is not.
* ``stop()`` asks the sidecar for a last sample and waits for its answer, bounded in time. The
  figures are CodeCarbon's, brought onto the step's exact window: energy that CodeCarbon derives
  from a rate is scaled from its window to the step's (they differ by a millisecond unless the
  step ended before the sidecar was ready); energy it derives from CPU time is kept as is.

Tracking never breaks the step: ``start()`` and ``stop()`` never raise. When CodeCarbon cannot
measure (not installed, crashed, killed, too slow), the measurement is an ``estimate`` from the
step's own counters with CodeCarbon's models and defaults, and says why in ``errors``.

Tracking modes:

* ``"machine"``: the whole machine as CodeCarbon sees it. Inside a container that is the *node*:
  ``/proc/stat`` and ``/proc/meminfo`` show all of the node's CPUs and memory, not the container's
  limits, so the figure includes every other pod on the node (and this meter's own sidecar).
* ``"process"``: the step's own share. CPU is charged by CPU time at CodeCarbon's TDP per core,
  RAM by the resident memory of the step's process tree. The share is taken from the container's
  cgroup CPU accounting when readable inside a container (``share="cgroup"``: it also catches
  daemonised children), else from the step's process tree (``share="process"``). Either way the
  sidecar's own CPU time is left out. With RAPL, CodeCarbon only measures the whole package; the
  step is then charged the package energy times its fraction of the machine's busy CPU time.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any

from carbonpipe import _counters

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "CPU_SHARES",
    "DEFAULT_MEASURE_POWER_SECS",
    "DEFAULT_STOP_TIMEOUT_S",
    "METHODS",
    "TRACKING_MODES",
    "Measurement",
    "Meter",
    "estimate_without_meter",
    "warm_hardware_profile",
]

TRACKING_MODES = ("machine", "process")
CPU_SHARES = ("auto", "process", "cgroup")
METHODS = ("rapl", "cpu_load", "tdp", "nvml", "estimate")

# CodeCarbon's own sampling runs every second whatever this is; measure_power_secs only sets how
# often it folds samples into energy. Long is cheap and loses nothing: stop() takes a last sample.
DEFAULT_MEASURE_POWER_SECS = 15.0
# Only reached when the sidecar is not ready at stop (first run on a machine: ~2 s) or is hung.
DEFAULT_STOP_TIMEOUT_S = 10.0

_SIDECAR_MODULE = "carbonpipe._meter"
_REAP_TIMEOUT_S = 1.0
_KWH_PER_J = 1 / 3.6e6

# The estimate reuses CodeCarbon 3.3's models and defaults (codecarbon/external/hardware.py and
# codecarbon/external/ram.py), so a failed sidecar does not change the order of magnitude:
# an unknown CPU is taken as 85 W TDP (POWER_CONSTANT), shared per core in process mode; machine
# mode draws TDP x (0.1 + 0.9 load^3), or 50 % of TDP without a load; RAM is 5 W per DIMM (x86)
# or 1.5 W (ARM), DIMMs guessed from the memory size, with a 10 W (x86) or 3 W (ARM) floor.
_DEFAULT_TDP_W = 85.0
_CONSTANT_LOAD_RATIO = 0.5
_RAM_W_PER_DIMM = {"x86": 5.0, "arm": 1.5}
_RAM_MIN_W = {"x86": 10.0, "arm": 3.0}


@dataclass(frozen=True)
class Measurement:
    """Energy a step used, per device, over the step's whole wall-clock window.

    ``method`` is how the energy was obtained: ``rapl`` (a hardware energy counter), ``cpu_load``
    (CodeCarbon's TDP x CPU-load model), ``tdp`` (a constant share of TDP), ``nvml`` (NVIDIA GPUs
    measured; the CPU's method is then in ``cpu_method``) or ``estimate`` (CodeCarbon failed; see
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

    @property
    def total_energy_kwh(self) -> float:
        """Return CPU + GPU + RAM energy in kWh."""
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


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


def warm_hardware_profile(
    *,
    tracking_modes: tuple[str, ...] = TRACKING_MODES,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, ...]:
    """Run CodeCarbon's slow hardware detection once and save it (Dockerfile, CLI); see hwprofile."""
    from carbonpipe import hwprofile

    return hwprofile.warm_hardware_profile(tracking_modes=tracking_modes, cache_dir=cache_dir)


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
    from carbonpipe import hwprofile

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


class Meter:
    """Measures the energy of the code between ``start()`` and ``stop()`` with CodeCarbon.

    No method ever raises; ``stop()`` returns the same :class:`Measurement` when called again.
    Also a context manager: ``with Meter() as meter: ...``, then ``meter.measurement``. Call
    ``prepare()`` early, when the process has other work to do before the step, to get CodeCarbon
    ready by then.

    Args:
        tracking_mode: "machine" (the node as CodeCarbon sees it) or "process" (the step's share);
            see the module docstring.
        measure_power_secs: How often CodeCarbon folds its 1 s samples into energy.
        cache_dir: Folder for hardware profiles; default ``$CARBONPIPE_CACHE_DIR`` or
            ``~/.cache/carbonpipe``.
        share: In process mode, where the step's CPU time comes from: "auto" (the cgroup inside a
            container when readable, else the process tree), "process" or "cgroup".
        stop_timeout_s: The longest ``stop()`` waits for the sidecar before estimating.
    """

    def __init__(
        self,
        *,
        tracking_mode: str = "machine",
        measure_power_secs: float = DEFAULT_MEASURE_POWER_SECS,
        cache_dir: str | os.PathLike[str] | None = None,
        share: str = "auto",
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        if tracking_mode not in TRACKING_MODES:
            raise ValueError(
                f"tracking_mode must be one of {', '.join(map(repr, TRACKING_MODES))}, got {tracking_mode!r}"
            )
        if share not in CPU_SHARES:
            raise ValueError(
                f"share must be one of {', '.join(map(repr, CPU_SHARES))}, got {share!r}"
            )
        self._measure_power_secs = _positive("measure_power_secs", measure_power_secs)
        self._stop_timeout_s = _positive("stop_timeout_s", stop_timeout_s)
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
        self._tracking_mode = tracking_mode
        self._share_wanted = share
        self._cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._share = "machine" if tracking_mode == "machine" else "process"
        self._cgroup_file: str | None = None
        self._t0: _Edge | None = None
        self._prepared = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._errors: list[str] = []
        self._diagnostics: dict[str, Any] = {}
        self._measurement: Measurement | None = None

    @property
    def tracking_mode(self) -> str:
        """Return "machine" or "process"."""
        return self._tracking_mode

    @property
    def measurement(self) -> Measurement | None:
        """Return the measurement once ``stop()`` has run, else None."""
        return self._measurement

    @property
    def sidecar_pid(self) -> int | None:
        """Return the measuring sidecar's pid while there is one."""
        return None if self._proc is None else self._proc.pid

    @property
    def diagnostics(self) -> dict[str, Any]:
        """Return how the measurement went: profile source, sidecar lag, CPU cost and stop wait.

        Keys (each present once known): ``sidecar_pid``, ``profile`` ("cache" or "detected"),
        ``window_lag_s`` (how long after start() CodeCarbon ran; the window is back-dated),
        ``sidecar_cpu_s`` (its CPU time, start-up included), ``sampling_cpu_s`` and
        ``sampling_s`` (its CPU and wall time from CodeCarbon's start to the last sample),
        ``stop_wait_s`` (how long stop() waited for the answer).
        """
        return dict(self._diagnostics)

    def __enter__(self) -> Meter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def prepare(self) -> None:
        """Spawn the sidecar ahead of ``start()``, so CodeCarbon gets ready off the step's clock.

        Optional and never raises: call it early (before a budget gate, cloud detection, data
        loading) and the sidecar's start-up CPU overlaps that work instead of the step. The
        measured window still begins at ``start()``.
        """
        if self._proc is not None or self._prepared:
            return
        self._prepared = True
        try:
            self._share, self._cgroup_file = _counters.resolve_share(
                self._tracking_mode, self._share_wanted
            )
            if self._share_wanted == "cgroup" and self._share != "cgroup":
                self._errors.append(
                    "cgroup CPU accounting is not readable; the process tree was charged"
                )
            self._spawn()
        except Exception as exc:
            self._errors.append(f"could not start the measuring sidecar: {_describe(exc)}")
            self._proc = None

    def start(self, *, at: Mapping[str, Any] | None = None) -> None:
        """Snapshot the step's counters and hand them to the sidecar; milliseconds, never raises.

        ``at`` opens the window earlier, at counters read then with
        ``carbonpipe._counters.read_counters(cgroup_file, rapl=True)`` (``carbonpipe run`` reads
        them before it starts the command, and sets tracking up while the command runs).
        """
        if self._t0 is not None or self._measurement is not None:
            return
        # Before t0: a sidecar reaped later would move its CPU time into this step's count.
        with contextlib.suppress(Exception):
            _reap_exited()
        self.prepare()
        try:
            self._t0 = _Edge(**at) if at is not None else _read_edge(self._cgroup_file, rapl=True)
        except Exception as exc:
            self._errors.append(f"could not read the step's counters at start: {_describe(exc)}")
            self._t0 = _bare_edge()
        if self._proc is not None:
            # If the sidecar is gone already, stop() reads why from its stdout.
            with contextlib.suppress(OSError, ValueError):
                t0 = self._t0
                self._send(
                    {
                        "t0": {
                            "perf": t0.perf_s,
                            "wall": t0.wall_s,
                            "boot": t0.boot_s,
                            "proc_cpu_s": t0.proc_cpu_s,
                            "cgroup_cpu_s": t0.cgroup_cpu_s,
                            "stat": t0.stat,
                            "rapl_uj": t0.rapl_uj,
                        }
                    }
                )

    def stop(self) -> Measurement:
        """Return the step's measurement (CodeCarbon's, else an estimate); never raises."""
        if self._measurement is not None:
            return self._measurement
        try:
            measurement = self._stop()
        except Exception as exc:
            self._errors.append(f"internal error while stopping: {_describe(exc)}")
            try:
                t1 = _read_edge(self._cgroup_file, rapl=False)
                measurement = self._estimate(self._t0 or t1, t1, sidecar_cpu_s=0.0)
            except Exception:
                measurement = _empty_measurement(self, tuple(self._errors))
        self._measurement = measurement
        with contextlib.suppress(Exception):
            _reap_exited()  # often already gone by now: no zombie left behind
        return measurement

    # -- internals --------------------------------------------------------------------------------

    def _spawn(self) -> None:
        import subprocess

        if not sys.executable:
            raise RuntimeError(
                "no Python executable to run the sidecar with (sys.executable is empty)"
            )
        proc = subprocess.Popen(
            [sys.executable, "-m", _SIDECAR_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C meant for the step must not kill the measurement first.
            start_new_session=True,
        )
        self._proc = proc
        self._diagnostics["sidecar_pid"] = proc.pid
        try:
            self._send(
                {
                    "ppid": os.getpid(),
                    "tracking_mode": self._tracking_mode,
                    "share": self._share,
                    "cgroup_file": self._cgroup_file,
                    "measure_power_secs": self._measure_power_secs,
                    "cache_dir": self._cache_dir,
                }
            )
        except BaseException:
            self._proc = None
            proc.kill()
            _reap(proc)
            _close_pipes(proc)
            raise

    def _send(self, message: dict[str, Any]) -> None:
        import json

        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        self._proc.stdin.flush()

    def _stop(self) -> Measurement:
        t1 = _read_edge(self._cgroup_file, rapl=False)
        if self._t0 is None:
            self._errors.append("stop() was called before start(); nothing was measured")
            if self._proc is not None:
                _close_pipes(self._proc)  # a prepared sidecar exits when its stdin closes
                _reap_later(self._proc)
            return self._estimate(t1, t1, sidecar_cpu_s=0.0)
        raw, sidecar_cpu_s = self._ask_sidecar() if self._proc is not None else (None, 0.0)
        if raw is not None and raw.get("ok") is True:
            try:
                return self._from_sidecar(raw, self._t0, t1)
            except (KeyError, TypeError, ValueError) as exc:
                self._errors.append(f"the sidecar's answer was unreadable: {_describe(exc)}")
        return self._estimate(self._t0, t1, sidecar_cpu_s=sidecar_cpu_s)

    def _ask_sidecar(self) -> tuple[dict[str, Any] | None, float]:
        """Ask the sidecar to stop, wait (bounded) for its JSON answer, reap it."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        asked = time.perf_counter()
        children_before = _children_cpu_s()
        # If it is already gone, its stdout tells us how.
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(b"stop\n")
            proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        line, outcome = _read_line(proc.stdout, time.monotonic() + self._stop_timeout_s)
        self._diagnostics["stop_wait_s"] = time.perf_counter() - asked
        if outcome != "line":
            if outcome == "timeout":
                self._errors.append(
                    f"the measuring sidecar gave no answer within {self._stop_timeout_s:g} s "
                    "and was killed"
                )
                proc.kill()
            returncode = _reap(proc)
            # Reaped, its whole CPU cost shows in our children's times (the estimate needs it).
            sidecar_cpu_s = max(_children_cpu_s() - children_before, 0.0)
            self._diagnostics["sidecar_cpu_s"] = sidecar_cpu_s
            stderr = _drain(proc.stderr)
            _close_pipes(proc)
            if outcome == "eof":
                detail = f": {stderr[-600:]}" if stderr else ""
                self._errors.append(
                    f"the measuring sidecar {_exit_text(returncode)} without an answer{detail}"
                )
            return None, sidecar_cpu_s
        _close_pipes(proc)
        raw = _parse_answer(line, self._errors)
        if raw is None or raw.get("ok") is not True:
            _reap(proc)  # it exits on its own right after a failure report
        else:
            # It exits right after answering; waiting for that would only add to the step's time.
            _reap_later(proc)
        if raw is None:
            return None, 0.0
        sidecar_cpu_s = float(raw.get("sidecar_cpu_s") or 0.0)
        self._diagnostics["sidecar_cpu_s"] = sidecar_cpu_s
        self._errors.extend(str(e) for e in raw.get("errors") or ())
        if raw.get("ok") is not True and raw.get("stderr"):
            self._errors.append(f"sidecar stderr: {raw['stderr']}")
        self._diagnostics["profile"] = raw.get("profile")
        for name in ("sampling_cpu_s", "sampling_s"):
            if isinstance(raw.get(name), (int, float)):
                self._diagnostics[name] = float(raw[name])
        if "cc_started_perf" in raw and self._t0 is not None:
            self._diagnostics["window_lag_s"] = float(raw["cc_started_perf"]) - self._t0.perf_s
        return raw, sidecar_cpu_s

    def _from_sidecar(self, raw: dict[str, Any], t0: _Edge, t1: _Edge) -> Measurement:
        """Bring CodeCarbon's figures onto the step's window [t0, t1]."""
        duration = max(t1.perf_s - t0.perf_s, 0.0)
        until = float(raw["measured_until_perf"])
        window_start = float(raw["window_start_perf"])
        cc_started = float(raw["cc_started_perf"])
        energy: dict[str, float] = {}
        for part in ("cpu", "gpu", "ram"):
            comp = raw["components"][part]
            value = float(comp["energy_kwh"])
            covered = bool(comp["covered"])
            span = until - (window_start if covered else cc_started)
            if not covered or comp["per_time"]:
                value = value * duration / span if span > 0 else 0.0
            if not covered and value > 0:
                self._errors.append(
                    f"{part} energy of the first {cc_started - t0.perf_s:.2f} s was extrapolated "
                    "at the mean power measured after it"
                )
            energy[part] = max(value, 0.0) if math.isfinite(value) else 0.0
        cpu_method = str(raw["cpu_method"])
        if self._tracking_mode == "process" and cpu_method == "rapl":
            fraction = _busy_fraction(raw.get("tree_cpu_s"), t0.stat, t1.stat)
            if fraction is None:
                self._errors.append(
                    "RAPL energy is the whole CPU package's: it could not be apportioned"
                )
            else:
                energy["cpu"] *= fraction
        method = "nvml" if raw.get("gpu_method") == "nvml" else cpu_method
        if method not in METHODS:
            method = "tdp"
        return _measurement(
            t0,
            duration,
            energy,
            method=method,
            cpu_method=cpu_method,
            tracking_mode=self._tracking_mode,
            share=str(raw.get("share") or self._share),
            codecarbon_version=raw.get("codecarbon_version"),
            cpu_model=raw.get("cpu_model"),
            gpu_model=raw.get("gpu_model"),
            errors=self._errors,
        )

    def _estimate(self, t0: _Edge, t1: _Edge, *, sidecar_cpu_s: float) -> Measurement:
        """Estimate from the step's own counters with CodeCarbon's models (see the constants)."""
        from carbonpipe import hwprofile

        duration = max(t1.perf_s - t0.perf_s, 0.0)
        cpus = os.cpu_count() or 1
        tdp_w = hwprofile.find_cpu_tdp_w(self._cache_dir) or _DEFAULT_TDP_W
        share = self._share
        if self._tracking_mode == "process":
            if share == "cgroup" and t0.cgroup_cpu_s is not None and t1.cgroup_cpu_s is not None:
                # The sidecar ran inside the same cgroup until the end: its CPU is not the step's.
                cpu_s = t1.cgroup_cpu_s - t0.cgroup_cpu_s - sidecar_cpu_s
            else:
                share = "process"
                cpu_s = t1.proc_cpu_s - t0.proc_cpu_s
            cpu_j = tdp_w / cpus * max(cpu_s, 0.0)
            memory_gb = _peak_rss_gb()
        else:
            load = _machine_load(t0.stat, t1.stat)
            ratio = _CONSTANT_LOAD_RATIO if load is None else 0.1 + 0.9 * load**3
            cpu_j = tdp_w * ratio * duration
            memory_gb = _machine_memory_gb()
        energy = {
            "cpu": cpu_j * _KWH_PER_J,
            "gpu": 0.0,
            "ram": _ram_power_w(memory_gb) * duration * _KWH_PER_J,
        }
        self._errors.append(
            "energy estimated from the step's own counters; GPUs, if any, are not counted"
        )
        return _measurement(
            t0,
            duration,
            energy,
            method="estimate",
            cpu_method="estimate",
            tracking_mode=self._tracking_mode,
            share=share,
            codecarbon_version=None,
            cpu_model=hwprofile.read_cpu_model(),
            gpu_model=None,
            errors=self._errors,
        )


# -- helpers ------------------------------------------------------------------------------------


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


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


def _empty_measurement(meter: Meter, errors: tuple[str, ...]) -> Measurement:
    now = datetime.now(timezone.utc)
    return Measurement(
        started_at=now,
        ended_at=now,
        duration_s=0.0,
        cpu_energy_kwh=0.0,
        gpu_energy_kwh=0.0,
        ram_energy_kwh=0.0,
        cpu_power_w=0.0,
        gpu_power_w=0.0,
        ram_power_w=0.0,
        method="estimate",
        tracking_mode=meter.tracking_mode,
        share=meter._share,
        codecarbon_version=None,
        cpu_model=None,
        gpu_model=None,
        errors=errors,
        cpu_method="estimate",
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


def _children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _read_line(stream: IO[bytes], deadline: float) -> tuple[bytes, str]:
    """Read one line from a pipe before ``deadline``: (line, "line" | "eof" | "timeout")."""
    import select

    fd = stream.fileno()
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return buffer, "timeout"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return buffer, "eof"
        buffer += chunk
    return buffer.split(b"\n", 1)[0], "line"


def _parse_answer(line: bytes, errors: list[str]) -> dict[str, Any] | None:
    import json

    try:
        raw = json.loads(line)
    except ValueError as exc:
        errors.append(f"the sidecar's answer was not JSON: {_describe(exc)}")
        return None
    if not isinstance(raw, dict):
        errors.append("the sidecar's answer was not a JSON object")
        return None
    return raw


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# Sidecars that answered and are exiting. Waiting for their exit would only lengthen the step,
# and a thread to wait would take the GIL from it: they are reaped by the next start() (before
# its t0, so their CPU time cannot land in that step's count), stop(), or at exit, where a
# sidecar has long exited (it does so right after answering) and the wait is bounded anyway.
_EXITING: list[subprocess.Popen[bytes]] = []
_EXIT_REAP_TIMEOUT_S = 0.2


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    if not _EXITING:
        import atexit

        atexit.register(_reap_exited, wait_s=_EXIT_REAP_TIMEOUT_S)
    _EXITING.append(proc)


def _reap_exited(wait_s: float = 0.0) -> None:
    """Reap the answered sidecars that have exited, waiting up to ``wait_s`` for each."""
    import subprocess

    for proc in list(_EXITING):
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        _EXITING.remove(proc)


def _drain(stream: IO[bytes] | None) -> str:
    """Read what a dead sidecar left on stderr, without blocking."""
    import select

    if stream is None:
        return ""
    fd = stream.fileno()
    data = b""
    while len(data) < 65536:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _reap(proc: subprocess.Popen[bytes]) -> int | None:
    import subprocess

    try:
        return proc.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        return proc.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


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
