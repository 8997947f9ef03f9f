"""A tracked step while it runs (:func:`current_step`) and what it measured (:class:`CarbonMetrics`).

The running step is found through a context variable, so remote attribution
(:mod:`carbonpipe.trace`) and the Optuna integration reach it without importing the tracker.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from carbonpipe.record import Record, make_record_id

if TYPE_CHECKING:
    from carbonpipe.budgets.lease import LeaseKeeper
    from carbonpipe.budgets.status import BudgetStatus, Reservation
    from carbonpipe.impact import Equivalents
    from carbonpipe.measure.base import Measurement
    from carbonpipe.measure.meter import Meter
    from carbonpipe.stores.open_steps import OpenStep
    from carbonpipe.tracker import CarbonTracker

F = TypeVar("F", bound=Callable[..., Any])

_current_step: contextvars.ContextVar[_Step | None] = contextvars.ContextVar(
    "carbonpipe_current_step", default=None
)


def current_step() -> _Step | None:
    """Return the tracked step running in this context, if any (for remote attribution)."""
    return _current_step.get()


@dataclass(frozen=True)
class CarbonMetrics:
    """What one tracked step cost: energy, emissions and where they were priced."""

    step: str
    status: str
    duration_s: float
    energy_consumed_kwh: float
    emissions_kg_co2: float
    carbon_intensity_g_per_kwh: float
    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    remote_energy_kwh: float
    cpu_power_w: float
    gpu_power_w: float
    ram_power_w: float
    cloud_provider: str | None
    cloud_region: str | None
    country_iso_code: str | None
    record_id: str
    record: Record
    tracking_errors: tuple[str, ...] = ()
    budget_status: BudgetStatus | None = None
    alerts: tuple[Mapping[str, Any], ...] = field(default=())

    @classmethod
    def from_record(
        cls, record: Record, m: Measurement, budget_status: BudgetStatus | None = None
    ) -> CarbonMetrics:
        """The step's figures as its record states them, with the meter's per-device powers."""
        loc = record.location
        return cls(
            step=record.step,
            status=record.status,
            duration_s=m.duration_s,
            energy_consumed_kwh=record.energy_kwh["total"],
            emissions_kg_co2=record.emissions_kg_co2e,
            carbon_intensity_g_per_kwh=record.intensity_g_per_kwh,
            cpu_energy_kwh=m.cpu_energy_kwh,
            gpu_energy_kwh=m.gpu_energy_kwh,
            ram_energy_kwh=m.ram_energy_kwh,
            remote_energy_kwh=record.energy_kwh["remote"],
            cpu_power_w=m.cpu_power_w,
            gpu_power_w=m.gpu_power_w,
            ram_power_w=m.ram_power_w,
            cloud_provider=loc.get("provider"),
            cloud_region=loc.get("region"),
            country_iso_code=loc.get("country_iso"),
            record_id=record.record_id,
            record=record,
            tracking_errors=tuple(record.tracking_errors),
            budget_status=budget_status,
            alerts=tuple(record.alerts),
        )

    @property
    def emissions_kg_co2e(self) -> float:
        """Alias of ``emissions_kg_co2`` with the unit the records use."""
        return self.emissions_kg_co2

    @property
    def emissions_g_co2e(self) -> float:
        """Emissions in grams of CO2e."""
        return self.emissions_kg_co2 * 1000.0

    @property
    def sci_g_per_unit(self) -> float | None:
        """The step's SCI, g CO2e per functional unit (None without declared units)."""
        return self.record.sci_g_per_unit

    @property
    def embodied_kg_co2e(self) -> float | None:
        """The step's share of its hardware's embodied emissions (None where unknown)."""
        return self.record.embodied_kg_co2e

    @property
    def total_kg_co2e(self) -> float | None:
        """Operational + embodied kg CO2e (None where the embodied share is unknown)."""
        return self.record.total_kg_co2e

    @property
    def budget_percent(self) -> float | None:
        """Share of the step's budget used after this step, if a budget was attached."""
        return None if self.budget_status is None else self.budget_status.percent

    @property
    def regression_failed(self) -> bool:
        """Whether a baseline regression alert asks for the step to fail (``regression: fail``)."""
        return any(a.get("action") == "fail" for a in self.alerts)

    def raise_for_regression(self) -> None:
        """Raise :class:`CarbonRegression` if an alert asks for a failure; for KFP and Airflow."""
        if self.regression_failed:
            from carbonpipe.errors import CarbonRegression

            messages = "; ".join(str(a.get("message", a)) for a in self.alerts)
            raise CarbonRegression(messages, alerts=tuple(dict(a) for a in self.alerts))

    def equivalents(self) -> Equivalents:
        """Numeric everyday equivalents (phone charges, car km, tree minutes, LED hours)."""
        from carbonpipe.impact import equivalents

        return equivalents(self.energy_consumed_kwh, self.emissions_kg_co2)

    def emissions_comparison(self) -> dict[str, str]:
        """Everyday comparisons as sentences, keyed ``smartphone_charges``, ``car_distance``, ..."""
        from carbonpipe.impact import emissions_comparison

        return emissions_comparison(self.energy_consumed_kwh, self.emissions_kg_co2)

    def summary_line(self) -> str:
        """One line for logs: energy, CO2, intensity, location and a comparison."""
        from carbonpipe.impact import summary_line

        where = "/".join(p for p in (self.cloud_provider, self.cloud_region) if p) or (
            self.country_iso_code or "world average"
        )
        return summary_line(
            self.energy_consumed_kwh,
            self.emissions_kg_co2,
            self.carbon_intensity_g_per_kwh,
            location=where,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready mapping (what KFP and Airflow publish)."""
        return {
            "step": self.step,
            "status": self.status,
            "record_id": self.record_id,
            "duration_s": self.duration_s,
            "energy_kwh": self.energy_consumed_kwh,
            "emissions_kg_co2e": self.emissions_kg_co2,
            "emissions_g_co2e": self.emissions_g_co2e,
            "intensity_g_per_kwh": self.carbon_intensity_g_per_kwh,
            "cpu_energy_kwh": self.cpu_energy_kwh,
            "gpu_energy_kwh": self.gpu_energy_kwh,
            "ram_energy_kwh": self.ram_energy_kwh,
            "remote_energy_kwh": self.remote_energy_kwh,
            "cloud_provider": self.cloud_provider,
            "cloud_region": self.cloud_region,
            "country_iso_code": self.country_iso_code,
            "budget_percent": self.budget_percent,
            "functional_units": self.record.functional_units,
            "sci_g_per_unit": self.record.sci_g_per_unit,
            "embodied_kg_co2e": self.record.embodied_kg_co2e,
            "total_kg_co2e": self.record.total_kg_co2e,
            "pue": self.record.pue,
            "tracking_errors": list(self.tracking_errors),
        }


class _Step:
    """One running step: its meter, its reservation and the remote energy attributed to it."""

    def __init__(self, tracker: CarbonTracker, name: str, attempt: int, labels: dict[str, str]):
        self.tracker = tracker
        self.name = name
        self.attempt = attempt
        self.labels = labels
        self.started_at = datetime.now(timezone.utc)
        self.meter: Meter | None = None
        self.reservation: Reservation | None = None
        self.lease: LeaseKeeper | None = None  # renews the reservation while the step runs
        # Its entry beside the spool while it runs (carbonpipe.lost_steps): killed, it is not lost.
        self.open_step: OpenStep | None = None
        self.errors: list[str] = []
        self.remote: dict[str, dict[str, Any]] = {}
        # A shifted start (carbonpipe.intensity.scheduling.ShiftedStart): the record's scheduling.
        self.scheduling: Any = None
        # Its units of work (SCI's R), {name, count}: see add_units.
        self.units: dict[str, Any] | None = None
        # What the meter measured: None, the work itself; "worker" when the work ran elsewhere
        # (a pod, a managed job) and only the process waiting on it was measured.
        self.scope: str | None = None
        # The pod whose Kepler counters are the step's energy, when it is not the step's own pod
        # (a pod the step launched: carbonpipe.operators.pods); None: the step's own pod.
        self.kepler_pod: Any = None
        self.metrics: CarbonMetrics | None = None
        self._token: contextvars.Token[_Step | None] | None = None
        self._lock = threading.Lock()

    @property
    def record_id(self) -> str:
        s = self.tracker.settings
        return make_record_id(s.project, s.pipeline, self.tracker.run_id, self.name, self.attempt)

    def add_remote(self, server: str, *, energy_kwh: float, emissions_kg_co2e: float) -> None:
        """Attribute a model server's reported energy (``x_carbon_trace``) to this step."""
        with self._lock:
            entry = self.remote.setdefault(
                server, {"server": server, "count": 0, "energy_kwh": 0.0, "emissions_kg_co2e": 0.0}
            )
            entry["count"] += 1
            entry["energy_kwh"] += energy_kwh
            entry["emissions_kg_co2e"] += emissions_kg_co2e

    def runs_elsewhere(self, note: str | None = None) -> None:
        """The step's work runs outside this process (a pod, a managed job): its record says the
        meter measured the process waiting on it (``measurement.scope: worker``), with ``note``
        in ``tracking_errors``; so does its lost record, should this process die first."""
        self.scope = "worker"
        if note:
            self.errors.append(note)
        if self.open_step is not None:
            self.open_step.update(scope=self.scope, errors=list(self.errors))

    def add_units(self, count: float, name: str) -> None:
        """Declare ``count`` units of work named ``name`` done by this step (SCI's R).

        ``step.add_units(1000, "inference")``; calls add up. The record then carries
        ``functional_units: {name, count}`` and ``sci_g_per_unit``. This overrides the
        tracker's ``functional_unit`` (R = 1) for this step.

        Raises:
            ConfigError: ``count`` is not a finite number > 0, ``name`` is empty or over 64
                characters, or the step already declared a different unit.
        """
        from carbonpipe.functional_unit import add

        with self._lock:
            self.units = add(self.units, count, name)

    # The handle returned by start_tracking is this object: it is a context manager too.
    def __enter__(self) -> _Step:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.tracker._finish(self, _status_for(exc))


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "succeeded"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "killed"
    return "failed"


def tracked_function(fn: F, start: Callable[[str], _Step], name: str) -> F:
    """``fn`` (sync or async) wrapped so that every call runs inside ``start(name)``."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with start(name):
                return await fn(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with start(name):
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def summary_report(
    finished: Sequence[CarbonMetrics], head: Mapping[str, Any], recommendations: list[str]
) -> dict[str, Any]:
    """The guide's summary of a tracker's finished steps: totals, per-step figures, advice."""
    from carbonpipe.impact import emissions_comparison

    energy = sum(m.energy_consumed_kwh for m in finished)
    emissions = sum(m.emissions_kg_co2 for m in finished)
    summary = {
        **{k: head[k] for k in ("project", "experiment", "pipeline", "run_id")},
        "steps": len(finished),
        "failed_steps": sum(1 for m in finished if m.status != "succeeded"),
        "total_energy_kwh": energy,
        "total_emissions_kg_co2": emissions,
        "total_duration_s": sum(m.duration_s for m in finished),
        **{
            k: v
            for k, v in head.items()
            if k not in ("project", "experiment", "pipeline", "run_id")
        },
        "comparisons": emissions_comparison(energy, emissions),
    }
    return {
        "summary": summary,
        "steps": [m.to_dict() for m in finished],
        "recommendations": recommendations,
    }
