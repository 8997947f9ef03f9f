"""The ESG report's Time shifting section: a step shifted by ``carbonpipe run --shift-within``
is counted, with its wait and the CO2 it avoided (an estimate from the time series), and a
time-shift recommendation appears only when the zone's measured history backs it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import html as esg_html
from carbonpipe.esg import report as esg_report
from carbonpipe.esg.charts import report_charts
from carbonpipe.esg.shifting import ESTIMATE_LABEL, shifting_section, time_shift_advice
from carbonpipe.intensity.registry import open_source
from carbonpipe.record import Record, make_record_id
from carbonpipe.report import read_records, record_keys
from carbonpipe.stores.local import LocalStore
from tests.schema_check import assert_valid
from tests.shift.forecast import CLEAN, DIRTY, ZONE, write_forecast

pytestmark = pytest.mark.timeout(180)

CLI = [sys.executable, "-m", "carbonpipe"]


def test_a_shifted_run_is_in_the_report_with_its_wait_and_avoided_co2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forecast, store = tmp_path / "f.csv", tmp_path / "store"
    write_forecast(forecast, clean_in_s=5, clean_for_s=6)
    env = {**os.environ, "CARBONPIPE_INTENSITY_SOURCE": f"file:{forecast}"}
    env["CARBONPIPE_INTENSITY_ZONE"] = ZONE
    out = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            "--provider",
            "gcp",
            "--region",
            "europe-west1",
            "--pipeline",
            "nightly",
            "--step",
            "fit",
            "--shift-within",
            "15s",
            "--expected-duration",
            "2s",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(1)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    local = LocalStore(store)
    [rec] = list(read_records(local, record_keys(local)))
    s = rec.scheduling
    assert s is not None and s["intensity_if_started_at_decision"] == pytest.approx(DIRTY)

    monkeypatch.setenv("CARBONPIPE_INTENSITY_SOURCE", f"file:{forecast}")
    day = rec.started_at[:10]
    agg = esg.aggregate(local, f"{day[:7]}")
    report = esg_report.build_report(agg, store=local)
    section = report["time_shifting"]
    assert (section["steps_planned"], section["steps_shifted"]) == (1, 1)
    assert section["hours_waited"] == pytest.approx(s["waited_s"] / 3600)
    facility = (rec.energy_kwh["cpu"] + rec.energy_kwh["gpu"] + rec.energy_kwh["ram"]) * rec.pue
    expected = facility * (s["intensity_if_started_at_decision"] - s["intensity_actual"]) / 1e6
    assert section["co2_avoided_kg_co2e"] == pytest.approx(expected)
    assert section["co2_avoided_kg_co2e"] > 0 and s["intensity_actual"] < DIRTY
    assert section["co2_avoided_is"] == ESTIMATE_LABEL and "estimate" in ESTIMATE_LABEL
    assert section["recommendations"] == []  # seconds of history back no hour-of-day advice
    assert_valid("esg_report", report)
    page = esg_html.report_html(report, report_charts(report))
    assert "<h2>Time shifting</h2>" in page and "estimate of the counterfactual" in page


def _history(path: Path, days: int, end: datetime) -> None:
    """Hourly history of ZONE: 500 g/kWh at 14:00 UTC, 100 at 02:00, 300 otherwise."""
    rows = ["timestamp,zone,intensity_g_per_kwh"]
    t = end - timedelta(days=days)
    while t < end:
        value = {14: 500.0, 2: 100.0}.get(t.hour, 300.0)
        rows.append(f"{t.isoformat()},{ZONE},{value}")
        t += timedelta(hours=1)
    path.write_text("\n".join(rows) + "\n")


def _record(day: str, hour: int, scheduling: dict | None = None) -> Record:
    start = datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")
    return Record(
        record_id=make_record_id("acme", "nightly", day, "fit", 1),
        project="acme",
        experiment="",
        pipeline="nightly",
        run_id=day,
        step="fit",
        team="",
        attempt=1,
        started_at=start.isoformat().replace("+00:00", "Z"),
        ended_at=(start + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        duration_s=3600.0,
        status="succeeded",
        energy_kwh={"cpu": 1.0, "gpu": 0.0, "ram": 0.0, "remote": 0.0, "total": 1.0},
        power_w={"cpu": 1000.0, "gpu": 0.0, "ram": 0.0},
        pue=1.0,
        intensity_g_per_kwh=500.0,
        emissions_kg_co2e=0.5,
        location={"provider": None, "region": None, "country_iso": "FR", "detected_by": "argument"},
        intensity_source={"name": "file", "vintage": "x", "kind": "timeseries", "zone": ZONE},
        measurement={"method": "estimate"},
        scheduling=scheduling,
    )


def test_advice_names_the_cleaner_hour_only_when_history_backs_it(tmp_path: Path) -> None:
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    path = tmp_path / "history.csv"
    _history(path, 30, end)
    records = [_record(f"2026-11-{d:02d}", 14) for d in range(1, 29)]
    [advice] = time_shift_advice(records, open_source(f"file:{path}"), now=end)
    assert (advice["usual_start_utc"], advice["best_start_utc"]) == ("14:00", "02:00")
    assert advice["saving_percent"] == 80.0
    assert advice["message"] == (
        "over the last 30 days, starting pipeline nightly at 02:00 UTC instead of 14:00 would "
        "have cut its CO2 by 80 % (FR, measured history)"
    )
    # Five days of history back nothing; neither does a pipeline already at its best hour.
    _history(path, 5, end)
    assert time_shift_advice(records, open_source(f"file:{path}"), now=end) == []
    _history(path, 30, end)
    at_best = [_record(f"2026-11-{d:02d}", 2) for d in range(1, 29)]
    assert time_shift_advice(at_best, open_source(f"file:{path}"), now=end) == []


def test_a_shift_that_cost_co2_counts_negative_and_unshifted_plans_are_not_shifted() -> None:
    base = {"decided_at": "2026-11-02T10:00:00Z", "planned_start": "2026-11-02T10:00:00Z"}
    worse = _record(
        "2026-11-02",
        12,
        {
            **base,
            "waited_s": 7200.0,
            "intensity_if_started_at_decision": CLEAN,
            "intensity_actual": DIRTY,
        },
    )
    now = _record("2026-11-03", 10, {**base, "waited_s": 0.2})
    section = shifting_section([worse, replace(now, run_id="r2")])
    assert (section["steps_planned"], section["steps_shifted"], section["steps_estimated"]) == (
        2,
        1,
        1,
    )
    assert section["hours_waited"] == pytest.approx(2.0)
    assert section["co2_avoided_kg_co2e"] == pytest.approx(1.0 * (CLEAN - DIRTY) / 1e6)


def test_the_report_recommends_the_cleaner_hour_with_its_basis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = datetime(2026, 12, 1, tzinfo=timezone.utc)
    path = tmp_path / "history.csv"
    _history(path, 30, end)
    store = LocalStore(tmp_path / "store")
    for d in range(1, 29):  # never shifted, priced with the zone's series, always at 14:00
        rec = _record(f"2026-11-{d:02d}", 14)
        store.put_if_absent(rec.key, rec.to_json())
    monkeypatch.setenv("CARBONPIPE_INTENSITY_SOURCE", f"file:{path}")
    report = esg_report.build_report(esg.aggregate(store, "2026-11"), store=store)
    section = report["time_shifting"]
    assert (section["steps_planned"], section["steps_shifted"]) == (0, 0)
    [advice] = section["recommendations"]
    assert advice["best_start_utc"] == "02:00" and advice["saving_percent"] == 80.0
    [rec] = [r for r in report["recommendations"] if r["category"] == "Time shift"]
    assert rec["recommendation"].startswith("Over the last 30 days, starting pipeline nightly")
    assert rec["estimated_saving_kg_co2e"] == pytest.approx(28 * 0.5 * 0.8)
    assert "measured hourly history" in rec["basis"]
    assert_valid("esg_report", report)
