"""The measuring sidecar: ``python -m carbonpipe.measure.sidecar``, spawned by :meth:`carbonpipe.measure.meter.Meter.start`.

It runs CodeCarbon outside the step's process, so neither CodeCarbon's cold start nor its sampling
threads ever hold the step's GIL. Protocol, one JSON document per line:

1. When spawned (``Meter.prepare()``, or ``start()``), the step writes its configuration on our
   stdin: its pid, the tracking mode, how CPU is shared, the cache folder. We import CodeCarbon
   and apply the saved hardware profile (or detect and save one) meanwhile.
2. At ``start()`` it writes ``t0``, the cheap counters it read as the step started: monotonic and
   wall clocks, its own CPU time, the cgroup's CPU time, ``/proc/stat``, RAPL ``energy_uj``. We
   start the tracker *back-dated to t0*: its clocks and every baseline it keeps are set to the
   step's snapshot, so the window is the whole step however late we got ready.
3. The step writes ``stop``. Whenever stdin closes instead (the step died), we exit silently.
4. We take a last sample and write the raw result; :mod:`carbonpipe.measure.meter` turns it into a
   :class:`~carbonpipe.measure.meter.Measurement`. On any failure we write ``{"ok": false, ...}`` at once
   and exit, and the step falls back to its own estimate.

Everything CodeCarbon-private that we touch is named in one place per concern (``_backdate_*``,
``_attribute_to_step``, ``_finish``) so a CodeCarbon upgrade breaks loudly, not silently.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
import warnings
from typing import IO, TYPE_CHECKING, Any

from carbonpipe.measure.counters import read_cgroup_cpu_s

if TYPE_CHECKING:
    pass
from carbonpipe.measure.sidecar_imports import _skip_unused_imports

_MAX_ERRORS = 8
_STDERR_TAIL_CHARS = 4000
_SCAN_REUSE_S = 0.05


class _Tail(io.TextIOBase):
    """A bounded stand-in for stderr: keeps the last few thousand characters for the report."""

    def __init__(self) -> None:
        self._chunks: collections.deque[str] = collections.deque()
        self._size = 0

    def write(self, s: str) -> int:
        self._chunks.append(s)
        self._size += len(s)
        while self._size > _STDERR_TAIL_CHARS and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())
        return len(s)

    def writable(self) -> bool:
        return True

    def getvalue(self) -> str:
        return "".join(self._chunks)[-_STDERR_TAIL_CHARS:]


class _ErrorLog(logging.Handler):
    """Collects CodeCarbon's error-level log lines, so they reach the measurement's errors."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"codecarbon: {record.getMessage()}"
        if message not in self.messages and len(self.messages) < _MAX_ERRORS:
            self.messages.append(message)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class _Step:
    """The step's share of the machine as CodeCarbon should see it: its process tree, or its cgroup.

    This sidecar is the step's child, so it (and whatever it runs, such as ``lscpu``) is always
    left out. CPU time is counted as own + reaped children's time for every live process, so a
    child that exits between two samples keeps its CPU time (it moves into its parent's count).
    The tree is walked through ``/proc/<pid>/task/<tid>/children``, which costs the same on a
    node with thousands of processes as in a pod; psutil's full ``/proc`` scan is the fallback.
    """

    def __init__(self, config: dict[str, Any], t0: dict[str, Any]) -> None:
        import psutil

        self._psutil = psutil
        self.pid = int(config["ppid"])
        self.root = psutil.Process(self.pid)
        self.share = config["share"]
        self.cgroup_file = config.get("cgroup_file")
        self._me = os.getpid()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._walkable = os.path.exists(f"/proc/{self.pid}/task/{self.pid}/children")
        self._scanned: list[int] = []
        self._scanned_at = -math.inf
        self._t0_boot = None if t0.get("boot") is None else float(t0["boot"])
        if self.share == "cgroup" and t0.get("cgroup_cpu_s") is None:
            self.share = "process"  # readable when the step resolved it, not at its start
        if self.share == "cgroup":
            self.baseline_cpu_s = float(t0["cgroup_cpu_s"])
        else:
            # Processes that already ran before the step started count from now, not from birth.
            older = sum(self._cpu_of(p) for p in self.descendants() if self._born_before_t0(p))
            self.baseline_cpu_s = float(t0["proc_cpu_s"]) + older
        self.last_cpu_s = self.baseline_cpu_s

    def _stat(self, pid: int) -> list[bytes] | None:
        """Return /proc/<pid>/stat's fields after the command name (state first), or None."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rpartition(b")")[2].split()
        except OSError:
            return None

    def _born_before_t0(self, pid: int) -> bool:
        # psutil's create_time() rests on a boot time rounded to the second: too coarse to tell a
        # child spawned just after the step started. /proc's start time is in clock ticks since
        # boot, the clock the step read at t0.
        fields = self._stat(pid)
        if self._t0_boot is None or fields is None or len(fields) < 20:
            return False
        return int(fields[19]) / self._tick < self._t0_boot - 0.02

    def _cpu_of(self, pid: int) -> float:
        fields = self._stat(pid)
        if fields is not None and len(fields) >= 15:
            # utime, stime, cutime, cstime
            return sum(int(v) for v in fields[11:15]) / self._tick
        try:
            t = self._psutil.Process(pid).cpu_times()
        except Exception:  # the process is gone or hidden: it no longer counts
            return 0.0
        return float(t.user + t.system + t.children_user + t.children_system)

    def _rss_of(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            pass
        try:
            return int(self._psutil.Process(pid).memory_info().rss)
        except Exception:
            return 0

    def descendants(self) -> list[int]:
        """Return the pids of the step's live descendants, without this sidecar's subtree."""
        # One walk serves both the CPU and the RAM reading of the same measurement.
        now = time.monotonic()
        if now - self._scanned_at >= _SCAN_REUSE_S:
            self._scanned = self._walk() if self._walkable else self._scan()
            self._scanned_at = now
        return self._scanned

    def _walk(self) -> list[int]:
        found: list[int] = []
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue  # it exited meanwhile
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        kids = [int(k) for k in f.read().split()]
                except (OSError, ValueError):
                    continue
                for kid in kids:
                    if kid != self._me:
                        found.append(kid)
                        frontier.append(kid)
        return found

    def _scan(self) -> list[int]:
        try:
            procs = self.root.children(recursive=True)
        except self._psutil.Error:
            return []
        kept = []
        for proc in procs:
            try:
                if proc.pid == self._me or proc.ppid() == self._me:
                    continue
            except self._psutil.Error:
                continue
            kept.append(proc.pid)
        return kept

    def cpu_s(self) -> float:
        """Return the step's cumulative CPU seconds, on the same scale as the t0 baseline."""
        total: float | None = None
        if self.share == "cgroup" and self.cgroup_file:
            usage = read_cgroup_cpu_s(self.cgroup_file)
            if usage is not None:
                # This sidecar lives in the same cgroup: its own cost is not the step's.
                total = usage - _own_cpu_s()
        else:
            total = self._cpu_of(self.pid) + sum(self._cpu_of(p) for p in self.descendants())
        if total is None:
            total = self.last_cpu_s
        self.last_cpu_s = total
        return total

    def rss_of_descendants(self) -> list[int]:
        return [self._rss_of(pid) for pid in self.descendants()]


