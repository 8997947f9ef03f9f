"""Carbon-aware Optuna studies: real scikit-learn trials, measured, stored, pruned on budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

from carbonpipe.integrations.optuna import (
    CARBON_G_CO2,
    CARBON_INTENSITY,
    DURATION_S,
    ENERGY_KWH,
    RECORD_ID,
    REMOTE_G_CO2,
    CarbonBudgetPruner,
    CarbonTrialTracker,
)
from carbonpipe.tracker import CarbonTracker

N_STEPS = 4

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def hardware_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hw-cache")


@pytest.fixture(autouse=True)
def _shared_hardware_profile(hardware_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Detect CodeCarbon's hardware once per module, not once per test (~1.5 s each)."""
    monkeypatch.setenv("CARBONPIPE_CACHE_DIR", str(hardware_cache))


@pytest.fixture(scope="module")
def digits() -> tuple[Any, ...]:
    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.3, random_state=0))


def make_objective(digits: tuple[Any, ...], *, report: bool = True) -> Callable[[Any], float]:
    """SGD on the digits, one partial_fit epoch per step, reporting validation accuracy."""
    X_train, X_valid, y_train, y_valid = digits
    classes = np.unique(y_train)

    def objective(trial: optuna.Trial) -> float:
        alpha = trial.suggest_float("alpha", 1e-5, 1e-1, log=True)
        model = SGDClassifier(alpha=alpha, random_state=trial.number)
        accuracy = 0.0
        for step in range(N_STEPS):
            model.partial_fit(X_train, y_train, classes=classes)
            accuracy = float(model.score(X_valid, y_valid))
            if report:
                trial.report(accuracy, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return accuracy

    return objective


@pytest.fixture
def carbon(tmp_path: Path) -> CarbonTrialTracker:
    tracker = CarbonTracker(
        project_name="hpo",
        output_dir=str(tmp_path),
        cloud_provider="gcp",
        cloud_region="europe-west1",
    )
    return CarbonTrialTracker(tracker)


def _sampler() -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=0)


def test_each_trial_is_a_step_with_its_carbon_on_the_trial(
    carbon: CarbonTrialTracker, digits: tuple[Any, ...], tmp_path: Path
) -> None:
    study = optuna.create_study(direction="maximize", sampler=_sampler())
    study.optimize(carbon(make_objective(digits)), n_trials=3, callbacks=[carbon])
    intensity = carbon.tracker.intensity.intensity_g_per_kwh
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs[CARBON_G_CO2] > 0 and attrs[ENERGY_KWH] > 0
        assert attrs[CARBON_INTENSITY] == intensity
        assert attrs[DURATION_S] > 0 and attrs[REMOTE_G_CO2] == 0
        (path,) = tmp_path.glob(f"records/v2/**/{attrs[RECORD_ID]}.json")
        record = json.loads(path.read_text())
        # The data centre's overhead (the region's PUE) is in the CO2, not in the IT energy.
        expected_g = attrs[ENERGY_KWH] * record["pue"] * intensity
        assert attrs[CARBON_G_CO2] == pytest.approx(expected_g)
        assert record["step"] == f"trial-{trial.number}"
        assert record["status"] == "succeeded"
        assert record["labels"]["optuna_trial"] == str(trial.number)
        assert record["emissions_kg_co2e"] * 1000 == pytest.approx(attrs[CARBON_G_CO2])
    total = sum(t.user_attrs[CARBON_G_CO2] for t in study.trials)
    assert study.user_attrs["carbon_g_co2_total"] == pytest.approx(total)
    assert study.user_attrs["carbon_trials"] == 3
    assert sorted(carbon.metrics) == [0, 1, 2]


def test_track_inside_the_objective_also_records_failed_trials(
    carbon: CarbonTrialTracker, digits: tuple[Any, ...]
) -> None:
    inner = make_objective(digits, report=False)

    def objective(trial: optuna.Trial) -> float:
        with carbon.track(trial):
            if trial.number == 1:
                raise RuntimeError("diverged")
            return inner(trial)

    study = optuna.create_study(direction="maximize", sampler=_sampler())
    study.optimize(objective, n_trials=2, catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs[CARBON_G_CO2] > 0 for t in study.trials)
    assert carbon.metrics[1].status == "failed"


