"""Measure a step's energy with CodeCarbon, over the whole step, for a few milliseconds of its time.

CodeCarbon's cold start costs a fresh process ~2 s (import, hardware detection, pandas at stop),
and starting it on a thread while a pure-Python step runs is slower still (the GIL). So
:class:`Meter` leaves CodeCarbon to a sidecar process (``python -m carbonpipe.measure.sidecar``):

* ``start()`` reads a few cumulative counters (clocks, the step's CPU time, the cgroup's CPU time,
  ``/proc/stat``, RAPL), hands them to the sidecar (spawning it, unless ``prepare()`` did so
  earlier) and returns; no CodeCarbon, psutil or pandas in the step's process.
* The sidecar imports CodeCarbon, applies the saved hardware profile (:mod:`carbonpipe.measure.hwprofile`),
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
* ``"process"``: the step's share of what machine mode measures, over the same window and with
  the same power model, so never more than the machine (:mod:`carbonpipe.measure.share`): CPU
  energy times the step's fraction of the machine's busy CPU time (``/proc/stat``), RAM energy
  times the step's resident memory over the machine's used memory (a time-weighted mean), each
  capped at 1. Steps' CPU times are disjoint, so concurrent steps sum to at most the machine. The
  step's CPU time comes from its container's cgroup (``share="cgroup"``: it also catches
  daemonised children) only when that cgroup is the step's own: not the root cgroup, holding no
  process outside the step's tree and its ancestors; else from the step's process tree
  (``share="process"``). Either way the sidecar's own CPU time is left out.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.measure import counters as _counters
from carbonpipe.measure import share as _share

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping
    from pathlib import Path
from carbonpipe.measure.base import (
    _KWH_PER_J,
    CPU_SHARES,
    METHODS,
    TRACKING_MODES,
    Measurement,
    _bare_edge,
    _describe,
    _Edge,
    _measurement,
    _read_edge,
)
from carbonpipe.measure.estimate import (
    _CONSTANT_LOAD_RATIO,
    _DEFAULT_TDP_W,
    _machine_load,
    _machine_memory_gb,
    _peak_rss_gb,
    _ram_power_w,
)
from carbonpipe.measure.process import (
    _children_cpu_s,
    _close_pipes,
    _drain,
    _exit_text,
    _parse_answer,
    _read_line,
    _reap,
    _reap_exited,
    _reap_later,
)

# CodeCarbon's own sampling runs every second whatever this is; measure_power_secs only sets how
# often it folds samples into energy. Long is cheap and loses nothing: stop() takes a last sample.
DEFAULT_MEASURE_POWER_SECS = 15.0
# Only reached when the sidecar is not ready at stop (first run on a machine: ~2 s) or is hung.
DEFAULT_STOP_TIMEOUT_S = 10.0

_SIDECAR_MODULE = "carbonpipe.measure.sidecar"


def warm_hardware_profile(
    *,
    tracking_modes: tuple[str, ...] = TRACKING_MODES,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, ...]:
    """Run CodeCarbon's slow hardware detection once and save it (Dockerfile, CLI); see hwprofile."""
    from carbonpipe.measure import hwprofile

    return hwprofile.warm_hardware_profile(tracking_modes=tracking_modes, cache_dir=cache_dir)


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
            container when it is the step's own, else the process tree), "process" or "cgroup"
            (the same, with a note in ``errors`` when the cgroup could not be used).
        stop_timeout_s: The longest ``stop()`` waits for the sidecar before estimating.
        heartbeat_path: A file the sidecar rewrites after every measurement with the energy
            measured so far, and once more if the step dies without stopping (see
            :mod:`carbonpipe.measure.heartbeat`); ``None`` for none.
        heartbeat_seal_root: The spool folder whose key seals each heartbeat (the tracker's
            heartbeats sit in its ``open/`` folder); ``None`` writes them unsealed.
    """

    def __init__(
        self,
        *,
        tracking_mode: str = "machine",
        measure_power_secs: float = DEFAULT_MEASURE_POWER_SECS,
        cache_dir: str | os.PathLike[str] | None = None,
        share: str = "auto",
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        heartbeat_path: str | os.PathLike[str] | None = None,
        heartbeat_seal_root: str | os.PathLike[str] | None = None,
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
        if heartbeat_path is not None and not isinstance(heartbeat_path, (str, os.PathLike)):
            raise TypeError(
                f"heartbeat_path must be a path or None, got {type(heartbeat_path).__name__}"
            )
        self._heartbeat_path = (
            None if heartbeat_path is None else os.path.abspath(os.fspath(heartbeat_path))
        )
        self._heartbeat_seal_root = (
            None if heartbeat_seal_root is None else os.path.abspath(os.fspath(heartbeat_seal_root))
        )
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
            self._share, self._cgroup_file, why_not = _counters.choose_share(
                self._tracking_mode, self._share_wanted
            )
            if self._share_wanted == "cgroup" and self._share != "cgroup":
                self._errors.append(f"{why_not}; the process tree was charged, not the cgroup")
            self._spawn()
        except Exception as exc:
            self._errors.append(f"could not start the measuring sidecar: {_describe(exc)}")
            self._proc = None

    def start(self, *, at: Mapping[str, Any] | None = None) -> None:
        """Snapshot the step's counters and hand them to the sidecar; milliseconds, never raises.

        ``at`` opens the window earlier, at counters read then with
        ``carbonpipe.measure.counters.read_counters(cgroup_file, rapl=True)`` (``carbonpipe run`` reads
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
                    "heartbeat_path": self._heartbeat_path,
                    "heartbeat_seal_root": self._heartbeat_seal_root,
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
        self._proc.stdin.write(json.dumps(message, allow_nan=False).encode() + b"\n")
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
        if self._tracking_mode == "process":
            shares = raw.get("shares")
            if not isinstance(shares, dict):
                self._errors.append(
                    "the step's share of the machine is unknown: the machine was charged"
                )
            else:
                cpu_share = _number(shares.get("cpu"))
                step_cpu_s = _number(raw.get("tree_cpu_s"))
                busy_s = _share.busy_seconds(t0.stat, t1.stat, os.sysconf("SC_CLK_TCK"))
                if step_cpu_s is not None and busy_s is not None:
                    # Over the step's own window: the sidecar's last sample may come seconds
                    # after it (a step that ended before the sidecar was ready).
                    cpu_share = _share.cpu_share(
                        step_cpu_s, busy_s, window_s=duration, cpus=os.cpu_count() or 1
                    )
                energy = _share.apportion(
                    energy, _share.Shares(cpu=cpu_share, ram=_number(shares.get("ram")))
                )
        method = "nvml" if raw.get("gpu_method") == "nvml" else cpu_method
        if method not in METHODS:
            method = "tdp"
        measurement = _measurement(
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
        from dataclasses import replace

        from carbonpipe.measure.host import checked_host
        from carbonpipe.measure.resources import checked_resources

        # Read by the sidecar, off the step's path: the GPUs the step can see
        # (carbonpipe.measure.gpus), the host's facts and what the step could use (its cgroup).
        devices = raw.get("gpu_devices")
        measurement = replace(
            measurement,
            gpu_devices=tuple(dict(d) for d in devices) if isinstance(devices, list) else None,
            host=checked_host(raw.get("host")),
            resources=checked_resources(raw.get("resources")),
        )
        return _with_profile(measurement, raw.get("samples"), window_start)

    def _estimate(self, t0: _Edge, t1: _Edge, *, sidecar_cpu_s: float) -> Measurement:
        """Estimate from the step's own counters with CodeCarbon's models (see the constants)."""
        from carbonpipe.measure import hwprofile

        duration = max(t1.perf_s - t0.perf_s, 0.0)
        tdp_w = hwprofile.find_cpu_tdp_w(self._cache_dir) or _DEFAULT_TDP_W
        share = self._share
        # The machine as machine mode estimates it; process mode charges the step its share.
        load = _machine_load(t0.stat, t1.stat)
        ratio = _CONSTANT_LOAD_RATIO if load is None else 0.1 + 0.9 * load**3
        energy = {
            "cpu": tdp_w * ratio * duration * _KWH_PER_J,
            "gpu": 0.0,
            "ram": _ram_power_w(_machine_memory_gb()) * duration * _KWH_PER_J,
        }
        if self._tracking_mode == "process":
            if share == "cgroup" and t0.cgroup_cpu_s is not None and t1.cgroup_cpu_s is not None:
                # The sidecar ran inside the same cgroup until the end: its CPU is not the step's.
                cpu_s = t1.cgroup_cpu_s - t0.cgroup_cpu_s - sidecar_cpu_s
            else:
                share = "process"
                cpu_s = t1.proc_cpu_s - t0.proc_cpu_s
            busy_s = _share.busy_seconds(t0.stat, t1.stat, os.sysconf("SC_CLK_TCK"))
            shares = _share.Shares(
                cpu=_share.cpu_share(cpu_s, busy_s, window_s=duration, cpus=os.cpu_count() or 1),
                ram=_share.ram_share(_peak_rss_gb() * 1024**3, _counters.read_memory_used_bytes()),
            )
            energy = _share.apportion(energy, shares)
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


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _with_profile(m: Measurement, samples: object, window_start: float) -> Measurement:
    """``m`` with its energy profile from the sidecar's cumulative samples (none: unchanged)."""
    from dataclasses import replace

    from carbonpipe.measure.profile import from_samples

    if not isinstance(samples, list) or not samples:
        return m
    try:
        profile = from_samples(samples, window_start, m.duration_s, m.total_energy_kwh)
    except (TypeError, ValueError):
        return m
    return replace(m, energy_profile=profile)


def _empty_measurement(meter: Meter, errors: tuple[str, ...]) -> Measurement:
    return Measurement.nothing(
        datetime.now(timezone.utc),
        tracking_mode=meter.tracking_mode,
        share=meter._share,
        errors=errors,
        cpu_method="estimate",
    )