class _Session:
    """One measurement: get CodeCarbon ready, start it back-dated to the step's t0, report at stop."""

    def __init__(self, config: dict[str, Any], tail: _Tail) -> None:
        self.config = config
        self.tail = tail
        self.mode: str = config["tracking_mode"]
        self.t0: dict[str, Any] = {}
        self.errors: list[str] = []
        self.profile = "none"
        self.tracker: Any = None
        self.step: _Step | None = None
        self.covered: dict[str, bool] = {"cpu": True, "gpu": True, "ram": True}
        self.cc_started_perf = 0.0
        self.ready_cpu_s = 0.0
        self.window_start_perf = 0.0
        self.log = _ErrorLog()
        self.measure_lock = threading.RLock()

    # -- start ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Import CodeCarbon and set up its hardware (from the profile when possible)."""
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        from carbonpipe.measure import hwprofile

        self.tracker = self._tracker_with_hardware(hwprofile)
        # CodeCarbon resets its logger's level on import; errors are all we report.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        logging.getLogger("codecarbon").addHandler(self.log)

    def begin(self, t0: dict[str, Any]) -> None:
        """Start CodeCarbon with its window back-dated to the step's ``t0`` snapshot."""
        tracker = self.tracker
        self.t0 = t0
        self.window_start_perf = float(t0["perf"])
        if self.mode == "process":
            self.step = _Step(self.config, t0)
            self._attribute_to_step(tracker, self.step)
        self.ready_cpu_s = time.process_time()
        try:
            self._start_backdated(tracker)
        except AttributeError as exc:
            # CodeCarbon's internals moved: start it the public way and extrapolate the gap.
            self.errors.append(
                f"could not back-date CodeCarbon's start ({_describe(exc)}); "
                "the time before it started is extrapolated at the measured mean power"
            )
            self.covered = dict.fromkeys(self.covered, False)
            tracker._start_time = None  # let the public start() run even if ours got that far
            self.cc_started_perf = time.perf_counter()
            tracker.start()

    def _tracker_with_hardware(self, hwprofile: Any) -> Any:
        mode, secs = self.mode, float(self.config["measure_power_secs"])
        cache_dir = self.config.get("cache_dir")
        tracker = hwprofile.new_tracker(mode, secs)
        plan = None
        path = key = None
        try:
            key = hwprofile.tracker_key(tracker)
            path = hwprofile.profile_path(cache_dir, key)
            plan = hwprofile.load_profile(path, key)
            if plan is not None:
                hwprofile.inject_plan(tracker, plan)
        except Exception as exc:
            self.errors.append(
                f"hardware profile cache unusable, ran full detection: {_describe(exc)}"
            )
            plan = None
        if plan is not None:
            try:
                tracker._ensure_hardware_ready()
                self.profile = "cache"
                return tracker
            except Exception as exc:
                self.errors.append(
                    f"cached hardware profile {path} did not apply, ran full detection: {_describe(exc)}"
                )
                hwprofile.forget_plan(tracker)
                tracker = hwprofile.new_tracker(mode, secs)
        cc_key = hwprofile.codecarbon_cache_key(tracker)
        tracker._ensure_hardware_ready()
        self.profile = "detected"
        if path is not None and key is not None:
            try:
                detected = hwprofile.captured_plan(cc_key)
                if detected is None:
                    raise RuntimeError("CodeCarbon cached no hardware plan")
                hwprofile.save_profile(path, key, detected)
            except Exception as exc:
                self.errors.append(
                    f"could not save the hardware profile to {path}: {_describe(exc)}"
                )
        return tracker

    def _attribute_to_step(self, tracker: Any, step: _Step) -> None:
        """Point CodeCarbon's process-mode CPU and RAM at the step's tree instead of this sidecar."""
        for hw in tracker._hardware:
            kind = type(hw).__name__
            if kind == "CPU":
                hw._pid = step.pid
                hw._process = step.root
                # One synthetic entry: CodeCarbon diffs per pid, and a pid that appears between two
                # samples would otherwise lose its CPU time from before it was first seen.
                hw._get_process_cpu_times = lambda: {step.pid: step.cpu_s()}
            elif kind == "RAM":
                hw._pid = step.pid
                hw._get_children_memories = step.rss_of_descendants

    def _start_backdated(self, tracker: Any) -> None:
        """CodeCarbon's ``start()``, with every clock and baseline moved back to the step's t0."""
        ws = self.window_start_perf
        self.cc_started_perf = time.perf_counter()
        tracker._last_measured_time = tracker._start_time = ws
        tracker._clear_utilization_history()
        for hw in tracker._hardware:
            hw.start()
        for hw in tracker._hardware:
            kind = type(hw).__name__
            if kind == "CPU":
                self.covered["cpu"] = self._backdate_cpu(hw)
            elif kind == "GPU":
                self.covered["gpu"] = self._backdate_gpu(hw)
            elif kind == "RAM":
                pass  # a power model times the tracker's (back-dated) interval
            else:
                # Apple and Raspberry Pi sensors: nothing to back-date, extrapolate the gap.
                part = {"GPU": "gpu", "RAM": "ram"}.get(getattr(hw, "chip_part", ""), "cpu")
                self.covered[part] = False
        self._make_intervals_contiguous(tracker)
        tracker._scheduler.start()
        tracker._scheduler_monitor_power.start()
        tracker._measure_power_and_energy()

    def _make_intervals_contiguous(self, tracker: Any) -> None:
        """Stop CodeCarbon 3.3 dropping the time a measurement takes from every interval.

        It stamps ``_last_measured_time`` after measuring, so the next interval starts late by
        the measurement's own duration (milliseconds, more when the machine is busy). Stamping
        the time measuring began keeps the intervals back to back over the whole window.
        """
        measure = tracker._measure_power_and_energy

        def contiguous() -> None:
            with self.measure_lock:
                began = time.perf_counter()
                measure()
                tracker._last_measured_time = began

        tracker._measure_power_and_energy = contiguous
        tracker._scheduler.function = contiguous

    def _backdate_cpu(self, cpu: Any) -> bool:
        t0 = self.t0
        with cpu._power_history_lock:
            cpu._last_sample_time = self.window_start_perf
            if cpu._mode == "cpu_load":
                if self.step is not None:
                    cpu._last_measurement_time = float(t0["wall"])
                    cpu._last_cpu_times = {self.step.pid: self.step.baseline_cpu_s}
                    return True
                return self._backdate_load_meter(cpu._cpu_load_meter, t0.get("stat"))
            if cpu._mode == "constant":
                return True
            if cpu._mode == "intel_rapl":
                return self._backdate_rapl(cpu._intel_interface, t0.get("rapl_uj") or {})
        return False

    @staticmethod
    def _backdate_load_meter(meter: Any, stat: list[int] | None) -> bool:
        if not stat:
            return False
        import psutil

        fields = type(psutil.cpu_times())
        tick = os.sysconf("SC_CLK_TCK")
        if len(stat) < len(fields._fields):
            return False
        meter._last_times = fields(*(v / tick for v in stat[: len(fields._fields)]))
        return True

    @staticmethod
    def _backdate_rapl(interface: Any, rapl_uj: dict[str, int]) -> bool:
        from codecarbon.core.units import Energy

        baselines = {os.path.realpath(path): value for path, value in rapl_uj.items()}
        complete = True
        for rapl_file in interface._rapl_files:
            value = baselines.get(os.path.realpath(rapl_file.path))
            if value is None:
                complete = False
            else:
                rapl_file.last_energy = Energy.from_ujoules(value)
        return complete

    def _backdate_gpu(self, gpu: Any) -> bool:
        """Move each GPU's energy-counter baseline back by its current power times the gap."""
        gap_s = self.cc_started_perf - self.window_start_perf
        for device in gpu.devices.devices:
            last = device.last_energy
            if last is None or getattr(device, "_use_power_fallback", False):
                continue  # no counter: CodeCarbon integrates power over the back-dated interval
            watts = device._read_power_watts()
            if watts is None:
                return False
            device.last_energy = type(last)(kWh=max(last.kWh - watts * gap_s / 3.6e6, 0.0))
        return True

    # -- stop -------------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Take the last sample and return the raw figures for the step to normalise."""
        tracker = self.tracker
        try:
            energies, measured_until = self._finish(tracker)
        except AttributeError as exc:
            self.errors.append(f"stopped CodeCarbon the public way: {_describe(exc)}")
            tracker.stop()
            data = tracker.final_emissions_data
            energies = {"cpu": data.cpu_energy, "gpu": data.gpu_energy, "ram": data.ram_energy}
            measured_until = time.perf_counter()
        hardware = tracker.get_detected_hardware()
        cpu_method, gpu_method, tdp_w = self._methods(tracker)
        tree_cpu_s = None
        if self.step is not None:
            tree_cpu_s = self.step.last_cpu_s - self.step.baseline_cpu_s
        return {
            "ok": True,
            "codecarbon_version": _codecarbon_version(),
            "cpu_model": hardware.get("cpu_model") or None,
            "gpu_model": hardware.get("gpu_model") or None,
            "cpu_method": cpu_method,
            "gpu_method": gpu_method,
            "cpu_tdp_w": tdp_w,
            "window_start_perf": self.window_start_perf,
            "cc_started_perf": self.cc_started_perf,
            "measured_until_perf": measured_until,
            "components": {
                part: {
                    "energy_kwh": float(energies[part]),
                    "covered": self.covered[part],
                    # Process-mode cpu_load energy is CPU time x TDP share, not a rate x time.
                    "per_time": not (
                        part == "cpu" and self.mode == "process" and cpu_method == "cpu_load"
                    ),
                }
                for part in ("cpu", "gpu", "ram")
            },
            "tree_cpu_s": tree_cpu_s,
            "share": self.step.share if self.step is not None else "machine",
            "profile": self.profile,
            "sidecar_cpu_s": _own_cpu_s(),
            # Precise (not in clock ticks), from CodeCarbon's start to now: the cost of sampling.
            "sampling_cpu_s": time.process_time() - self.ready_cpu_s,
            "sampling_s": time.perf_counter() - self.cc_started_perf,
            "errors": self.errors + self.log.messages,
        }

    def _finish(self, tracker: Any) -> tuple[dict[str, float], float]:
        """CodeCarbon's ``stop()`` without its emissions part, which would import pandas (~0.4 s)."""
        tracker._scheduler.stop()
        tracker._scheduler_monitor_power.stop()
        # Held across the last sample and the read, so a scheduled sample that was already
        # running finishes first and none slips in between.
        with self.measure_lock:
            tracker._measure_power_and_energy()
            energies = {
                "cpu": tracker._total_cpu_energy.kWh,
                "gpu": tracker._total_gpu_energy.kWh,
                "ram": tracker._total_ram_energy.kWh,
            }
            return energies, float(tracker._last_measured_time)

    @staticmethod
    def _methods(tracker: Any) -> tuple[str, str | None, float | None]:
        cpu_method, gpu_method, tdp_w = "tdp", None, None
        for hw in getattr(tracker, "_hardware", ()):
            kind = type(hw).__name__
            if kind == "CPU":
                mode = getattr(hw, "_mode", "")
                cpu_method = {"cpu_load": "cpu_load", "constant": "tdp"}.get(mode, "rapl")
                tdp = getattr(hw, "_tdp", None)
                tdp_w = float(tdp) if isinstance(tdp, (int, float)) else None
            elif kind in ("AppleSiliconChip", "Raspberry") and getattr(hw, "chip_part", "") in (
                "CPU",
                "Processor",
            ):
                cpu_method = "rapl"  # a hardware power sensor, the nearest of the record's methods
            elif kind == "GPU":
                names = {type(d).__name__ for d in getattr(hw.devices, "devices", ())}
                gpu_method = "nvml" if "NvidiaGPUDevice" in names else "amdsmi"
        return cpu_method, gpu_method, tdp_w