def test_multi_objective_study_trades_accuracy_against_carbon(
    carbon: CarbonTrialTracker, digits: tuple[Any, ...]
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler())
    study.optimize(carbon.multi_objective(make_objective(digits, report=False)), n_trials=3)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    for trial in study.trials:
        assert trial.values is not None and len(trial.values) == 2
        accuracy, carbon_g = trial.values
        assert 0 < accuracy <= 1
        assert carbon_g == trial.user_attrs[CARBON_G_CO2] > 0
    assert study.best_trials


def test_wrapped_objective_returning_several_values_gains_carbon_as_the_last(
    carbon: CarbonTrialTracker,
) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.optimize(carbon.wrap(lambda t: (0.5, 2.0), carbon_objective=True), n_trials=1)
    values = study.trials[0].values
    assert values is not None and values[:2] == [0.5, 2.0]
    assert values[2] == study.trials[0].user_attrs[CARBON_G_CO2]


@pytest.mark.parametrize(
    ("pruner_kwargs", "pruned_trials"),
    [
        pytest.param({"trial_budget_g": 1e-12}, {1, 2, 3}, id="tiny-trial-budget"),
        pytest.param({"study_budget_g": 1e-12}, {1, 2, 3}, id="tiny-study-budget"),
        pytest.param({"trial_budget_g": 1e9, "study_budget_g": 1e9}, set(), id="huge-budgets"),
        pytest.param(
            {"trial_budget_g": 1e-12, "power_w": 100.0, "intensity_g_per_kwh": 400.0},
            {0, 1, 2, 3},
            id="power-fallback-prunes-the-first-trial-too",
        ),
    ],
)
def test_budget_pruner_prunes_trials_projected_to_overrun(
    carbon: CarbonTrialTracker,
    digits: tuple[Any, ...],
    pruner_kwargs: dict[str, Any],
    pruned_trials: set[int],
) -> None:
    pruner = CarbonBudgetPruner(n_steps=N_STEPS, **pruner_kwargs)
    study = optuna.create_study(direction="maximize", sampler=_sampler(), pruner=pruner)
    study.optimize(carbon(make_objective(digits)), n_trials=4)
    pruned = {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    assert pruned == pruned_trials
    for number in pruned:
        projection = pruner.projections[number]
        assert projection.pruned_by in ("trial_budget", "study_budget")
        assert projection.step == 0 and projection.progress == pytest.approx(1 / N_STEPS)
        assert projection.projected_g_co2 == pytest.approx(projection.so_far_g_co2 * N_STEPS)
        # Pruned trials were measured too, and their carbon counts for the study.
        assert study.trials[number].user_attrs[CARBON_G_CO2] > 0
    if "study_budget_g" in pruner_kwargs and pruned:
        assert pruner.projections[max(pruned)].spent_g_co2 > 0


def _finished(carbon_g: float, seconds: float, remote_g: float = 0.0) -> Any:
    return optuna.trial.create_trial(
        value=0.5,
        user_attrs={CARBON_G_CO2: carbon_g, DURATION_S: seconds, REMOTE_G_CO2: remote_g},
    )


def _running(number: int, elapsed_s: float, last_step: int) -> optuna.trial.FrozenTrial:
    return optuna.trial.FrozenTrial(
        number=number,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now() - timedelta(seconds=elapsed_s),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={step: 0.5 for step in range(last_step + 1)},
        trial_id=999,
    )


@pytest.mark.parametrize(
    ("trial_budget_g", "study_budget_g", "pruned_by"),
    [
        pytest.param(3.0, None, "trial_budget", id="over-trial-budget"),
        pytest.param(5.0, None, None, id="under-trial-budget"),
        pytest.param(None, 33.0, "study_budget", id="over-study-budget"),
        pytest.param(None, 35.0, None, id="under-study-budget"),
    ],
)
def test_projection_extrapolates_the_measured_rate_to_the_full_trial(
    trial_budget_g: float | None, study_budget_g: float | None, pruned_by: str | None
) -> None:
    study = optuna.create_study(direction="maximize")
    # 30 g over 20 s, 10 g of it from model servers: the local rate is 1 g/s.
    study.add_trial(_finished(carbon_g=20.0, seconds=10.0, remote_g=10.0))
    study.add_trial(_finished(carbon_g=10.0, seconds=10.0))
    pruner = CarbonBudgetPruner(trial_budget_g, study_budget_g, n_steps=8)
    # 2 s into the trial, steps 0-3 of 8 reported: 2 g so far, 4 g projected.
    projection = pruner.project(study, _running(2, elapsed_s=2.0, last_step=3))
    assert projection is not None
    assert projection.rate_g_per_s == pytest.approx(1.0)
    assert projection.rate_source == "trials"
    assert projection.progress == pytest.approx(0.5)
    assert projection.so_far_g_co2 == pytest.approx(2.0, abs=0.2)
    assert projection.projected_g_co2 == pytest.approx(4.0, abs=0.4)
    assert projection.spent_g_co2 == pytest.approx(30.0)
    assert projection.pruned_by == pruned_by


def test_trial_n_steps_attribute_overrides_the_pruner_and_warmup_defers_pruning() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_finished(carbon_g=10.0, seconds=10.0))
    trial = _running(1, elapsed_s=1.0, last_step=0)
    trial.user_attrs["n_steps"] = 2
    pruner = CarbonBudgetPruner(trial_budget_g=1.0, n_steps=100, warmup_steps=1)
    assert pruner.project(study, trial) is None  # step 0 < warmup
    pruner = CarbonBudgetPruner(trial_budget_g=1.0, n_steps=100)
    projection = pruner.project(study, trial)
    assert projection is not None and projection.progress == pytest.approx(0.5)


