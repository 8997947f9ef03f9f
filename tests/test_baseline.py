"""Step baselines (create, replace, show) and the regression check the tracker runs."""

from __future__ import annotations

import json
import logging
import statistics
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from carbonpipe import baseline
from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.cli.app import main
from carbonpipe.errors import ConfigError
from carbonpipe.stores.base import Store, StoredObject
from tests.esg.test_esg import make_record

TODAY = date(2026, 11, 24)
# Seven attempts of train/fit, oldest first; the failed one and the oldest are not sampled.
HISTORY = [
    ("2026-11-01", "r1", 1.0, "succeeded"),
    ("2026-11-03", "r2", 2.0, "succeeded"),
    ("2026-11-05", "r3", 3.0, "succeeded"),
    ("2026-11-10", "r4", 9.0, "failed"),
    ("2026-11-12", "r5", 4.0, "succeeded"),
    ("2026-11-20", "r6", 5.0, "succeeded"),
    ("2026-11-23", "r7", 6.0, "succeeded"),
]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    baseline.clear_cache()


def fill_history(store: Store) -> None:
    for day, run, kg, status in HISTORY:
        rec = make_record("train", "fit", "ranking", day, run, status=status, emissions_kg=kg)
        store.put_if_absent(rec.key, rec.to_json())
    other = make_record("train", "prep", "ranking", "2026-11-23", "r7", emissions_kg=50.0)
    store.put_if_absent(other.key, other.to_json())


def test_baseline_from_the_last_five_succeeded_attempts(store: Store) -> None:
    fill_history(store)
    base = baseline.create_baseline(store, "train", "fit", runs=5, today=TODAY)
    samples = [2.0, 3.0, 4.0, 5.0, 6.0]
    assert list(base.samples_kg_co2e) == samples  # oldest to newest; failed r4 and old r1 left out
    assert base.mean_kg_co2e == 4.0 and base.std_kg_co2e == statistics.stdev(samples)
    assert base.first_ended_at == "2026-11-03T11:00:00.000000Z"
    doc = json.loads(store.get("baselines/train/fit.json").data)
    assert doc["schema"] == "carbonpipe.baseline/1" and doc["mean_kg_co2e"] == 4.0
    assert doc["runs"] == 5 and len(doc["record_ids"]) == 5
    assert baseline.load_baseline(store, "train", "fit") == base


def test_failed_attempts_count_when_asked(local_store: Store) -> None:
    fill_history(local_store)
    base = baseline.create_baseline(
        local_store, "train", "fit", runs=3, include_failed=True, today=TODAY
    )
    assert list(base.samples_kg_co2e) == [4.0, 5.0, 6.0]
    base = baseline.create_baseline(
        local_store, "train", "fit", runs=4, include_failed=True, today=TODAY
    )
    assert list(base.samples_kg_co2e) == [9.0, 4.0, 5.0, 6.0]


def test_no_records_means_no_baseline(local_store: Store) -> None:
    with pytest.raises(ValueError, match="no succeeded records of train/fit"):
        baseline.create_baseline(local_store, "train", "fit", today=TODAY)