def _codecarbon_version() -> str | None:
    import codecarbon

    version = getattr(codecarbon, "__version__", None)
    return str(version) if version else None


def _write(protocol: IO[str], document: dict[str, Any]) -> None:
    protocol.write(json.dumps(document) + "\n")
    protocol.flush()


def _failure(errors: list[str], exc: BaseException, tail: _Tail) -> dict[str, Any]:
    stderr = tail.getvalue().strip()
    return {
        "ok": False,
        "errors": [*errors, f"CodeCarbon failed in the sidecar: {_describe(exc)}"],
        "stderr": stderr[-1000:],
        "sidecar_cpu_s": _own_cpu_s(),
    }


def _take_stdout() -> IO[str]:
    """Keep stdout for the answer alone: anything else printing there would corrupt it."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return protocol


def main() -> int:
    """Run one measurement session for the step that spawned us (see the protocol above)."""
    # Whatever CodeCarbon or its dependencies warn about is not the step's business, and an
    # inherited PYTHONWARNINGS=error must not turn a deprecation notice into a failed measurement.
    warnings.simplefilter("ignore")
    _skip_unused_imports()
    # The step comes first: under CPU contention the measurement waits, not the workload. Its
    # energy figures do not suffer, since intervals are integrated from cumulative counters.
    with contextlib.suppress(OSError):
        os.nice(10)
    protocol = _take_stdout()
    tail = _Tail()
    sys.stdout = sys.stderr = tail
    line = sys.stdin.readline()
    if not line:
        return 0
    session: _Session | None = None
    try:
        session = _Session(json.loads(line), tail)
        session.prepare()
        line = sys.stdin.readline()
        if not line:
            return 0  # the step never started (or died): nobody is listening
        session.begin(json.loads(line)["t0"])
    except Exception as exc:
        _write(protocol, _failure(session.errors if session else [], exc, tail))
        return 1
    if not sys.stdin.readline():
        return 0  # the step closed the pipe without asking: it died, nobody is listening
    try:
        result = session.finish()
    except Exception as exc:
        result = _failure(session.errors, exc, tail)
    _write(protocol, result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    code = main()
    # Skip interpreter teardown (CodeCarbon's threads, module finalisers): the answer is out.
    os._exit(code)
