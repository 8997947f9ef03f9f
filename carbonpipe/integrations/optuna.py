"""Carbon-aware hyperparameter search with Optuna: every trial measured, budgets that prune.

:class:`CarbonTrialTracker` runs each trial as a tracked step ``trial-<n>`` of a
:class:`~carbonpipe.CarbonTracker` (so each trial is a record in the store, gated by the
tracker's budget, charged for the model servers it calls) and stores what it cost on the trial
as user attributes: ``carbon_g_co2``, ``energy_kwh``, ``carbon_intensity_g_per_kwh``,
``carbon_duration_s``, ``carbon_remote_g_co2`` and ``carbon_record_id``::

    carbon = CarbonTrialTracker(project_name="hpo", cloud_provider="gcp", cloud_region="europe-west1")
    study = optuna.create_study(direction="maximize",
                                pruner=CarbonBudgetPruner(trial_budget_g=5.0, n_steps=20))
    study.optimize(carbon(objective), n_trials=50, callbacks=[carbon])

    # accuracy up, CO2 down: the wrapped objective returns (accuracy, carbon_g_co2)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(carbon.multi_objective(objective), n_trials=50)

Optuna calls callbacks only after a trial has finished, when its attributes can no longer
change, so measuring needs the wrapper (or ``with carbon.track(trial):`` inside the objective);
as a callback the tracker keeps the study's running totals (study user attributes
``carbon_g_co2_total``, ``energy_kwh_total``, ``carbon_trials``) and can stop the study at a
budget (``stop_at_g_co2``), which is how to cap a multi-objective study, where Optuna supports
no pruning.

:class:`CarbonBudgetPruner` prunes a trial whose *projected* emissions would overrun a
per-trial or per-study budget; its docstring says how the projection is made.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from carbonpipe._optional import needs_extra

with needs_extra("optuna", "Optuna trials"):
    import optuna
    from optuna.pruners import BasePruner
    from optuna.trial import FrozenTrial, Trial, TrialState

from carbonpipe.step import CarbonMetrics, current_step
from carbonpipe.tracker import CarbonTracker

if TYPE_CHECKING:
    from carbonpipe.step import _Step

__all__ = [
    "CARBON_G_CO2",
    "CARBON_INTENSITY",
    "DURATION_S",
    "ENERGY_KWH",
    "N_STEPS",
    "RECORD_ID",
    "REMOTE_G_CO2",
    "CarbonBudgetPruner",
    "CarbonProjection",
    "CarbonTrialTracker",
]

log = logging.getLogger("carbonpipe.optuna")

# Trial user attributes written by CarbonTrialTracker (and read by CarbonBudgetPruner).
CARBON_G_CO2 = "carbon_g_co2"
ENERGY_KWH = "energy_kwh"
CARBON_INTENSITY = "carbon_intensity_g_per_kwh"
DURATION_S = "carbon_duration_s"
REMOTE_G_CO2 = "carbon_remote_g_co2"
RECORD_ID = "carbon_record_id"
# Set by the objective when its trials differ in length: the steps this trial will report.
N_STEPS = "n_steps"

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_J_PER_KWH = 3.6e6

Objective = Callable[[Trial], Any]


class CarbonTrialTracker:
    """Measure each Optuna trial as a tracked step and store its energy and CO2 on the trial.

    :param tracker: the :class:`~carbonpipe.CarbonTracker` whose steps the trials are; without
        one, a tracker is built from ``tracker_kwargs`` (``project_name``, ``output_dir``,
        ``cloud_provider``, ...).
    :param step_prefix: steps are named ``<step_prefix>-<trial number>``.
    :param stop_at_g_co2: as a callback, stop the study once its trials have emitted this much.
    """

    def __init__(
        self,
        tracker: CarbonTracker | None = None,
        *,
        step_prefix: str = "trial",
        stop_at_g_co2: float | None = None,
        **tracker_kwargs: Any,
    ) -> None:
        if tracker is not None and tracker_kwargs:
            raise TypeError(
                "give either tracker= or CarbonTracker arguments "
                f"({', '.join(sorted(tracker_kwargs))}), not both"
            )
        if tracker is not None and not isinstance(tracker, CarbonTracker):
            raise TypeError(f"tracker must be a CarbonTracker, got {type(tracker).__name__}")
        if not isinstance(step_prefix, str) or not step_prefix:
            raise ValueError(f"step_prefix must be a non-empty string, got {step_prefix!r}")
        self.tracker = tracker if tracker is not None else CarbonTracker(**tracker_kwargs)
        self.step_prefix = step_prefix
        self.stop_at_g_co2 = _budget("stop_at_g_co2", stop_at_g_co2)
        self._metrics: dict[int, CarbonMetrics] = {}
        self._lock = threading.Lock()

    @property
    def metrics(self) -> dict[int, CarbonMetrics]:
        """Return the metrics of every trial measured so far, by trial number."""
        with self._lock:
            return dict(self._metrics)

    # -- measuring ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def track(self, trial: Trial) -> Iterator[_Step]:
        """Measure the block as trial ``trial``'s step; its figures land on the trial at exit.

        A pruned trial (``optuna.TrialPruned``) is a step that succeeded: it did what was asked
        and stopped early. Any other exception marks the step failed; both are re-raised.
        """
        name = f"{self.step_prefix}-{trial.number}"
        labels = {"optuna_study": trial.study.study_name, "optuna_trial": str(trial.number)}
        handle = self.tracker.start_tracking(name, labels=labels)
        try:
            yield handle
        except optuna.TrialPruned:
            handle.__exit__(None, None, None)
            self._store(trial, handle.metrics)
            raise
        except BaseException as exc:
            handle.__exit__(type(exc), exc, exc.__traceback__)
            self._store(trial, handle.metrics)
            raise
        handle.__exit__(None, None, None)
        self._store(trial, handle.metrics)

    def wrap(self, objective: Objective, *, carbon_objective: bool = False) -> Objective:
        """Return ``objective`` measured per trial; with ``carbon_objective``, it also returns CO2.

        With ``carbon_objective=True`` the wrapped objective returns ``(value, carbon_g_co2)``
        (or ``(*values, carbon_g_co2)`` when ``objective`` returns several values), for a study
        created with one more direction, ``"minimize"``, than the objective has.
        """

        @functools.wraps(objective)
        def measured(trial: Trial) -> Any:
            with self.track(trial) as handle:
                value = objective(trial)
            if not carbon_objective:
                return value
            metrics = handle.metrics
            carbon_g = math.nan if metrics is None else metrics.emissions_g_co2e
            if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
                return (*value, carbon_g)
            return (value, carbon_g)

        return measured

    def multi_objective(self, objective: Objective) -> Objective:
        """Return ``objective`` measured and returning ``(value, carbon_g_co2)``; see :meth:`wrap`."""
        return self.wrap(objective, carbon_objective=True)

    @overload
    def __call__(self, objective: Objective, /) -> Objective: ...

    @overload
    def __call__(self, study: optuna.Study, trial: FrozenTrial, /) -> None: ...

    def __call__(self, *args: Any) -> Objective | None:
        """``carbon(objective)`` wraps an objective; ``callbacks=[carbon]`` keeps study totals."""
        if len(args) == 1 and callable(args[0]):
            return self.wrap(args[0])
        if len(args) == 2 and isinstance(args[1], FrozenTrial):
            self.after_trial(args[0], args[1])
            return None
        raise TypeError(
            "call with an objective to wrap it, or use as an Optuna callback (study, trial)"
        )

    # -- callback -----------------------------------------------------------------------------
    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: update the study's carbon totals and stop it at ``stop_at_g_co2``."""
        spent_g, energy_kwh, count = _study_totals(study)
        study.set_user_attr("carbon_g_co2_total", spent_g)
        study.set_user_attr("energy_kwh_total", energy_kwh)
        study.set_user_attr("carbon_trials", count)
        if self.stop_at_g_co2 is not None and spent_g >= self.stop_at_g_co2:
            log.warning(
                "carbonpipe: study %s emitted %.4g g CO2e (limit %.4g g); stopping it",
                study.study_name,
                spent_g,
                self.stop_at_g_co2,
            )
            study.stop()

    def _store(self, trial: Trial, metrics: CarbonMetrics | None) -> None:
        if metrics is None:
            return
        with self._lock:
            self._metrics[trial.number] = metrics
        remote_kg = sum(float(r["emissions_kg_co2e"]) for r in metrics.record.remote)
        attrs = {
            CARBON_G_CO2: metrics.emissions_g_co2e,
            ENERGY_KWH: metrics.energy_consumed_kwh,
            CARBON_INTENSITY: metrics.carbon_intensity_g_per_kwh,
            DURATION_S: metrics.duration_s,
            REMOTE_G_CO2: remote_kg * 1000.0,
            RECORD_ID: metrics.record_id,
        }
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        except Exception as exc:  # the measurement is in the store; never fail the trial for it
            log.warning(
                "carbonpipe: could not store carbon figures on trial %d: %s", trial.number, exc
            )