def test_no_rate_means_no_carbon_pruning_and_the_base_pruner_decides() -> None:
    class Always(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return True

    study = optuna.create_study(direction="maximize")
    trial = _running(0, elapsed_s=1.0, last_step=0)
    assert CarbonBudgetPruner(trial_budget_g=0.0).project(study, trial) is None
    assert CarbonBudgetPruner(trial_budget_g=0.0).prune(study, trial) is False
    assert CarbonBudgetPruner(trial_budget_g=1e9, base_pruner=Always()).prune(study, trial)


def test_callback_stops_the_study_at_its_carbon_limit(
    tmp_path: Path, digits: tuple[Any, ...]
) -> None:
    carbon = CarbonTrialTracker(
        project_name="hpo",
        output_dir=str(tmp_path),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        stop_at_g_co2=1e-12,
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler())
    objective = carbon.multi_objective(make_objective(digits, report=False))
    study.optimize(objective, n_trials=5, callbacks=[carbon])
    assert len(study.trials) == 1
    assert study.user_attrs["carbon_g_co2_total"] > 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({}, "trial_budget_g, study_budget_g", id="no-budget"),
        pytest.param({"trial_budget_g": -1.0}, "trial_budget_g", id="negative-budget"),
        pytest.param({"study_budget_g": float("nan")}, "study_budget_g", id="nan-budget"),
        pytest.param({"trial_budget_g": 1.0, "n_steps": 0}, "n_steps", id="zero-steps"),
        pytest.param({"trial_budget_g": 1.0, "power_w": "100"}, "power_w", id="power-not-number"),
    ],
)
def test_pruner_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CarbonBudgetPruner(**kwargs)


def test_tracker_arguments_are_checked(tmp_path: Path) -> None:
    tracker = CarbonTracker(project_name="p", output_dir=str(tmp_path))
    with pytest.raises(TypeError, match="not both"):
        CarbonTrialTracker(tracker, project_name="p")
    with pytest.raises(ValueError, match="step_prefix"):
        CarbonTrialTracker(tracker, step_prefix="")
    with pytest.raises(TypeError, match="objective"):
        CarbonTrialTracker(tracker)(1, 2, 3)  # type: ignore[call-overload]
