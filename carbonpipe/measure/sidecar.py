"""The measuring sidecar: ``python -m carbonpipe.measure.sidecar``, spawned by :meth:`carbonpipe.measure.meter.Meter.start`.

It runs CodeCarbon outside the step's process, so neither CodeCarbon's cold start nor its sampling
threads ever hold the step's GIL. Protocol, one JSON document per line:

1. When spawned (``Meter.prepare()``, or ``start()``), the step writes its configuration on our
   stdin: its pid, the tracking mode, how CPU is shared, the cache folder, the heartbeat file.
   We import CodeCarbon and apply the saved hardware profile (or detect and save one) meanwhile.
2. At ``start()`` it writes ``t0``, the cheap counters it read as the step started: monotonic and
   wall clocks, its own CPU time, the cgroup's CPU time, ``/proc/stat``, RAPL ``energy_uj``. We
   start the tracker *back-dated to t0*: its clocks and every baseline it keeps are set to the
   step's snapshot, so the window is the whole step however late we got ready. From then on
   one thread samples, measures every ``measure_power_secs`` and rewrites the heartbeat
   (:mod:`carbonpipe.measure.heartbeat`).
3. The step writes ``stop``. When it dies instead (stdin closes, or its process is gone while a
   forked child still holds the pipe: :mod:`carbonpipe.measure.inbox`), we write a last
   heartbeat for its lost record and exit without an answer.
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
import os
import sys
import threading
import time
import traceback
import warnings
from typing import IO, Any

from carbonpipe.measure.heartbeat import Sampler
from carbonpipe.measure.host import host_facts
from carbonpipe.measure.inbox import Inbox
from carbonpipe.measure.profile import thin
from carbonpipe.measure.resources import step_resources
from carbonpipe.measure.share import StepShares
from carbonpipe.measure.sidecar_imports import _skip_unused_imports
from carbonpipe.measure.steptree import StepTree, _own_cpu_s

_MAX_ERRORS = 8
_STDERR_TAIL_CHARS = 4000


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
        self.step: StepTree | None = None
        self.shares: StepShares | None = None
        self.covered: dict[str, bool] = {"cpu": True, "gpu": True, "ram": True}
        self.cc_started_perf = 0.0
        self.ready_cpu_s = 0.0
        self.window_start_perf = 0.0
        self.log = _ErrorLog()
        self.measure_lock = threading.RLock()
        self.sampler: Sampler | None = None
        # (perf_counter, cumulative kWh) after each measurement: the step's energy profile.
        self.samples: list[tuple[float, float]] = []
        # The GPUs read, after CUDA_/NVIDIA_VISIBLE_DEVICES (carbonpipe.measure.gpus); None: none.
        self.gpu_devices: list[dict[str, Any]] | None = None
        self.host: dict[str, Any] | None = None  # measure.host.host_facts(), read in prepare()
        self.resources: dict[str, Any] | None = None  # measure.resources.step_resources(), too

    # -- start ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Import CodeCarbon and set up its hardware (from the profile when possible)."""
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        from carbonpipe.measure import hwprofile

        self.tracker = self._tracker_with_hardware(hwprofile)
        self._restrict_gpus(self.tracker)
        # CodeCarbon resets its logger's level on import; errors are all we report.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        logging.getLogger("codecarbon").addHandler(self.log)
        # For the record, read here rather than on the step's stop path (the sidecar shares the
        # step's cgroup, affinity and CUDA_VISIBLE_DEVICES); a lost step's heartbeat has them
        # too. Unread, the step's process reads them itself.
        with contextlib.suppress(Exception):
            self.host = host_facts()
        with contextlib.suppress(Exception):
            self.resources = step_resources(self.mode)

    def _restrict_gpus(self, tracker: Any) -> None:
        """Charge the step only the GPUs it can see (CodeCarbon reads all of the node's)."""
        for hw in getattr(tracker, "_hardware", ()):
            if type(hw).__name__ != "GPU":
                continue
            try:
                from carbonpipe.measure.gpus import restrict_codecarbon

                selection = restrict_codecarbon(hw)
            except Exception as exc:
                self.errors.append(f"every GPU of the node was measured: {_describe(exc)}")
                return
            self.gpu_devices = [dict(d) for d in selection.devices]
            self.errors.extend(selection.notes)

    def begin(self, t0: dict[str, Any]) -> None:
        """Start CodeCarbon with its window back-dated to the step's ``t0`` snapshot."""
        tracker = self.tracker
        self.t0 = t0
        self.window_start_perf = float(t0["perf"])
        if self.mode == "process":
            self.step = StepTree(self.config, t0)
            self.shares = StepShares(
                self.window_start_perf,
                t0.get("stat"),
                os.sysconf("SC_CLK_TCK"),
                os.cpu_count() or 1,
            )
            self._measure_the_machine(tracker)
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
            self._stop_codecarbon_schedulers(tracker)
        # One thread for CodeCarbon's periodic work and the heartbeat (see measure.heartbeat).
        self.sampler = Sampler(self, self.config.get("heartbeat_path"))
        self.sampler.start()

    def abandon(self) -> None:
        """The step died without stopping: leave a last heartbeat for its lost record."""
        sampler = self.sampler
        if sampler is None:
            return
        sampler.stop()
        # The machine and the cgroup are still there to measure; a dead process tree is not.
        if self.mode == "machine" or (self.step is not None and self.step.share == "cgroup"):
            with contextlib.suppress(Exception), self.measure_lock:
                self.tracker._measure_power_and_energy()
                self.sample_shares(rss=False)
        sampler.beat(owner_gone=True)

    @staticmethod
    def _stop_codecarbon_schedulers(tracker: Any) -> None:
        for name in ("_scheduler", "_scheduler_monitor_power"):
            scheduler = getattr(tracker, name, None)
            if scheduler is not None:
                scheduler.stop()

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

    @staticmethod
    def _measure_the_machine(tracker: Any) -> None:
        """Process mode measures the machine as machine mode does; the step is charged a share.

        CodeCarbon's own process mode charges CPU time at TDP / cores and RAM by a power model of
        the process's memory: together more than machine mode charges the whole machine (its
        power is cubic in the load, its RAM model has a floor). The shares are carbonpipe's
        (:mod:`carbonpipe.measure.share`).
        """
        for hw in tracker._hardware:
            if type(hw).__name__ in ("CPU", "RAM"):
                hw._tracking_mode = "machine"

    def sample_shares(self, *, rss: bool = True) -> None:
        """Sample the step's CPU time, memory and the machine's counters for its shares."""
        if self.step is not None and self.shares is not None:
            self.step.sample(self.shares, time.perf_counter(), rss=rss)

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
        tracker._measure_power_and_energy()
        self.sample_shares()

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
                with contextlib.suppress(Exception):
                    self.samples.append((began, self._cumulative_kwh(tracker)))
                    thin(self.samples)

        tracker._measure_power_and_energy = contiguous

    @staticmethod
    def _cumulative_kwh(tracker: Any) -> float:
        return float(
            tracker._total_cpu_energy.kWh
            + tracker._total_gpu_energy.kWh
            + tracker._total_ram_energy.kWh
        )

    def _backdate_cpu(self, cpu: Any) -> bool:
        t0 = self.t0
        with cpu._power_history_lock:
            cpu._last_sample_time = self.window_start_perf
            if cpu._mode == "cpu_load":
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
        tree_cpu_s = shares = None
        if self.shares is not None:
            tree_cpu_s = self.shares.step_cpu_s
            current = self.shares.shares()
            shares = {"cpu": current.cpu, "ram": current.ram}
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
                    # Every part is the machine's, a rate x time (process mode applies shares).
                    "per_time": True,
                }
                for part in ("cpu", "gpu", "ram")
            },
            "tree_cpu_s": tree_cpu_s,
            "samples": [[clock, kwh] for clock, kwh in self.samples],
            "shares": shares,
            "share": self.step.share if self.step is not None else "machine",
            "profile": self.profile,
            "sidecar_cpu_s": _own_cpu_s(),
            # Precise (not in clock ticks), from CodeCarbon's start to now: the cost of sampling.
            "sampling_cpu_s": time.process_time() - self.ready_cpu_s,
            "sampling_s": time.perf_counter() - self.cc_started_perf,
            "errors": self.errors + self.log.messages,
            "gpu_devices": self.gpu_devices,
            "host": self.host,
            "resources": self.resources,
        }

    def _finish(self, tracker: Any) -> tuple[dict[str, float], float]:
        """CodeCarbon's ``stop()`` without its emissions part, which would import pandas (~0.4 s)."""
        if self.sampler is not None:
            self.sampler.stop()
        self._stop_codecarbon_schedulers(tracker)
        # Held across the last sample and the read, so a scheduled sample that was already
        # running finishes first and none slips in between.
        with self.measure_lock:
            tracker._measure_power_and_energy()
            self.sample_shares()
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
    protocol.write(json.dumps(document, allow_nan=False) + "\n")
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
    inbox = Inbox(sys.stdin.fileno())
    line = inbox.readline()
    if not line:
        return 0
    session: _Session | None = None
    try:
        session = _Session(json.loads(line), tail)
        inbox.watch(session.config.get("ppid"))
        session.prepare()
        line = inbox.readline()
        if not line:
            return 0  # the step never started (or died): nobody is listening
        session.begin(json.loads(line)["t0"])
    except Exception as exc:
        _write(protocol, _failure(session.errors if session else [], exc, tail))
        return 1
    if not inbox.readline():
        # The step died without asking (its pipe closed, or its process is gone while a forked
        # child still holds the pipe): leave its energy so far for its lost record, and go.
        with contextlib.suppress(Exception):
            session.abandon()
        return 0
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
