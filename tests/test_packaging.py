"""``pip install .`` ships one import package with the three integration folders and the data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_the_top_level_folders_into_one_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("carbonpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "carbonpipe/__init__.py",
        "carbonpipe/py.typed",
        "carbonpipe/data/intensity.csv",
        "carbonpipe/data/factors.yaml",
        "carbonpipe/data/esg.yaml",
        "carbonpipe/components/__init__.py",
        "carbonpipe/components/budget_gate.yaml",
        "carbonpipe/components/tracked_command.yaml",
        "carbonpipe/components/esg_aggregate.yaml",
        "carbonpipe/operators/__init__.py",
        "carbonpipe/pipelines/__init__.py",
        "carbonpipe/pipelines/example_dags/carbonpipe_nightly_esg.py",
    ):
        assert expected in names, expected
    assert not any(
        n.startswith(("components/", "operators/", "pipelines/", "tests/")) for n in names
    )
    metadata = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "carbonpipe = carbonpipe.cli.app:main" in entry_points
    assert "[apache_airflow_provider]" in entry_points
