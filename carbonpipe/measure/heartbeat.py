"""The sidecar's periodic work in one thread, and the heartbeat it leaves for a step that dies.

CodeCarbon 3.3 runs two ``threading.Timer`` schedulers: a fresh thread every second to sample
power and utilisation, and another every ``measure_power_secs`` to fold the samples into energy.
In an idle step the sidecar's CPU is almost all wake-ups, and a thread created per wake-up costs
more than the sample itself. :class:`Sampler` does the same work from one thread that wakes only
when a sample is needed: every second only where CodeCarbon's figure depends on it (machine-mode
CPU load, whose power model is cubic in the load; GPUs, whose devices without an energy counter
integrate power samples) or in process mode (the step's shares of the machine, whose memory
moves), otherwise every ``measure_power_secs``. It skips the utilisation
history CodeCarbon keeps for its own CSV output, which carbonpipe never reads.

After each measurement the sampler rewrites the heartbeat file named in the sidecar's
configuration (temp file + rename, so a reader sees a whole document): the energy measured so
far over the step's window, as :meth:`carbonpipe.measure.meter.Meter.stop` would bring it onto
that window, and until when. When the step's process dies without stopping, the sidecar writes a
last heartbeat (after a last sample where the machine or the cgroup is measured: the step's own
process tree is gone by then) and exits. :func:`read_heartbeat` and :func:`heartbeat_measurement`
turn the file back into a :class:`~carbonpipe.measure.base.Measurement`: the energy of a step
killed with ``kill -9`` up to its last heartbeat (see :mod:`carbonpipe.lost_steps`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from carbonpipe.measure.base import _KWH_PER_J, METHODS, Measurement
from carbonpipe.measure.profile import MAX_POINTS, from_samples
from carbonpipe.measure.resources import checked_resources
from carbonpipe.measure.share import apportion

HEARTBEAT_SCHEMA = "carbonpipe.heartbeat/1"
# CodeCarbon's own power-sampling period, kept where its figures depend on it.
POWER_SAMPLE_S = 1.0
_STOP_JOIN_S = 2.0


def needs_power_samples(tracker: Any, tracking_mode: str) -> bool:
    """Whether CodeCarbon's energy depends on power samples taken between two measurements."""
    for hw in getattr(tracker, "_hardware", ()):
        kind = type(hw).__name__
        if kind == "GPU":
            return True  # a device may fall back to integrating power at any time
        if kind == "CPU" and _machine_load_cpu(hw, tracking_mode):
            return True
    return False


def _machine_load_cpu(hw: Any, tracking_mode: str) -> bool:
    # Process mode measures the machine too (the sidecar switches CodeCarbon's CPU to it).
    mode = getattr(hw, "_tracking_mode", tracking_mode)
    return mode == "machine" and getattr(hw, "_mode", "") == "cpu_load"


