"""The meter behind the middleware: one long-lived CodeCarbon tracker cut into segments.

:class:`EnergySampler` is the interface the ledger needs; :class:`CodeCarbonSampler` measures
the machine (or the process) in segments cut whenever the set of requests in flight changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("carbonpipe.trace")


# -- server: energy segments ------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Energy the machine used between two cuts of an :class:`EnergySampler`, per device."""

    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    duration_s: float

    @property
    def energy_kwh(self) -> float:
        """Return CPU + GPU + RAM energy in kWh."""
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


class EnergySampler(Protocol):
    """A meter measured in segments: ``start()`` opens one, ``stop()`` closes it and says its energy.

    Calls come from one thread, alternate (start, stop, start, ...), and may block; the first
    ``start()`` may take seconds (hardware detection). ``measured`` says whether its figures
    are measurements (``True``) or estimates.
    """

    measured: bool

    def start(self) -> None:
        """Open a segment now."""

    def stop(self) -> Segment:
        """Close the open segment now and return its energy."""

    def close(self) -> None:
        """Release the meter (close an open segment, stop threads)."""


class CodeCarbonSampler:
    """Segments measured by one long-lived CodeCarbon ``OfflineEmissionsTracker``, as tasks.

    Each segment is one CodeCarbon task (``start_task``/``stop_task``): the scheduler stays
    paused, CodeCarbon's 1 s power monitor runs only while a segment is open, and its own
    intensity is never used (forced to 0; the middleware prices energy itself). The hardware
    profile carbonpipe saves for the step meter is reused, so a warm machine starts in
    milliseconds. Between two segments CodeCarbon measures nothing for about a millisecond.
    """

    measured = True

    def __init__(self, *, tracking_mode: str = "machine", measure_power_secs: float = 1.0) -> None:
        if tracking_mode not in ("machine", "process"):
            raise ValueError(f"tracking_mode must be 'machine' or 'process', got {tracking_mode!r}")
        if (
            isinstance(measure_power_secs, bool)
            or not isinstance(measure_power_secs, (int, float))
            or not 0 < measure_power_secs < math.inf
        ):
            raise ValueError(
                f"measure_power_secs must be a positive number of seconds, got {measure_power_secs!r}"
            )
        self.tracking_mode = tracking_mode
        self._measure_power_secs = float(measure_power_secs)
        self._tracker: Any = None
        self._task: str | None = None
        self._count = 0

    def _ensure_tracker(self) -> Any:
        if self._tracker is None:
            self._tracker = _new_codecarbon_tracker(self.tracking_mode, self._measure_power_secs)
        return self._tracker

    def start(self) -> None:
        """Open a segment: start a CodeCarbon task."""
        tracker = self._ensure_tracker()
        if self._task is not None:
            raise RuntimeError("a segment is already open")
        self._count += 1
        name = f"carbonpipe-segment-{self._count}"
        try:
            tracker.start_task(name)
            # start_task logs and returns instead of raising when it cannot start the task.
            if getattr(tracker, "_active_task", name) != name:
                raise RuntimeError("CodeCarbon did not start the measurement task (see its log)")
        except Exception:
            # A half-started tracker refuses every later task: the next start builds a new one.
            self._tracker = None
            raise
        self._task = name

    def stop(self) -> Segment:
        """Close the open segment: stop the task and return its energy."""
        if self._task is None or self._tracker is None:
            raise RuntimeError("no segment is open")
        name, self._task = self._task, None
        data = self._tracker.stop_task(name)
        # CodeCarbon keeps every finished task forever; a server cuts thousands an hour.
        tasks = getattr(self._tracker, "_tasks", None)
        if isinstance(tasks, dict):
            tasks.pop(name, None)
        if data is None:
            raise RuntimeError("CodeCarbon returned no data for the measurement task")
        return Segment(
            cpu_energy_kwh=float(data.cpu_energy),
            gpu_energy_kwh=float(data.gpu_energy),
            ram_energy_kwh=float(data.ram_energy),
            duration_s=float(data.duration),
        )

    def close(self) -> None:
        """Stop an open task; the tracker itself holds no other resource."""
        if self._task is not None:
            try:
                self.stop()
            except Exception as exc:
                log.debug("carbonpipe: closing the CodeCarbon sampler: %s", exc)


def _new_codecarbon_tracker(tracking_mode: str, measure_power_secs: float) -> Any:
    """Build the offline tracker, reusing (or saving) the machine's hardware profile."""
    from carbonpipe.measure import hwprofile

    tracker = hwprofile.new_tracker(tracking_mode, measure_power_secs)
    path = None
    try:
        key = hwprofile.tracker_key(tracker)
        path = hwprofile.profile_path(None, key)
        plan = hwprofile.load_profile(path, key)
        if plan is not None:
            hwprofile.inject_plan(tracker, plan)
            return tracker
    except Exception as exc:
        log.debug("carbonpipe: hardware profile unusable, CodeCarbon detects: %s", exc)
        return tracker
    try:
        tracker._ensure_hardware_ready()
        plan = hwprofile.captured_plan(tracker)
        if plan is not None and path is not None:
            hwprofile.save_profile(path, hwprofile.tracker_key(tracker), plan)
    except Exception as exc:
        log.debug("carbonpipe: could not save the hardware profile: %s", exc)
    return tracker
