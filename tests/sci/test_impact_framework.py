"""The Impact Framework recomputes our SCI: ``carbonpipe export --format impact-framework``,
then the framework's own CLI (``if-run`` of ``@grnsft/if`` 1.1.0, from the npm registry)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carbonpipe import CarbonTracker, open_store
from carbonpipe.esg.impact_framework import IF_VERSION, sci_by_unit
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys
from carbonpipe.trace import attribute

ROOT = Path(__file__).resolve().parents[2]
IF_DIR = ROOT / ".venv" / "if"  # `make if-cli` installs it here (inside the ignored .venv)
IF_RUN = IF_DIR / "node_modules" / ".bin" / "if-run"
TRACE = {"x_carbon_trace": {"emissions_g_co2": 0.52, "energy_consumed_wh": 1.5}}


def _if_run() -> Path:
    """The framework's CLI: installed by ``make if-cli``; installed here if it is missing."""
    if not IF_RUN.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the Impact Framework CLI cannot be installed")
        subprocess.run(
            [npm, "install", "--prefix", str(IF_DIR), "--no-audit", "--no-fund",
             "--loglevel=error", f"@grnsft/if@{IF_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
    return IF_RUN


def _records(store: Path) -> list[Record]:
    s = open_store(str(store))
    return list(read_records(s, record_keys(s)))


def _tracker(store: Path, **kwargs: str) -> CarbonTracker:
    return CarbonTracker(
        project_name="p",
        pipeline="serving",
        output_dir=str(store),
        cloud_provider="aws",
        cloud_region="eu-west-1",
        pue=1.2,
        measure_power_secs=0.5,
        **kwargs,
    )


def _make_records(store: Path) -> None:
    tracker = _tracker(store, functional_unit="training run")
    with tracker.start_tracking("train"):
        sum(i * i for i in range(200_000))
    for n in (600, 400):
        with tracker.start_tracking("serve") as step:
            sum(i * i for i in range(100_000))
            attribute(TRACE, server="http://llm:8000")  # a remote model server's own carbon
            step.add_units(n, "inference")
    with _tracker(store).start_tracking("prep"):  # no units: no SCI, not in the manifest
        pass
    run = [sys.executable, "-m", "carbonpipe", "run", "--store", str(store), "--pipeline"]
    done = subprocess.run(
        [*run, "serving", "--provider", "gcp", "--region", "europe-west1", "--step", "batch",
         "--units", "250", "--unit", "inference", "--", sys.executable, "-c", "pass"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_if_run_recomputes_our_sci(tmp_path: Path) -> None:
    if_run = _if_run()
    store = tmp_path / "store"
    _make_records(store)
    records = _records(store)
    manifest = tmp_path / "exported.yml"
    with manifest.open("w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "carbonpipe", "export", "--format", "impact-framework",
             "--store", str(store), "--pipeline", "serving"],
            stdout=fh, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "4 record(s) with functional units" in done.stderr
    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run(
        [str(if_run), "--manifest", str(manifest), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert out["execution"]["status"] == "success", out["execution"]
    assert out["execution"]["environment"]["if-version"] == IF_VERSION
    by_id = {r.record_id: r for r in records}
    components = out["tree"]["children"]
    assert set(components) == {"inference", "training run"}
    seen = 0
    for unit, node in components.items():
        for row in node["outputs"]:
            rec = by_id[row["carbonpipe/record-id"]]
            assert rec.functional_units is not None and rec.functional_units["name"] == unit
            assert rec.sci_g_per_unit is not None
            assert math.isclose(row["sci"], rec.sci_g_per_unit, rel_tol=1e-9)
            seen += 1
        # The pipeline's SCI per unit: the framework's totals, divided.
        agg = node["aggregated"]
        ours = sci_by_unit(records)[unit]
        assert math.isclose(agg["carbon"] / agg["functional-units"], ours, rel_tol=1e-9)
    assert seen == 4
    serve = [r for r in records if r.step == "serve"]
    assert all(r.remote and r.sci_g_per_unit for r in serve)  # remote carbon is in O