class Sampler:
    """CodeCarbon's periodic sampling and measuring, and the heartbeat, from one thread.

    Args:
        session: The sidecar's ``_Session`` once CodeCarbon has started (its ``tracker``,
            ``measure_lock``, ``config`` and window).
        heartbeat_path: Where to write the heartbeat; ``None`` writes none.
    """

    def __init__(self, session: Any, heartbeat_path: str | None) -> None:
        self._session = session
        self._measure_every_s = float(session.config["measure_power_secs"])
        self._sample = needs_power_samples(session.tracker, session.mode)
        # Process mode samples the step's shares of the machine (its memory moves) every second.
        self._shares = getattr(session, "shares", None) is not None
        self._path = heartbeat_path
        # The spool folder whose key seals each heartbeat (None: written unsealed).
        self._seal_root = session.config.get("heartbeat_seal_root")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._static: dict[str, Any] | None = None
        self._failed = False
        self.beats = 0

    def start(self) -> None:
        """Write the first heartbeat (CodeCarbon has just measured) and start the thread."""
        self.beat()
        self._thread = threading.Thread(target=self._run, name="carbonpipe-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a sample or measurement under way finishes first."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_STOP_JOIN_S)

    def _run(self) -> None:
        every_second = self._sample or self._shares
        period = (
            min(POWER_SAMPLE_S, self._measure_every_s) if every_second else self._measure_every_s
        )
        next_measure = time.monotonic() + self._measure_every_s
        while not self._stop.wait(period):
            try:
                if self._sample:
                    self._sample_power()
                if self._shares:
                    with self._session.measure_lock:
                        self._session.sample_shares()
                if time.monotonic() >= next_measure - period / 2:
                    next_measure += self._measure_every_s
                    with self._session.measure_lock:
                        self._session.tracker._measure_power_and_energy()
                    self.beat()
            except Exception as exc:  # the next tick tries again; the step's answer says why
                self._note(f"periodic measurement failed: {type(exc).__name__}: {exc}")

    def _sample_power(self) -> None:
        mode = self._session.mode
        for hw in self._session.tracker._hardware:
            kind = type(hw).__name__
            if kind == "GPU" or (kind == "CPU" and _machine_load_cpu(hw, mode)):
                hw.monitor_power()

    def beat(self, *, owner_gone: bool = False) -> None:
        """Rewrite the heartbeat with what is measured so far; never raises."""
        if self._path is None:
            return
        try:
            document = self.snapshot(owner_gone=owner_gone)
            write_heartbeat(self._path, document, seal_root=self._seal_root)
            self.beats += 1
        except FileNotFoundError:
            pass  # no open-step folder: the step's entry was not written, nobody reads this
        except Exception as exc:
            self._note(f"heartbeat not written to {self._path}: {type(exc).__name__}: {exc}")

    def _note(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            self._session.errors.append(message)

    def snapshot(self, *, owner_gone: bool = False) -> dict[str, Any]:
        """The energy measured so far over the step's window [t0, last measurement]."""
        session = self._session
        tracker = session.tracker
        with session.measure_lock:
            until = float(tracker._last_measured_time)
            measured = {
                "cpu": float(tracker._total_cpu_energy.kWh),
                "gpu": float(tracker._total_gpu_energy.kWh),
                "ram": float(tracker._total_ram_energy.kWh),
            }
            samples = list(getattr(session, "samples", ()))
        duration = max(until - session.window_start_perf, 0.0)
        energy: dict[str, float] = {}
        for part, value in measured.items():
            if not session.covered[part]:  # measured from CodeCarbon's start: extrapolated back
                span = until - session.cc_started_perf
                value = value * duration / span if span > 0 else 0.0
            energy[part] = value if math.isfinite(value) and value > 0 else 0.0
        static = self._static_fields()
        errors: list[str] = []
        if session.mode == "process":
            shares = getattr(session, "shares", None)
            if shares is None:
                errors.append("the step's share of the machine is unknown: the machine was charged")
            else:
                energy = apportion(energy, shares.shares())
        started = float(session.t0["wall"])
        return {
            "schema": HEARTBEAT_SCHEMA,
            "started_at_s": started,
            "until_s": started + duration,
            "duration_s": duration,
            "energy_kwh": energy,
            "share": session.step.share if session.step is not None else "machine",
            "owner_gone": owner_gone,
            "beat": self.beats + 1,
            "errors": errors,
            # (seconds from t0, cumulative kWh) after each measurement: the energy profile.
            "samples": _offsets(samples, session.window_start_perf),
            **static,
        }

    def _static_fields(self) -> dict[str, Any]:
        if self._static is None:
            session = self._session
            cpu_method, gpu_method, _ = session._methods(session.tracker)
            hardware = session.tracker.get_detected_hardware()
            import codecarbon

            version = getattr(codecarbon, "__version__", None)
            method = "nvml" if gpu_method == "nvml" else cpu_method
            self._static = {
                "method": method if method in METHODS else "tdp",
                "cpu_method": cpu_method,
                "tracking_mode": session.mode,
                "codecarbon_version": str(version) if version else None,
                "cpu_model": hardware.get("cpu_model") or None,
                "gpu_model": hardware.get("gpu_model") or None,
                # What the step could use: a lost step's embodied share is priced from it.
                "resources": getattr(session, "resources", None),
            }
        return self._static


def write_heartbeat(path: str, document: dict[str, Any], *, seal_root: str | None = None) -> None:
    """Replace ``path`` with ``document`` (temp file + rename: readers see all of it or none),
    sealed with the spool's key when ``seal_root`` (the spool folder) is given."""
    if seal_root is not None:
        from pathlib import Path

        from carbonpipe._seal import seal

        data = seal(Path(seal_root), document)
    else:
        data = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_heartbeat(
    path: str | os.PathLike[str],
    *,
    seal_root: str | os.PathLike[str] | None = None,
    problems: list[str] | None = None,
) -> dict[str, Any] | None:
    """Return the heartbeat at ``path``, or ``None`` if there is none or it is unusable.

    With ``seal_root`` (the spool folder) its seal must verify with the spool's key; why one
    does not is appended to ``problems``."""
    try:
        with open(path, "rb") as fh:
            document = json.loads(fh.read(1 << 20))  # a heartbeat is a few kB: bounded read
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("schema") != HEARTBEAT_SCHEMA:
        return None
    if seal_root is not None:
        from pathlib import Path

        from carbonpipe._seal import seal_problem

        problem = seal_problem(Path(seal_root), document)
        if problem is not None:
            if problems is not None:
                problems.append(f"heartbeat {os.fspath(path)} ignored: {problem}")
            return None
    energy = document.get("energy_kwh")
    numbers = [document.get("started_at_s"), document.get("duration_s")]
    if not isinstance(energy, dict):
        return None
    numbers += [energy.get(part) for part in ("cpu", "gpu", "ram")]
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in numbers
    ):
        return None
    return document


