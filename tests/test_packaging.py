"""``pip install .`` ships one import package with the three integration folders and the data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked_copy(dest: Path) -> Path:
    """Copy the files git tracks: a build in the working tree would leave ``build/`` there, and a
    stale ``build/lib`` would hide a file the package data no longer ships."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def test_wheel_maps_the_top_level_folders_into_one_package(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("carbonpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "carbonpipe/__init__.py",
        "carbonpipe/py.typed",
        "carbonpipe/intensity/data/intensity.csv",
        "carbonpipe/data/factors.yaml",
        "carbonpipe/schemas/__init__.py",
        "carbonpipe/schemas/table.py",
        "carbonpipe/schemas/record.v2.json",
        "carbonpipe/schemas/charge.v2.json",
        "carbonpipe/schemas/baseline.v1.json",
        "carbonpipe/schemas/esg_report.v1.json",
        "carbonpipe/esg/data/esg.yaml",
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