@dataclass(frozen=True)
class CarbonProjection:
    """How :class:`CarbonBudgetPruner` projected one trial's emissions at its latest report."""

    trial_number: int
    step: int
    progress: float
    elapsed_s: float
    rate_g_per_s: float
    rate_source: str  # "trials" (earlier trials' measured rate) | "power_w" (configured)
    so_far_g_co2: float
    projected_g_co2: float
    spent_g_co2: float  # the study's other finished trials
    pruned_by: str | None  # "trial_budget" | "study_budget" | None


class CarbonBudgetPruner(BasePruner):
    """Prune trials whose projected emissions would overrun a per-trial or per-study budget.

    The step meter is a sidecar read only when a step stops, so nothing measures a trial while
    it runs; the projection at each report is instead::

        progress  = (last reported step + 1) / n_steps       steps counted from 0, as in
                                                              ``for step in range(n_steps)``
        rate      = sum(carbon_g_co2 - carbon_remote_g_co2) / sum(carbon_duration_s)
                    over the study's finished, measured trials (same machine, same code),
                    else power_w x intensity_g_per_kwh / 3.6e6 when ``power_w`` is given
        so far    = elapsed since the trial started x rate
                    + what model servers have reported to the trial's running step
        projected = so far / progress

    It prunes when ``projected > trial_budget_g``, or when ``spent + projected >
    study_budget_g``, ``spent`` being the ``carbon_g_co2`` of the study's other finished trials
    (trials running in parallel are not counted). ``n_steps`` comes from the trial's ``n_steps``
    user attribute, else the pruner's; without either, progress is taken as complete (no
    extrapolation). Without a rate (the first trial, no ``power_w``) nothing is pruned for
    carbon. Otherwise ``base_pruner`` decides. Each projection is kept in :attr:`projections`.

    The trials' figures come from :class:`CarbonTrialTracker`; intensity for ``power_w`` is the
    given one, else the running step's (its PUE included), else the world average. Optuna
    supports pruning only in single-objective studies.

    :param trial_budget_g: the most a single trial may emit, in g CO2e.
    :param study_budget_g: the most the whole study may emit, in g CO2e.
    :param n_steps: the number of steps a complete trial reports.
    :param base_pruner: another pruner consulted when the budget does not prune.
    :param power_w: mean power to assume before any trial has been measured.
    :param intensity_g_per_kwh: grid intensity to price ``power_w`` with.
    :param warmup_steps: do not prune for carbon before this step is reported.
    """

    def __init__(
        self,
        trial_budget_g: float | None = None,
        study_budget_g: float | None = None,
        *,
        n_steps: int | None = None,
        base_pruner: BasePruner | None = None,
        power_w: float | None = None,
        intensity_g_per_kwh: float | None = None,
        warmup_steps: int = 0,
    ) -> None:
        self.trial_budget_g = _budget("trial_budget_g", trial_budget_g)
        self.study_budget_g = _budget("study_budget_g", study_budget_g)
        if self.trial_budget_g is None and self.study_budget_g is None:
            raise ValueError("give trial_budget_g, study_budget_g or both (grams of CO2e)")
        self.n_steps = _steps("n_steps", n_steps, minimum=1)
        if base_pruner is not None and not isinstance(base_pruner, BasePruner):
            raise TypeError(
                f"base_pruner must be an optuna pruner, got {type(base_pruner).__name__}"
            )
        self.base_pruner = base_pruner
        self.power_w = _budget("power_w", power_w)
        self.intensity_g_per_kwh = _budget("intensity_g_per_kwh", intensity_g_per_kwh)
        self.warmup_steps = _steps("warmup_steps", warmup_steps, minimum=0) or 0
        self.projections: dict[int, CarbonProjection] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Prune for carbon if the projection overruns a budget, else ask the base pruner."""
        projection = self.project(study, trial)
        if projection is not None:
            self.projections[trial.number] = projection
            if projection.pruned_by is not None:
                log.info(
                    "carbonpipe: pruning trial %d at step %d: projected %.4g g CO2e (%s)",
                    trial.number,
                    projection.step,
                    projection.projected_g_co2,
                    projection.pruned_by,
                )
                return True
        return self.base_pruner.prune(study, trial) if self.base_pruner is not None else False

    def project(self, study: optuna.Study, trial: FrozenTrial) -> CarbonProjection | None:
        """Return the trial's projected emissions, or ``None`` when no projection can be made."""
        step = trial.last_step
        if step is None or step < self.warmup_steps:
            return None
        finished = [
            t
            for t in study.get_trials(deepcopy=False, states=_FINISHED)
            if t.number != trial.number
        ]
        rate = self._rate(finished)
        if rate is None:
            return None
        rate_g_per_s, source = rate
        n_steps = self.n_steps
        try:
            n_steps = (
                _steps("the n_steps user attribute", trial.user_attrs.get(N_STEPS), minimum=1)
                or n_steps
            )
        except ValueError as exc:
            log.warning("carbonpipe: trial %d: %s; using n_steps=%s", trial.number, exc, n_steps)
        progress = 1.0 if n_steps is None else min(max((step + 1) / n_steps, 1e-9), 1.0)
        start = trial.datetime_start
        elapsed_s = 0.0
        if start is not None:
            now = datetime.now(start.tzinfo) if start.tzinfo else datetime.now()
            elapsed_s = max((now - start).total_seconds(), 0.0)
        so_far = elapsed_s * rate_g_per_s + _remote_so_far_g(trial.number)
        projected = so_far / progress
        spent = sum(_number(t.user_attrs.get(CARBON_G_CO2)) for t in finished)
        pruned_by = None
        if self.trial_budget_g is not None and projected > self.trial_budget_g:
            pruned_by = "trial_budget"
        elif self.study_budget_g is not None and spent + projected > self.study_budget_g:
            pruned_by = "study_budget"
        return CarbonProjection(
            trial_number=trial.number,
            step=step,
            progress=progress,
            elapsed_s=elapsed_s,
            rate_g_per_s=rate_g_per_s,
            rate_source=source,
            so_far_g_co2=so_far,
            projected_g_co2=projected,
            spent_g_co2=spent,
            pruned_by=pruned_by,
        )

    def _rate(self, finished: list[FrozenTrial]) -> tuple[float, str] | None:
        local_g = duration_s = 0.0
        for t in finished:
            carbon = _finite(t.user_attrs.get(CARBON_G_CO2))
            seconds = _finite(t.user_attrs.get(DURATION_S))
            if carbon is not None and seconds is not None and seconds > 0:
                local_g += carbon - _number(t.user_attrs.get(REMOTE_G_CO2))
                duration_s += seconds
        if duration_s > 0:
            return max(local_g, 0.0) / duration_s, "trials"
        if self.power_w is None:
            return None
        return self.power_w * self._intensity() / _J_PER_KWH, "power_w"

    def _intensity(self) -> float:
        if self.intensity_g_per_kwh is not None:
            return self.intensity_g_per_kwh
        step = current_step()
        try:
            if step is not None:
                tracker = step.tracker
                return tracker.intensity.intensity_g_per_kwh * tracker.settings.pue
        except Exception as exc:  # detection trouble: fall through to the world average
            log.debug("carbonpipe: no intensity from the running step: %s", exc)
        from carbonpipe.intensity.table import lookup_intensity

        return lookup_intensity(None, None, None).intensity_g_per_kwh


def _remote_so_far_g(trial_number: int) -> float:
    """Return what model servers reported to this trial's running step so far, in g CO2e."""
    step = current_step()
    if step is None or step.labels.get("optuna_trial") != str(trial_number):
        return 0.0
    return sum(float(r["emissions_kg_co2e"]) for r in list(step.remote.values())) * 1000.0


def _study_totals(study: optuna.Study) -> tuple[float, float, int]:
    carbon_g = energy_kwh = 0.0
    count = 0
    for t in study.get_trials(deepcopy=False, states=_FINISHED):
        carbon = _finite(t.user_attrs.get(CARBON_G_CO2))
        if carbon is not None:
            carbon_g += carbon
            energy_kwh += _number(t.user_attrs.get(ENERGY_KWH))
            count += 1
    return carbon_g, energy_kwh, count


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _number(value: object) -> float:
    found = _finite(value)
    return 0.0 if found is None else found


def _budget(name: str, value: object) -> float | None:
    if value is None:
        return None
    number = _finite(value)
    if number is None or number < 0:
        raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
    return number


def _steps(name: str, value: object, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or None, got {value!r}")
    return value