def heartbeat_measurement(document: dict[str, Any], *, errors: tuple[str, ...] = ()) -> Measurement:
    """The measurement a heartbeat holds: its energy over [t0, its last measurement]."""
    started = datetime.fromtimestamp(float(document["started_at_s"]), tz=timezone.utc)
    duration = float(document["duration_s"])
    energy = {part: float(document["energy_kwh"][part]) for part in ("cpu", "gpu", "ram")}

    def power(part: str) -> float:
        return energy[part] / _KWH_PER_J / duration if duration > 0 else 0.0

    method = document.get("method")
    text = [str(e) for e in document.get("errors") or () if isinstance(e, str)]
    profile: tuple[tuple[float, float], ...] = ()
    samples = document.get("samples")
    if isinstance(samples, list) and samples:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            profile = from_samples(samples, 0.0, duration, sum(energy.values()))
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
        method=method if method in METHODS else "tdp",
        tracking_mode=str(document.get("tracking_mode") or "machine"),
        share=str(document.get("share") or "machine"),
        codecarbon_version=_text(document.get("codecarbon_version")),
        cpu_model=_text(document.get("cpu_model")),
        gpu_model=_text(document.get("gpu_model")),
        errors=tuple(dict.fromkeys([*errors, *text])),
        cpu_method=_text(document.get("cpu_method")),
        energy_profile=profile,
        resources=checked_resources(document.get("resources")),
    )


def _offsets(samples: list[tuple[float, float]], window_start: float) -> list[list[float]]:
    """At most :data:`MAX_POINTS` + 1 cumulative samples, their clock made seconds from t0."""
    step = max(1, -(-len(samples) // (MAX_POINTS + 1)))
    kept = samples[::step]
    if samples and kept[-1] is not samples[-1]:
        kept.append(samples[-1])
    return [[clock - window_start, kwh] for clock, kwh in kept]


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, str) and value else None
