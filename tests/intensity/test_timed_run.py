"""Time-resolved accounting through ``carbonpipe run``: each interval at its own time's intensity."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.record import parse_utc
from carbonpipe.report import read_records, record_keys
from carbonpipe.units import kg_to_ng, kwh_to_nwh

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 2.5: pass"


def _second_file(path: Path, t0: datetime, change_at: int, seconds: int) -> Path:
    """One row a second for zone BE: 100 g/kWh before ``t0 + change_at``, 400 from then on."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "zone", "intensity_g_per_kwh"])
        for s in range(-5, seconds):
            when = t0 + timedelta(seconds=s)
            writer.writerow(
                [when.strftime("%Y-%m-%dT%H:%M:%SZ"), "BE", 100 if s < change_at else 400]
            )
    return path


def _run(store: Path, env: dict[str, str], code: str = BUSY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            "--step",
            "busy",
            *WHERE,
            "--",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def _records(store: Path) -> list:
    opened = open_store(str(store))
    return list(read_records(opened, record_keys(opened)))


def _intensity(t: datetime, t0: datetime, change_at: int) -> Fraction:
    """The file's value at ``t`` (rows every whole second from t0 - 5 s)."""
    return Fraction(100 if t < t0 + timedelta(seconds=change_at) else 400)


def _hand_priced(rec: object, t0: datetime, change_at: int) -> int:
    """sum_i round(nWh_i x PUE x I_i / 1000), I_i the time-weighted mean over interval i."""
    started = parse_utc(rec.started_at)  # type: ignore[attr-defined]
    points = rec.energy_profile["points"]  # type: ignore[attr-defined]
    change = t0 + timedelta(seconds=change_at)
    total = 0
    for i, (offset, nwh) in enumerate(points):
        end_offset = points[i + 1][0] if i + 1 < len(points) else rec.duration_s  # type: ignore[attr-defined]
        a = started + timedelta(milliseconds=round(offset * 1000))
        b = started + timedelta(milliseconds=round(end_offset * 1000))
        us = lambda d: d // timedelta(microseconds=1)  # noqa: E731
        before = max(min(b, change) - a, timedelta(0))
        after = max(b - max(a, change), timedelta(0))
        length = us(b - a)
        mean = (
            (100 * Fraction(us(before)) + 400 * Fraction(us(after))) / length
            if length
            else _intensity(a, t0, change_at)
        )
        exact = nwh * Fraction(rec.pue) * mean / 1000  # type: ignore[attr-defined]
        total += round(exact)  # Fraction rounds half to even, as units.py does
    return total


def test_a_step_spanning_an_intensity_change_is_the_sum_of_its_intervals(tmp_path: Path) -> None:
    t0 = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    # The intensity rises from 100 to 400 g/kWh about 1.5 s into the ~2.5 s step.
    path = _second_file(tmp_path / "grid.csv", t0, change_at=2, seconds=120)
    time.sleep(max((t0 - datetime.now(timezone.utc)).total_seconds() + 0.5, 0))
    out = _run(
        tmp_path / "store",
        {
            "CARBONPIPE_INTENSITY_SOURCE": f"file:{path}",
            "CARBONPIPE_INTENSITY_ZONE": "BE",
            "CARBONPIPE_MEASURE_POWER_SECS": "0.5",
        },
    )
    assert out.returncode == 0, out.stderr
    [rec] = _records(tmp_path / "store")
    src = rec.intensity_source
    assert (src["kind"], src["name"], src["zone"], src["signal"]) == (
        "timeseries",
        "file",
        "BE",
        "average",
    )
    assert src["resolution_s"] == 1.0 and src["points_used"] >= 2
    points = rec.energy_profile["points"]
    assert len(points) >= 3, points  # sampled every 0.5 s over ~2.5 s
    local = rec.energy_kwh["cpu"] + rec.energy_kwh["gpu"] + rec.energy_kwh["ram"]
    assert sum(n for _, n in points) == kwh_to_nwh(local)
    assert kg_to_ng(rec.emissions_kg_co2e) == _hand_priced(rec, t0, change_at=2)
    # Both intensities were used: the effective value lies strictly between them.
    assert 100 < rec.intensity_g_per_kwh < 400
    assert not [e for e in rec.tracking_errors if "intensity source" in e or "time-resolved" in e]


def test_a_failing_source_falls_back_to_the_table_and_says_why(tmp_path: Path) -> None:
    # A file that cannot be read at the start is refused then (tests/intensity/
    # test_file_source.py); one that fails only at the stop (a zone it lacks, or removed while
    # the step ran) prices the step with the table and says why.
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    path = _second_file(tmp_path / "grid.csv", t0, change_at=2, seconds=120)
    gone = _second_file(tmp_path / "gone.csv", t0, change_at=2, seconds=120)
    removes = f"import os, time\nos.remove({str(gone)!r})\n{BUSY}"
    cases = {
        "missing": (
            {"CARBONPIPE_INTENSITY_SOURCE": f"file:{gone}", "CARBONPIPE_INTENSITY_ZONE": "BE"},
            removes,
        ),
        "zone": (
            {"CARBONPIPE_INTENSITY_SOURCE": f"file:{path}", "CARBONPIPE_INTENSITY_ZONE": "FR"},
            BUSY,
        ),
    }
    for name, (env, code) in cases.items():
        store = tmp_path / name
        out = _run(store, env, code)
        assert out.returncode == 0, out.stderr
        assert name != "missing" or not gone.exists()
        [rec] = _records(store)
        assert rec.intensity_source["kind"] == "cloud_region", name  # the table's figure
        assert rec.energy_profile["points"], name
        why = [e for e in rec.tracking_errors if "intensity source" in e]
        assert why, (name, rec.tracking_errors)
        assert ("cannot read it" if name == "missing" else "'FR'") in why[0]


def test_carbon_yaml_names_the_file_and_the_zone_comes_from_the_cloud_region(
    tmp_path: Path,
) -> None:
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    path = _second_file(tmp_path / "grid.csv", t0, change_at=10**6, seconds=600)
    config = tmp_path / "carbon.yaml"
    config.write_text(f"intensity:\n  source: 'file:{path}'\n")
    out = _run(tmp_path / "store", {"CARBONPIPE_CONFIG": str(config)})
    assert out.returncode == 0, out.stderr
    [rec] = _records(tmp_path / "store")
    # gcp/europe-west1 is Electricity Maps' BE; the whole step at 100 g/kWh.
    assert (rec.intensity_source["kind"], rec.intensity_source["zone"]) == ("timeseries", "BE")
    assert rec.intensity_g_per_kwh == pytest.approx(100.0, rel=1e-6)
