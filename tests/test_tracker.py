"""CarbonTracker end to end: real meter sidecar, real store, real intensity table."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from carbonpipe import (
    Budget,
    BudgetExceeded,
    CarbonTracker,
    carbon_tracked,
    current_step,
    open_store,
)
from carbonpipe.hardware.pue import resolve_pue
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys


def _busy(n: int = 200_000) -> int:
    return sum(i * i for i in range(n))


def _tracker(tmp_path: Path, **kwargs: object) -> CarbonTracker:
    kwargs.setdefault("cloud_provider", "gcp")
    kwargs.setdefault("cloud_region", "europe-west1")
    return CarbonTracker(
        project_name="sustainable-ml",
        experiment_name="carbon-demo",
        output_dir=str(tmp_path / "store"),
        measure_power_secs=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def _records(tmp_path: Path) -> list[Record]:
    store = open_store(str(tmp_path / "store"))
    return list(read_records(store, record_keys(store)))


def test_context_manager_measures_prices_and_records_the_step(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    with tracker.start_tracking("model_training"):
        _busy()
    m = tracker.stop_tracking("model_training")
    expected = lookup_intensity("gcp", "europe-west1")
    assert m.status == "succeeded"
    assert m.energy_consumed_kwh > 0
    assert m.cpu_energy_kwh > 0 and m.ram_energy_kwh > 0 and m.gpu_energy_kwh == 0
    assert m.carbon_intensity_g_per_kwh == expected.intensity_g_per_kwh
    pue, _ = resolve_pue("gcp", "europe-west1")  # the region's published PUE (1.09)
    assert m.emissions_kg_co2 == pytest.approx(
        m.energy_consumed_kwh * pue * expected.intensity_g_per_kwh / 1000
    )
    assert m.duration_s > 0
    assert (tracker.cloud_provider, tracker.cloud_region) == ("gcp", "europe-west1")
    [rec] = _records(tmp_path)
    assert rec.record_id == m.record_id
    assert rec.step == "model_training" and rec.project == "sustainable-ml"
    assert rec.experiment == "carbon-demo" and rec.pipeline == "sustainable-ml"
    assert rec.location["detected_by"] == "argument"
    assert rec.intensity_source == expected.to_source_dict()
    assert rec.measurement["method"] in ("rapl", "cpu_load", "tdp", "nvml")
    assert rec.measurement["codecarbon_version"].startswith("3.3")
    assert rec.energy_kwh["total"] == pytest.approx(m.energy_consumed_kwh)
    assert set(m.emissions_comparison()) == {
        "smartphone_charges",
        "car_distance",
        "tree_absorption",
        "led_bulb",
    }


def test_stop_tracking_is_idempotent_and_defaults_to_the_last_step(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    tracker.start_tracking("a")
    _busy(10_000)
    first = tracker.stop_tracking("a")
    assert tracker.stop_tracking("a") is first
    assert tracker.stop_tracking() is first
    with tracker.start_tracking("b"):
        pass
    assert tracker.stop_tracking().step == "b"
    with pytest.raises(ValueError, match="never started"):
        tracker.stop_tracking("zzz")
    assert len(_records(tmp_path)) == 2


def test_failing_step_is_recorded_and_its_exception_propagates_unchanged(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    boom = RuntimeError("training diverged")
    with pytest.raises(RuntimeError) as info, tracker.start_tracking("train"):
        raise boom
    assert info.value is boom
    m = tracker.stop_tracking("train")
    assert m.status == "failed"
    [rec] = _records(tmp_path)
    assert rec.status == "failed"


def test_repeated_step_names_are_separate_attempts(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    for _ in range(2):
        with tracker.start_tracking("train"):
            pass
    recs = sorted(_records(tmp_path), key=lambda r: r.attempt)
    assert [r.attempt for r in recs] == [1, 2]
    assert recs[0].record_id != recs[1].record_id
    assert recs[0].run_id == recs[1].run_id == tracker.run_id


def test_decorators_track_sync_and_async_functions(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)

    @tracker.track("square")
    def square(x: int) -> int:
        return x * x

    @tracker.track()
    async def fetch() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    assert square(7) == 49
    assert asyncio.run(fetch()) == "ok"

    @carbon_tracked(
        step="standalone",
        output_dir=str(tmp_path / "store"),
        cloud_provider="aws",
        cloud_region="eu-north-1",
    )
    def standalone() -> str:
        return "done"

    assert standalone() == "done"
    steps = sorted(r.step for r in _records(tmp_path))
    assert steps == ["fetch", "square", "standalone"]
    assert standalone.carbon_tracker.get_total_emissions() > 0  # type: ignore[attr-defined]


def test_summary_report_and_totals(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    for step in ("prep", "train"):
        with tracker.start_tracking(step):
            _busy(50_000)
    report = tracker.get_summary_report()
    assert report["summary"]["steps"] == 2
    total = sum(s["emissions_kg_co2e"] for s in report["steps"])
    assert report["summary"]["total_emissions_kg_co2"] == pytest.approx(total)
    assert tracker.get_total_emissions() == pytest.approx(total)
    assert [s["step"] for s in report["steps"]] == ["prep", "train"]


def test_regional_recommendations_quantify_savings(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path, cloud_region="asia-south1")
    recs = tracker.get_regional_recommendations()
    assert recs and all(isinstance(r, str) for r in recs)
    from carbonpipe.intensity.table import regional_recommendations

    kinds = [r.kind for r in regional_recommendations("gcp", "asia-south1")]
    for text, kind in zip(recs, kinds, strict=True):
        if kind == "region":
            assert "% lower" in text
        else:  # no hourly data: time-shifting advice carries no number
            assert not any(ch.isdigit() for ch in text)
    assert "region" in kinds


def test_env_location_applies_when_no_argument_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_CLOUD_PROVIDER", "aws")
    monkeypatch.setenv("CARBONPIPE_CLOUD_REGION", "eu-west-1")
    tracker = CarbonTracker(project_name="p", output_dir=str(tmp_path / "store"))
    assert (tracker.cloud_provider, tracker.cloud_region) == ("aws", "eu-west-1")
    assert tracker.location.detected_by == "env"


def test_budget_gates_a_step_before_it_runs(tmp_path: Path) -> None:
    budget = Budget(
        scope="pipeline:gated", period="month", limit_kg_co2e=1e-6, default_step_estimate_kg=1e-3
    )
    tracker = _tracker(tmp_path, pipeline="gated", budget=budget)
    ran = []
    with pytest.raises(BudgetExceeded) as info, tracker.start_tracking("train"):
        ran.append(True)
    assert ran == []
    assert info.value.limit_kg == pytest.approx(1e-6)
    assert info.value.estimate_kg == pytest.approx(1e-3)
    assert _records(tmp_path) == []


def test_remote_energy_from_model_servers_is_charged_to_the_step(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    with tracker.start_tracking("infer"):
        step = current_step()
        assert step is not None
        step.add_remote("http://llm:8000", energy_kwh=0.002, emissions_kg_co2e=0.0005)
        step.add_remote("http://llm:8000", energy_kwh=0.001, emissions_kg_co2e=0.00025)
    assert current_step() is None
    m = tracker.stop_tracking()
    [rec] = _records(tmp_path)
    assert rec.energy_kwh["remote"] == pytest.approx(0.003)
    assert rec.remote == [
        {
            "server": "http://llm:8000",
            "count": 2,
            "energy_kwh": pytest.approx(0.003),
            "emissions_kg_co2e": pytest.approx(0.00075),
        }
    ]
    assert m.emissions_kg_co2 > 0.00075


def test_store_down_never_breaks_the_step_and_the_record_is_spooled(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store folder should be")
    tracker = CarbonTracker(
        project_name="p",
        output_dir=str(blocker / "store"),
        cloud_provider="gcp",
        cloud_region="us-central1",
    )
    with tracker.start_tracking("train"):
        result = 42
    assert result == 42
    m = tracker.stop_tracking()
    from carbonpipe.stores import spool

    pending = spool.pending()
    assert [p.key for p in pending if p.key.startswith("records/")] == [m.record.key]
    assert all(p.key.startswith(("records/", "budgets/")) for p in pending)
    blocker.unlink()
    report = spool.replay()
    assert report.delivered == len(pending) and report.remaining == 0
    store = open_store(str(blocker / "store"))
    [rec] = list(read_records(store, record_keys(store)))
    assert rec.record_id == m.record_id


def test_codecarbon_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "codecarbon").mkdir(parents=True)
    (broken / "codecarbon" / "__init__.py").write_text(
        "raise ImportError('codecarbon is broken here')\n"
    )
    script = textwrap.dedent(
        f"""
        import json
        from carbonpipe import CarbonTracker
        t = CarbonTracker(project_name="p", output_dir={str(tmp_path / "store")!r}, country_iso_code="FR")
        with t.start_tracking("train"):
            value = sum(range(100000))
        m = t.stop_tracking()
        print(json.dumps({{"value": value, "method": m.record.measurement["method"], "errors": list(m.tracking_errors), "kwh": m.energy_consumed_kwh}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{broken}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["value"] == sum(range(100000))
    assert data["method"] == "estimate"
    assert any("codecarbon" in e.lower() for e in data["errors"])
    assert data["kwh"] > 0
    [rec] = _records(tmp_path)
    assert rec.tracking_errors


def test_regression_above_the_baseline_is_alerted_and_can_fail_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carbonpipe.baseline import Baseline, clear_cache, save_baseline
    from carbonpipe.errors import CarbonRegression

    store = open_store(str(tmp_path / "store"))
    tiny = 1e-15  # any real step emits far more than this
    save_baseline(
        store,
        Baseline(
            pipeline="sustainable-ml",
            step="train",
            mean_kg_co2e=tiny,
            std_kg_co2e=0.0,
            samples_kg_co2e=(tiny,) * 3,
            record_ids=("a", "b", "c"),
            first_ended_at="2026-11-01T00:00:00Z",
            last_ended_at="2026-11-02T00:00:00Z",
        ),
    )
    clear_cache()
    warn = _tracker(tmp_path)
    with warn.start_tracking("train"):
        _busy(20_000)
    m = warn.stop_tracking()
    assert [a["action"] for a in m.alerts] == ["warn"]
    assert not m.regression_failed
    m.raise_for_regression()  # a warning only

    clear_cache()
    monkeypatch.setenv("CARBONPIPE_REGRESSION", "fail")
    strict = _tracker(tmp_path)
    with strict.start_tracking("train"):
        _busy(20_000)
    failed = strict.stop_tracking()
    assert failed.regression_failed
    with pytest.raises(CarbonRegression, match="above its baseline"):
        failed.raise_for_regression()
    recs = [r for r in _records(tmp_path) if r.step == "train"]
    assert len(recs) == 2 and all(r.alerts for r in recs)


def test_a_step_without_a_budget_loads_only_the_ledger_write_side(tmp_path: Path) -> None:
    # The step's own time is what tracking must not eat: a fresh process (as a KFP step is)
    # charges its record through carbonpipe.budgets.charges and never imports the gate and status
    # machinery of carbonpipe.budgets.ledger, nor the comparison factors no log line asks for.
    script = textwrap.dedent(
        f"""
        import json, sys
        from carbonpipe import CarbonTracker
        tracker = CarbonTracker(project_name="p", output_dir={str(tmp_path / "store")!r},
                                cloud_provider="gcp", cloud_region="europe-west1")
        with tracker.start_tracking("train"):
            sum(range(1000))
        m = tracker.stop_tracking("train")
        watched = ("carbonpipe", "yaml", "fractions", "zipfile", "difflib", "tempfile")
        print(json.dumps({{"modules": sorted(n for n in sys.modules if n.startswith(watched)),
                          "errors": list(m.tracking_errors)}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert "carbonpipe.budgets.charges" in seen["modules"]
    assert "carbonpipe.budgets.ledger" not in seen["modules"]
    assert "carbonpipe.impact" not in seen["modules"] and "yaml" not in seen["modules"]
    # Nor what only another configuration needs (P1 in the README: each of these cost a step
    # of the table source, with its location named and a healthy store, a few milliseconds):
    # the time-series machinery, the spool (nothing waits there), the instance table (no type
    # given), the metadata probes, and the stdlib modules they pulled in.
    for unneeded in (
        "carbonpipe.intensity.timed",
        "carbonpipe.intensity.registry",
        "carbonpipe.intensity.file",  # read before a step only when a file: source is set
        "carbonpipe.stores.spool",
        "carbonpipe.stores.quarantine",
        "carbonpipe.hardware.instances",
        "carbonpipe.location.http",
        "carbonpipe.location.imds",
        "fractions",
        "zipfile",
        "difflib",
        "tempfile",
    ):
        assert unneeded not in seen["modules"], unneeded
    charges = list((tmp_path / "store" / "budgets" / "pipeline=p" / "charges").rglob("*.json"))
    assert len(charges) == 1  # the record was still charged, for budgets set later


def test_warming_the_stop_path_resolves_the_location_before_the_step_ends(
    tmp_path: Path,
) -> None:
    tracker = _tracker(tmp_path)
    handle = tracker.start_tracking("train")
    tracker._warm_stop_path(summary=True)  # what `carbonpipe run` does while its command runs
    assert tracker._location is not None and tracker._intensity is not None
    assert tracker._location.region == "europe-west1"
    m = tracker.stop_tracking("train")
    assert (
        handle.metrics is m
        and m.carbon_intensity_g_per_kwh == tracker.intensity.intensity_g_per_kwh
    )
