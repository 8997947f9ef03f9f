"""Tracked steps: measure a block, a function or a command, locate it, price it in CO2, record it.

``CarbonTracker`` keeps the API of the Carbon Tracker guide our users know::

    tracker = CarbonTracker(project_name="sustainable-ml", experiment_name="carbon-demo")
    with tracker.start_tracking("model_training"):
        model.fit(X, y)
    metrics = tracker.stop_tracking("model_training")

What happens around the step:

1. ``start_tracking`` gates the step against its budget (if any) *before* it spends, then
   starts the meter (a CodeCarbon sidecar process; see :mod:`carbonpipe.measure.meter`).
2. The step runs. Nothing carbonpipe does afterwards can change its result or exception.
3. ``stop``: the meter's energy, the location (:func:`carbonpipe.location.detect.detect_location`) and its
   grid intensity give the emissions; one immutable record is delivered to the store (spooled
   if the store is down) and charged to the budget ledger, settling the reservation.

Every tracking failure is logged and written into the record's ``tracking_errors``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

from carbonpipe._checks import (
    check_attempt,
    check_identity,
    check_identity_settings,
    check_label_keys,
)
from carbonpipe.config import Settings, resolve_settings
from carbonpipe.functional_unit import tracker_unit_name as unit_name

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget
    from carbonpipe.intensity.table import Intensity
    from carbonpipe.location.detect import Location
    from carbonpipe.measure.base import Measurement
    from carbonpipe.measure.meter import Meter
    from carbonpipe.stores.base import Store
    from carbonpipe.stores.breaker import BreakerStore
from carbonpipe.step import CarbonMetrics, _current_step, _Step, summary_report, tracked_function
from carbonpipe.stores.background import _replay_spool_in_background

log = logging.getLogger("carbonpipe")

F = TypeVar("F", bound=Callable[..., Any])


class CarbonTracker:
    """Measure ML steps with CodeCarbon and record their energy and CO2 where the org sees it.

    :param project_name: project the records belong to (``CARBONPIPE_PROJECT``).
    :param experiment_name: free-form experiment label (``CARBONPIPE_EXPERIMENT``).
    :param output_dir: the store: a folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
        (``CARBONPIPE_STORE``; default ``./carbon-artifacts``).
    :param cloud_provider: ``gcp``, ``aws`` or ``azure``; ``None`` detects it.
    :param cloud_region: the provider's region name; ``None`` detects it.
    :param country_iso_code: ISO 3166 country (alpha-2 or alpha-3) when off-cloud.
    :param tracking_mode: ``machine`` (whole machine), ``process`` (this process tree's share)
        or ``offline`` (machine, and no network probe at all: name the location).
    :param pipeline: pipeline the steps belong to (default: the project); budgets of scope
        ``pipeline:<name>`` count it.
    :param team: team the steps belong to; budgets of scope ``team:<name>`` count it.
    :param budget: a :class:`carbonpipe.Budget` gating every step before it starts.
    :param carbon_budget_g: shorthand for a per-run budget of this many grams.
    :param store_timeout_s: the most seconds one call to an object store may take
        (``CARBONPIPE_STORE_TIMEOUT_S``; default 5). After one call times out, the step's
        later calls to that store go straight to the spool: a hung store costs a step this
        deadline once.
    :param instance_type: what the steps run on (``m6i.large``), for their embodied share;
        ``None``: ``CARBONPIPE_INSTANCE_TYPE``, carbon.yaml, then the metadata server.
    :param embodied_lifetime_years: the hardware's lifetime EL (default 4 years).
    :param functional_unit: SCI's functional unit R for every step, one per step (e.g.
        ``"training run"``); a step's own ``step.add_units(N, NAME)`` takes its place.
    """

    def __init__(
        self,
        project_name: str | None = None,
        experiment_name: str | None = None,
        output_dir: str | Store | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        country_iso_code: str | None = None,
        tracking_mode: str | None = None,
        *,
        pipeline: str | None = None,
        team: str | None = None,
        run_id: str | None = None,
        budget: Budget | None = None,
        carbon_budget_g: float | None = None,
        labels: Mapping[str, str] | None = None,
        pue: float | None = None,
        measure_power_secs: float | None = None,
        config_file: str | None = None,
        store_options: Mapping[str, Any] | None = None,
        store_timeout_s: float | None = None,
        functional_unit: str | None = None,
        instance_type: str | None = None,
        embodied_lifetime_years: float | None = None,
    ) -> None:
        from carbonpipe.stores.base import Store
        from carbonpipe.stores.uri import parse_store_uri

        store_arg = None if isinstance(output_dir, Store) else output_dir
        self.settings: Settings = resolve_settings(
            config_file=config_file,
            project=project_name,
            experiment=experiment_name,
            store=store_arg,
            pipeline=pipeline,
            team=team,
            run_id=run_id,
            tracking_mode=tracking_mode,
            pue=pue,
            instance_type=instance_type,
            embodied_lifetime_years=embodied_lifetime_years,
            measure_power_secs=measure_power_secs,
            store_timeout_s=store_timeout_s,
        )
        if labels is not None and not (
            isinstance(labels, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        ):
            raise TypeError("labels must map strings to strings, e.g. {'model': 'bert'}")
        parse_store_uri(self.settings.store)  # a bad URI is refused before any step runs
        # A name no store key can hold is refused now, not when its record cannot be written.
        check_identity_settings(
            self.settings,
            {"project": "project_name", "experiment": "experiment_name", "labels": "labels"},
            labels,
        )
        self.labels: dict[str, str] = dict(labels or {})
        # SCI's R: each step is one unit of this name unless it declares its own (add_units).
        self.functional_unit = None if functional_unit is None else unit_name(functional_unit)
        self.run_id: str = self.settings.run_id or _new_run_id()
        self._store: BreakerStore | None = None
        if isinstance(output_dir, Store):
            self._store = self._guarded(output_dir)
        self._store_options = dict(store_options or {})
        self._arg_location = (cloud_provider, cloud_region, country_iso_code)
        from carbonpipe.location.validate import check_given_location

        # A typo in a provider or region is refused now, with the nearest names, not priced.
        check_given_location(
            self._arg_location, ("cloud_provider", "cloud_region", "country_iso_code")
        )
        self._location: Location | None = None
        self._intensity: Intensity | None = None
        self.budget: Budget | None = self._resolve_budget(budget, carbon_budget_g)
        self._open: dict[str, _Step] = {}
        self._finished: list[CarbonMetrics] = []
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- configuration --------------------------------------------------------------------
    def _resolve_budget(
        self, budget: Budget | None, carbon_budget_g: float | None
    ) -> Budget | None:
        if budget is None and carbon_budget_g is None and not self.settings.budgets:
            return None  # the common case: no budget module to import on the step's path
        from carbonpipe.budgets.budget import Budget

        if budget is not None and carbon_budget_g is not None:
            raise ValueError("give either budget= or carbon_budget_g=, not both")
        if budget is not None:
            if not isinstance(budget, Budget):
                raise TypeError(f"budget must be a carbonpipe.Budget, got {type(budget).__name__}")
            return budget
        if carbon_budget_g is not None:
            # The guide's per-run budget: it covers this tracker's run, gated before each step.
            return Budget(
                scope=f"run:{self.run_id}",
                period="total",
                limit_g_co2e=float(carbon_budget_g),
                on_exceed="fail",
            )
        for b in self.settings.budgets:
            if b.scope in (f"pipeline:{self.settings.pipeline}", f"team:{self.settings.team}"):
                return cast("Budget", b)
        return None

    @property
    def store(self) -> Store:
        """The store records go to (opened on first use), behind a breaker that stops a step
        waiting on it again once one call timed out (reset when the next step starts)."""
        if self._store is None:
            options = {"timeout_s": self.settings.store_timeout_s, **self._store_options}
            self._store = self._guarded(self.settings.open_store(**options))
        return self._store

    def _guarded(self, store: Store) -> BreakerStore:
        from carbonpipe.stores.breaker import BreakerStore

        if isinstance(store, BreakerStore):
            return store
        timeout_s = getattr(store, "timeout_s", None) or self.settings.store_timeout_s
        return BreakerStore(store, timeout_s=timeout_s)

    @property
    def location(self) -> Location:
        """Where the steps run: given, from env, from cloud metadata, configured, or world."""
        if self._location is None:
            provider, region, country = self._arg_location
            self._location = self.settings.locate(
                provider=provider, region=region, country_iso=country
            )
        return self._location

    @property
    def intensity(self) -> Intensity:
        """The grid carbon intensity of :attr:`location`, with its source and vintage."""
        if self._intensity is None:
            from carbonpipe.intensity.table import lookup_intensity

            loc = self.location
            self._intensity = lookup_intensity(loc.provider, loc.region, loc.country_iso)
        return self._intensity

    @property
    def cloud_provider(self) -> str | None:
        """The provider the steps run on (detected or given), or ``None`` off-cloud."""
        return self.location.provider

    @property
    def cloud_region(self) -> str | None:
        """The provider's region (detected or given)."""
        return self.location.region

    @property
    def country_iso_code(self) -> str | None:
        """ISO alpha-3 country of the location, when known."""
        return self.location.country_iso

    # -- tracking ---------------------------------------------------------------------------
    def start_tracking(
        self,
        step: str = "step",
        *,
        attempt: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> _Step:
        """Gate and start measuring ``step``; use the result as a context manager or call
        :meth:`stop_tracking`.

        Raises :class:`BudgetExceeded` (before any energy is spent) when the step would overrun
        its budget or the budget's ledger is down (``BudgetUnavailable``, a subclass; unless the
        budget says ``when_unavailable="run"``), and :class:`ConfigError` when the ``file:PATH``
        intensity source cannot be read or holds a bad value (the message names the setting, the
        file, the line and column and the fix). Nothing else raised here comes from tracking.
        """
        return self._start(step, attempt, labels, at=None)

    def _start_tracking_at(
        self, step: str, counters: Mapping[str, Any], *, attempt: int | None = None
    ) -> _Step:
        """Start tracking ``step`` as of ``counters``, read when it began (``carbonpipe run``).

        The wrapper reads them with ``carbonpipe.measure.counters.read_counters`` and starts the command
        before it builds the tracker; the window, ``started_at`` included, opens at them. Only
        without a budget: a gate must decide before the step starts.
        """
        if self.budget is not None:
            raise ValueError(f"step {step!r} has a budget: it must be gated before it starts")
        return self._start(step, attempt, None, at=counters)

    def _start(
        self,
        step: str,
        attempt: int | None,
        labels: Mapping[str, str] | None,
        *,
        at: Mapping[str, Any] | None,
    ) -> _Step:
        if not isinstance(step, str) or not step:
            raise ValueError(f"step must be a non-empty string, got {step!r}")
        check_attempt(attempt)
        check_identity("step", step)
        check_label_keys(labels)
        if at is None:  # (``carbonpipe run`` read it before it started the command)
            # A bad file:PATH intensity source is refused now, not found at the step's stop;
            # read once per process while the file is unchanged; no cost for any other source.
            self.settings.check_intensity_source()
        with self._lock:
            if step in self._open:
                raise ValueError(f"step {step!r} is already being tracked; stop it first")
            n = attempt if attempt is not None else self._attempts.get(step, 0) + 1
            self._attempts[step] = max(n, self._attempts.get(step, 0))
            handle = _Step(self, step, n, {**self.labels, **dict(labels or {})})
            if at is not None:
                handle.started_at = datetime.fromtimestamp(at["wall_s"], timezone.utc)
            self._open[step] = handle
        # The meter's sidecar starts first, so CodeCarbon's start-up overlaps the gate and the
        # spool check instead of the step; the measured window still opens at meter.start().
        meter = self._prepare_meter(handle)
        if self._store is not None:
            self._store.reset()  # a store that timed out in an earlier step gets a new chance
        else:
            from carbonpipe.stores import breaker

            breaker.new_step()  # a whole store deadline for this step
        _replay_spool_in_background()
        from carbonpipe import lost_steps

        lost_steps.sweep_in_background()  # steps an earlier process left open get their record
        try:
            if self.budget is not None:
                self._gate(handle)
        except BaseException:
            with self._lock:
                self._open.pop(step, None)
            if meter is not None:
                with contextlib.suppress(Exception):
                    meter.stop()  # never started: this only ends the sidecar
            raise
        handle.open_step = lost_steps.open_entry(self, handle, meter)
        if meter is not None:
            try:
                meter.start(at=at)
            except Exception as exc:
                handle.errors.append(f"energy meter failed to start: {exc!r}")
                meter = None
        handle.meter = meter
        handle._token = _current_step.set(handle)
        return handle

    # ``carbonpipe run`` names its option here: a strict budget that could only reserve 0 refuses.
    _gate_estimate_option: str | None = None

    def _gate(self, handle: _Step) -> None:
        from carbonpipe.budgets.gate import admit_step

        assert self.budget is not None
        # Fails closed within gate_timeout_s; when_unavailable="run" admits it with a record note.
        admitted = admit_step(
            lambda: self.store,
            self.budget.on_book(),  # a total-basis budget gates on the scope's total book
            pipeline=self.settings.pipeline,
            step=handle.name,
            reservation_id=handle.record_id,
            estimate_option=self._gate_estimate_option,
        )
        handle.reservation = admitted.reservation
        handle.lease = admitted.keeper
        handle.errors.extend(admitted.notes)

    def _prepare_meter(self, handle: _Step) -> Meter | None:
        try:
            from carbonpipe.lost_steps import heartbeat_file
            from carbonpipe.measure.meter import Meter

            heartbeat, seal_root = heartbeat_file(handle.record_id) or (None, None)
            meter = Meter(
                tracking_mode=self.settings.meter_mode,
                measure_power_secs=self.settings.measure_power_secs,
                heartbeat_path=heartbeat,
                heartbeat_seal_root=seal_root,
            )
            meter.prepare()
            return meter
        except Exception as exc:
            msg = f"energy meter failed to start: {exc!r}"
            log.warning("carbonpipe: %s", msg)
            handle.errors.append(msg)
            return None

    def stop_tracking(self, step: str | None = None) -> CarbonMetrics:
        """Stop ``step`` (or return its metrics if already stopped); with no name, the last.

        Idempotent: after the ``with`` block, or on a second call, it returns the same metrics.
        """
        with self._lock:
            if step is None:
                if self._open:
                    handle: _Step | None = list(self._open.values())[-1]
                elif self._finished:
                    return self._finished[-1]
                else:
                    raise ValueError(
                        "no step has been tracked yet; call start_tracking(step) first"
                    )
            else:
                handle = self._open.get(step)
                if handle is None:
                    for m in reversed(self._finished):
                        if m.step == step:
                            return m
                    raise ValueError(
                        f"step {step!r} was never started; started steps: {sorted(self._attempts)}"
                    )
        assert handle is not None
        return self._finish(handle, "succeeded")

    def _finish(self, handle: _Step, status: str) -> CarbonMetrics:
        with self._lock:
            if handle.metrics is not None:
                return handle.metrics
            self._open.pop(handle.name, None)
        if handle._token is not None:
            # Stopped from another context (a thread): there is nothing to restore there.
            with contextlib.suppress(ValueError):
                _current_step.reset(handle._token)
        measurement = self._stop_meter(handle)
        if handle.lease is not None:
            handle.lease.stop()  # the charge replaces the reservation: no more renewals
        metrics = self._record(handle, status, measurement)
        with self._lock:
            handle.metrics = metrics
            self._finished.append(metrics)
        return metrics

    def _warm_stop_path(self, *, summary: bool = False) -> None:
        """Do now what stopping a step will need and that does not depend on the step.

        For callers that sit idle while the step runs elsewhere (``carbonpipe run`` waits on a
        child process): the location is resolved (and any metadata probe made), the record,
        charge and baseline modules are loaded, and with ``summary`` the comparison factors too.
        Never raises: whatever fails here is retried, and reported, at stop.
        """
        with contextlib.suppress(Exception):
            _ = self.intensity
        if self.settings.timeseries_source is not None:
            from carbonpipe.intensity.timed import warm

            warm(self.settings.timeseries_source, self.settings.intensity)  # a file: parsed now
        with contextlib.suppress(Exception):
            from carbonpipe import baseline  # noqa: F401
            from carbonpipe.budgets import charges  # noqa: F401
            from carbonpipe.stores import spool  # noqa: F401
        if summary:
            with contextlib.suppress(Exception):
                from carbonpipe.impact import load_factors

                load_factors()

    def _stop_meter(self, handle: _Step) -> Measurement:
        from carbonpipe.measure.estimate import estimate_without_meter

        measurement = None
        if handle.meter is not None:
            try:
                measurement = handle.meter.stop()
            except Exception as exc:
                handle.errors.append(f"energy meter failed to stop: {exc!r}")
        if measurement is None:
            measurement = estimate_without_meter(handle.started_at, datetime.now(timezone.utc))
        if self.settings.kepler_prometheus_url:  # the pod's own energy (CodeCarbon's kept beside)
            from carbonpipe.measure import kepler

            measurement = kepler.apply(
                measurement, self.settings.kepler_prometheus_url, pod=handle.kepler_pod
            )
            if handle.kepler_pod is not None:  # a pod the step launched
                if measurement.method == "kepler":
                    handle.scope = None  # its own energy: the work itself was measured
                else:
                    handle.errors.append(
                        "remote work not measured: Kepler had no figure for the launched pod; "
                        "only the process that waited on it was measured (measurement.scope: "
                        "worker)"
                    )
        return measurement

    def _identity(self, handle: _Step) -> dict[str, Any]:
        """What names this attempt of the step in its record (pricing.IDENTITY_FIELDS)."""
        s = self.settings
        return {
            "record_id": handle.record_id,
            "project": s.project,
            "experiment": s.experiment,
            "pipeline": s.pipeline,
            "run_id": self.run_id,
            "step": handle.name,
            "team": s.team,
            "attempt": handle.attempt,
            "labels": handle.labels,
        }

    def _record(self, handle: _Step, status: str, m: Measurement) -> CarbonMetrics:
        from carbonpipe._stop import record_step

        return record_step(self, handle, status, m)

    # -- decorator --------------------------------------------------------------------------
    def track(self, step: str | None = None) -> Callable[[F], F]:
        """Decorate a function (sync or async) so every call is a tracked step."""

        def decorate(fn: F) -> F:
            return tracked_function(fn, self.start_tracking, step or fn.__name__)

        return decorate

    # -- insight ----------------------------------------------------------------------------
    def get_regional_recommendations(self, limit: int = 3) -> list[str]:
        """Lower-carbon regions of the same provider, nearest first, with % savings."""
        from carbonpipe.intensity.table import regional_recommendations

        loc = self.location
        return [
            str(r)
            for r in regional_recommendations(
                loc.provider, loc.region, country_iso=loc.country_iso, limit=limit
            )
        ]

    def get_total_emissions(self) -> float:
        """Total kg CO2e of every step this tracker finished."""
        with self._lock:
            return sum(m.emissions_kg_co2 for m in self._finished)

    def get_summary_report(self) -> dict[str, Any]:
        """Summary of every finished step: totals, per-step figures and comparisons."""
        with self._lock:
            finished = list(self._finished)
        loc = self.location
        head = {
            "project": self.settings.project,
            "experiment": self.settings.experiment,
            "pipeline": self.settings.pipeline,
            "run_id": self.run_id,
            "carbon_intensity_g_per_kwh": self.intensity.intensity_g_per_kwh,
            "cloud_provider": loc.provider,
            "cloud_region": loc.region,
            "country_iso_code": loc.country_iso,
        }
        return summary_report(finished, head, self.get_regional_recommendations())


def carbon_tracked(step: str | Callable[..., Any] | None = None, **tracker_kwargs: Any) -> Any:
    """Decorate a function so each call is a tracked step of its own tracker.

    ``@carbon_tracked``, ``@carbon_tracked("train")`` and
    ``@carbon_tracked(step="train", project_name="p", output_dir="s3://...")`` all work.
    """
    if callable(step):
        return CarbonTracker().track()(step)

    def decorate(fn: F) -> F:
        tracker = CarbonTracker(**tracker_kwargs)
        wrapped = tracker.track(step)(fn)
        wrapped.carbon_tracker = tracker  # type: ignore[attr-defined]
        return wrapped

    return decorate


def _new_run_id() -> str:
    """A fresh run id (a UUID4's 32 hex digits), ``uuid`` loaded only when one is needed."""
    import uuid

    return uuid.uuid4().hex
