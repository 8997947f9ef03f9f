"""``carbonpipe export --format codecarbon``: records of real tracked steps as CodeCarbon 3.3's
``emissions.csv``, loaded with pandas the way CodeCarbon's own file loads."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from codecarbon.output_methods.emissions_data import EmissionsData
from codecarbon.output_methods.file import FileOutput

from carbonpipe import open_store
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys
from carbonpipe.units import kg_to_ng

CLI = [sys.executable, "-m", "carbonpipe"]
# CodeCarbon 3.3's columns and their declared types, read from the installed package.
FIELDS = {f.name: f.type for f in dataclasses.fields(EmissionsData)}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLI + list(args),
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three steps tracked by ``carbonpipe run``: in France, in GCP europe-west1 at PUE 1.2,
    and one that fails."""
    root = tmp_path_factory.mktemp("export") / "store"
    env = {
        "CARBONPIPE_SPOOL_DIR": str(root.parent / "spool"),
        "CARBONPIPE_CONFIG": str(root.parent / "none.yaml"),
    }
    steps = [
        (["--country", "FRA"], ["true"], {}),
        (["--provider", "gcp", "--region", "europe-west1"], ["true"], {"CARBONPIPE_PUE": "1.2"}),
        (["--country", "FRA"], ["false"], {}),
    ]
    for i, (where, cmd, extra) in enumerate(steps):
        done = _cli(
            "run",
            "--store",
            str(root),
            "--pipeline",
            "nightly",
            "--step",
            f"s{i}",
            "--run-id",
            "run-1",
            *where,
            "--",
            *cmd,
            env={**env, **extra},
        )
        assert done.returncode == (1 if cmd == ["false"] else 0), done.stderr
    return root