def test_create_replaces_the_stored_baseline_by_compare_and_swap(local_store: Store) -> None:
    fill_history(local_store)
    first = baseline.create_baseline(local_store, "train", "fit", runs=2, today=TODAY)
    v1 = local_store.get("baselines/train/fit.json").version
    second = baseline.create_baseline(local_store, "train", "fit", runs=5, today=TODAY)
    assert (first.mean_kg_co2e, second.mean_kg_co2e) == (5.5, 4.0)
    assert local_store.get("baselines/train/fit.json").version != v1

    errors: list[BaseException] = []

    def create(runs: int) -> None:
        try:
            baseline.create_baseline(local_store, "train", "fit", runs=runs, today=TODAY)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(2 + i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    doc = json.loads(local_store.get("baselines/train/fit.json").data)
    assert doc["mean_kg_co2e"] == statistics.fmean(doc["samples_kg_co2e"])  # never a torn mix


def test_budget_gate_estimates_a_step_from_its_baseline(local_store: Store) -> None:
    fill_history(local_store)
    baseline.create_baseline(local_store, "train", "fit", today=TODAY)
    gate = BudgetGate(
        BudgetLedger(local_store), Budget(scope="pipeline:train", period="month", limit_kg_co2e=100)
    )
    est = gate.estimate("train", "fit")
    assert (est.kg_co2e, est.source) == (4.0, "baseline")


def _store_baseline(store: Store, mean: float) -> None:
    base = baseline.Baseline("train", "fit", mean, 0.1, (mean,), ("r",), "", "")
    baseline.save_baseline(store, base)


def test_regression_above_factor_times_mean_alerts_and_warns(
    local_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    _store_baseline(local_store, 1.0)
    assert baseline.check_regression(local_store, "train", "fit", 1.19, factor=1.2) is None
    with caplog.at_level(logging.WARNING):
        alert = baseline.check_regression(local_store, "train", "fit", 1.5, factor=1.2)
    assert alert is not None
    assert alert["kind"] == "carbon_regression" and alert["action"] == "warn"
    assert (alert["pipeline"], alert["step"]) == ("train", "fit")
    assert alert["baseline_mean_kg_co2e"] == 1.0 and alert["threshold_kg_co2e"] == 1.2
    assert alert["increase_percent"] == 50.0 and alert["baseline_key"] == "baselines/train/fit.json"
    json.dumps(alert)  # it goes into the record as is
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "carbon regression in train/fit" in warning.getMessage()


def test_no_baseline_no_alert(local_store: Store) -> None:
    assert baseline.check_regression(local_store, "train", "fit", 100.0) is None


class CountingStore:
    """Count the GETs a check makes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.gets = 0

    def get(self, key: str) -> StoredObject:
        self.gets += 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_check_costs_one_get_per_step_and_process(local_store: Store) -> None:
    _store_baseline(local_store, 1.0)
    counting = CountingStore(local_store)
    for kg in (0.5, 2.0, 3.0, 0.9):
        baseline.check_regression(counting, "train", "fit", kg)  # type: ignore[arg-type]
    assert counting.gets == 1
    baseline.check_regression(counting, "train", "other", 1.0)  # type: ignore[arg-type]
    baseline.check_regression(counting, "train", "other", 1.0)  # type: ignore[arg-type]
    assert counting.gets == 2  # a missing baseline is cached too


@pytest.mark.parametrize(
    ("env", "yaml_text", "expected"),
    [
        pytest.param(None, None, "warn", id="default"),
        pytest.param("fail", None, "fail", id="env"),
        pytest.param(None, "regression: fail\n", "fail", id="top-level"),
        pytest.param(None, "esg:\n  regression: fail\n", "fail", id="esg-section"),
        pytest.param("warn", "regression: fail\n", "warn", id="env-wins"),
    ],
)
def test_regression_action_comes_from_env_then_carbon_yaml(
    env: str | None,
    yaml_text: str | None,
    expected: str,
    local_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env:
        monkeypatch.setenv("CARBONPIPE_REGRESSION", env)
    if yaml_text:
        path = tmp_path / "carbon.yaml"
        path.write_text(yaml_text)
        monkeypatch.setenv("CARBONPIPE_CONFIG", str(path))
    _store_baseline(local_store, 1.0)
    alert = baseline.check_regression(local_store, "train", "fit", 2.0)
    assert alert is not None and alert["action"] == expected


def test_bad_regression_action_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBONPIPE_REGRESSION", "explode")
    with pytest.raises(ConfigError, match="warn, fail"):
        baseline.regression_action()


def test_tracker_puts_the_regression_alert_into_the_record(tmp_path: Path) -> None:
    from carbonpipe import CarbonTracker
    from carbonpipe.report import read_records, record_keys
    from carbonpipe.stores.opener import open_store

    store = open_store(str(tmp_path / "store"))
    baseline.save_baseline(
        store, baseline.Baseline("demo", "train", 1e-15, 0.0, (1e-15,), ("x",), "", "")
    )
    tracker = CarbonTracker(
        project_name="demo",
        output_dir=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        measure_power_secs=0.5,
    )
    with tracker.start_tracking("train"):
        sum(i * i for i in range(200_000))
    metrics = tracker.stop_tracking("train")
    [alert] = metrics.alerts
    assert alert["kind"] == "carbon_regression" and alert["step"] == "train"
    [rec] = list(read_records(store, record_keys(store)))
    assert rec.alerts == [dict(alert)]


def test_cli_baseline_create_and_show(
    local_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    fill_history(local_store)
    # The CLI takes "today" from the clock, so put the history within its lookback.
    code = main(
        [
            "baseline",
            "create",
            "--store",
            local_store.uri,
            "--pipeline",
            "train",
            "--step",
            "fit",
            "--runs",
            "5",
            "--lookback-days",
            "3650",
            "--json",
        ]
    )
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["mean_kg_co2e"] == 4.0 and created["runs"] == 5
    assert (
        main(
            ["baseline", "show", "--store", local_store.uri, "--pipeline", "train", "--step", "fit"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "train/fit: mean 4000 g CO2e" in text and "over 5 runs" in text
    assert (
        main(["baseline", "show", "--store", local_store.uri, "--pipeline", "x", "--step", "y"])
        == 1
    )
    assert "no baseline for x/y" in capsys.readouterr().err
