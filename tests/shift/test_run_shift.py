"""``carbonpipe run --shift-within``: the command starts when the forecast is cleanest, within
the deadline; a signal while waiting ends the wrapper without starting it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys
from tests.shift.forecast import CLEAN, DIRTY, ZONE, write_forecast

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "carbonpipe"]
WHERE = ["--provider", "gcp", "--region", "europe-west1"]


def _env(forecast: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CARBONPIPE_INTENSITY_SOURCE": f"file:{forecast}",
        "CARBONPIPE_INTENSITY_ZONE": ZONE,
    }


def _records(store: Path) -> list[Record]:
    s = open_store(str(store))
    return list(read_records(s, record_keys(s)))


def _command(marker: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        f"import time; open({str(marker)!r}, 'w').write(repr(time.time()))",
    ]


def test_the_command_starts_at_the_cleanest_second_and_the_record_says_so(tmp_path: Path) -> None:
    forecast, store, marker = tmp_path / "f.csv", tmp_path / "store", tmp_path / "started"
    clean_at = write_forecast(forecast, clean_in_s=5, clean_for_s=4)
    decided = time.time()
    out = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            *WHERE,
            "--step",
            "fit",
            "--shift-within",
            "10s",
            "--expected-duration",
            "2s",
            "--",
            *_command(marker),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env=_env(forecast),
    )
    assert out.returncode == 0, out.stderr
    started = float(marker.read_text())
    # Never before the clean second; a loaded machine may start the command a little late.
    assert -0.5 <= started - clean_at <= 3.0, (started - clean_at, out.stderr)
    assert "fit starts at" in out.stderr and "cleaner" in out.stderr
    [record] = _records(store)
    s = record.scheduling
    assert s is not None
    assert s["planned_start"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clean_at)))
    assert s["waited_s"] == pytest.approx(clean_at - decided, abs=3.0)  # less its start-up
    # Means over the run's window: equal to the forecast's values up to float rounding.
    assert (s["intensity_at_decision"], s["intensity_planned"]) == pytest.approx((DIRTY, CLEAN))
    # The 2-second-ish run lies in the clean window: measured from the series, not the plan.
    assert s["intensity_actual"] == pytest.approx(CLEAN, abs=(DIRTY - CLEAN) * 0.6)
    assert s["intensity_actual_from"] == "history"
    assert s["intensity_if_started_at_decision"] == pytest.approx(DIRTY)
    assert s["source"]["name"] == "file" and s["source"]["zone"] == ZONE
    assert s["expected_duration_s"] == 2.0


def test_no_forecast_starts_at_once_and_says_why(tmp_path: Path) -> None:
    store, marker = tmp_path / "store", tmp_path / "started"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBONPIPE_INTENSITY_")}
    t0 = time.time()
    out = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            *WHERE,
            "--step",
            "fit",
            "--shift-within",
            "6h",
            "--expected-duration",
            "1h",
            "--",
            *_command(marker),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert float(marker.read_text()) - t0 < 30
    assert "fit starts now: no time-series intensity source" in out.stderr
    [record] = _records(store)
    assert record.scheduling is not None and record.scheduling["waited_s"] < 30
    assert "no time-series intensity source" in record.scheduling["reason"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_ends_the_wrapper_and_the_command_never_runs(
    tmp_path: Path, sig: signal.Signals
) -> None:
    forecast, store, marker = tmp_path / "f.csv", tmp_path / "store", tmp_path / "started"
    write_forecast(forecast, clean_in_s=20, clean_for_s=5)
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            *WHERE,
            "--step",
            "fit",
            "--shift-within",
            "30s",
            "--expected-duration",
            "2s",
            "--",
            *_command(marker),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(forecast),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "fit starts at ...": the wrapper is waiting
    assert "fit starts at" in line, line
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 128 + sig
    assert f"{sig.name} while waiting" in proc.stderr.read()
    time.sleep(0.5)
    assert not marker.exists()
    assert not store.exists() or _records(store) == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--shift-within", "6 hours", "--expected-duration", "1h"], "--shift-within"),
        (["--shift-within", "6h", "--expected-duration", "soon"], "--expected-duration"),
        (["--expected-duration", "1h"], "--expected-duration: goes with --shift-within"),
        (["--shift-within", "6h"], "give --expected-duration"),
    ],
)
def test_bad_durations_are_refused_before_anything_runs(
    tmp_path: Path, options: list[str], named: str
) -> None:
    marker = tmp_path / "started"
    out = subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(tmp_path / "store"),
            *WHERE,
            *options,
            "--",
            *_command(marker),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 2 and named in out.stderr, out.stderr
    assert not marker.exists()


def test_the_expected_duration_defaults_to_the_steps_last_run_and_a_budget_still_gates(
    tmp_path: Path,
) -> None:
    forecast, store, marker = tmp_path / "f.csv", tmp_path / "store", tmp_path / "started"
    base = [*CLI, "run", "--store", str(store), *WHERE, "--pipeline", "p", "--step", "fit"]
    first = subprocess.run(
        [*base, "--", sys.executable, "-c", "import time; time.sleep(1.5)"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert first.returncode == 0, first.stderr
    write_forecast(forecast, clean_in_s=5, clean_for_s=6)
    budget = ["--budget-scope", "pipeline:p", "--budget-kg", "1", "--budget-estimate-kg", "0.001"]
    out = subprocess.run(
        [*base, *budget, "--shift-within", "15s", "--", *_command(marker)],
        capture_output=True,
        text=True,
        timeout=100,
        env=_env(forecast),
    )
    assert out.returncode == 0, out.stderr
    [shifted] = [r for r in _records(store) if r.scheduling is not None]
    assert shifted.scheduling is not None
    assert 1.4 <= shifted.scheduling["expected_duration_s"] <= 5.0  # the first run's duration
    assert shifted.scheduling["intensity_planned"] == pytest.approx(CLEAN), out.stderr
    assert shifted.scheduling["waited_s"] > 0.5, out.stderr