def _export(store: Path, *extra: str) -> str:
    done = _cli("export", "--format", "codecarbon", "--store", str(store), *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _codecarbon_values(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the Python values CodeCarbon's tracker would hold: its declared types,
    ints where the text is an int (as CodeCarbon's counts are), None for an empty cell."""
    values: dict[str, Any] = {}
    for name, text in row.items():
        if text == "":
            values[name] = None
        elif FIELDS[name] in (float, "float"):
            values[name] = int(text) if text.lstrip("-").isdigit() else float(text)
        else:
            values[name] = text
    return values


def test_the_export_has_codecarbons_columns_and_loads_with_its_dtypes(
    store: Path, tmp_path: Path
) -> None:
    text = _export(store)
    ours = pd.read_csv(io.StringIO(text))
    assert list(ours.columns) == list(FIELDS)
    assert len(ours) == 3

    # The same rows written by CodeCarbon's own FileOutput from EmissionsData: same dtypes.
    out = FileOutput("emissions.csv", str(tmp_path), on_csv_write="append")
    for row in csv.DictReader(io.StringIO(text)):
        out.out(EmissionsData(**_codecarbon_values(row)), None)
    theirs = pd.read_csv(tmp_path / "emissions.csv")
    assert dict(ours.dtypes) == dict(theirs.dtypes)
    # Every column CodeCarbon declares a float loads as a number; every text column as text
    # (or as empty: NaN), as in CodeCarbon's files.
    for name, kind in FIELDS.items():
        if kind in (float, "float"):
            assert pd.api.types.is_numeric_dtype(ours[name]), name
        else:
            assert pd.api.types.is_string_dtype(ours[name]) or ours[name].isna().all(), name
    for name in ("emissions", "duration", "cpu_energy", "energy_consumed", "pue", "ram_total_size"):
        assert ours[name].dtype == "float64", name


def test_the_export_holds_the_records_figures_in_codecarbons_units(store: Path) -> None:
    s = open_store(str(store))
    records = {r.record_id: r for r in read_records(s, record_keys(s))}
    rows = list(csv.DictReader(io.StringIO(_export(store))))
    assert sorted(row["run_id"] for row in rows) == sorted(records)
    for row in rows:
        rec: Record = records[row["run_id"]]
        pue = rec.pue
        assert float(row["emissions"]) == rec.emissions_kg_co2e  # kg, exactly
        assert float(row["duration"]) == rec.duration_s  # s
        for part in ("cpu", "gpu", "ram"):  # kWh and W, with the PUE as CodeCarbon counts them
            assert float(row[f"{part}_energy"]) == rec.energy_kwh[part] * pue
            assert float(row[f"{part}_power"]) == rec.power_w[part] * pue
        local = sum(rec.energy_kwh[p] * pue for p in ("cpu", "gpu", "ram"))
        assert float(row["energy_consumed"]) == local + rec.energy_kwh["remote"]
        assert float(row["emissions_rate"]) == rec.emissions_kg_co2e / rec.duration_s  # kg/s
        assert float(row["pue"]) == pue
        assert row["timestamp"] == rec.ended_at[:19]  # UTC, CodeCarbon's format
        assert row["experiment_id"] == rec.run_id == "run-1"
        m = rec.measurement
        assert row["os"] == m["os"] and row["python_version"] == m["python_version"]
        assert int(row["cpu_count"]) == m["cpu_count"] == os.cpu_count()
        assert float(row["ram_total_size"]) == m["ram_total_size_gib"] > 0
        if rec.location["provider"] == "gcp":
            assert pue == 1.2
            assert (row["on_cloud"], row["cloud_provider"], row["cloud_region"]) == (
                "Y",
                "gcp",
                "europe-west1",
            )
            assert (row["country_iso_code"], row["country_name"]) == ("BEL", "Belgium")
            assert row["latitude"] and row["longitude"]
        else:
            assert (row["on_cloud"], row["country_iso_code"], row["country_name"]) == (
                "N",
                "FRA",
                "France",
            )


def test_the_exported_emissions_sum_to_the_report_to_the_nanogram(store: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(_export(store))))
    report = json.loads(_cli("report", "--store", str(store), "--json").stdout)
    assert sum(kg_to_ng(float(row["emissions"])) for row in rows) == report["emissions_ng"]
    assert len(rows) == report["records"] == 3


def test_period_and_pipeline_select_the_rows(store: Path) -> None:
    header = ",".join(FIELDS)
    assert _export(store, "--period", "2001-01").strip() == header
    assert _export(store, "--pipeline", "other").strip() == header
    s = open_store(str(store))
    [month] = {r.ended_at[:7] for r in read_records(s, record_keys(s))}
    assert len(list(csv.DictReader(io.StringIO(_export(store, "--period", month))))) == 3
    rows = list(csv.DictReader(io.StringIO(_export(store, "--pipeline", "nightly"))))
    assert len(rows) == 3
    bad = _cli("export", "--format", "codecarbon", "--store", str(store), "--period", "soon")
    assert bad.returncode == 2 and "period" in bad.stderr


_REAL = textwrap.dedent(
    """
    import sys, time
    from codecarbon import OfflineEmissionsTracker
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA", output_dir=sys.argv[1], log_level="error",
        allow_multiple_runs=True, measure_power_secs=1,
    )
    tracker.start()
    time.sleep(0.2)
    tracker.stop()
    """
)


def test_the_export_appends_to_an_emissions_csv_codecarbon_itself_wrote(
    store: Path, tmp_path: Path
) -> None:
    subprocess.run([sys.executable, "-c", _REAL, str(tmp_path)], check=True, timeout=180)
    real = tmp_path / "emissions.csv"
    theirs = pd.read_csv(real)
    ours = pd.read_csv(io.StringIO(_export(store)))
    assert list(ours.columns) == list(theirs.columns)
    both = pd.concat([theirs, ours], ignore_index=True)
    for name, kind in FIELDS.items():  # CodeCarbon's number columns stay numbers with ours
        if kind in (float, "float"):
            assert pd.api.types.is_numeric_dtype(both[name]), name
    assert both["emissions"].sum() == pytest.approx(
        theirs["emissions"].sum() + ours["emissions"].sum()
    )
