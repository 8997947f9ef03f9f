"""The ESG report's SCI section through ``carbonpipe esg``: per pipeline and unit, disclosed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import jsonschema

from carbonpipe import CarbonTracker, open_store
from carbonpipe.esg.impact_framework import sci_by_unit
from carbonpipe.report import read_records, record_keys
from carbonpipe.schemas.table import load_schema


def test_the_esg_report_has_an_sci_section_per_pipeline_and_unit(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for pipeline, unit in (("serving", None), ("training", "training run")):
        tracker = CarbonTracker(
            project_name="p",
            pipeline=pipeline,
            output_dir=str(store),
            cloud_provider="gcp",
            cloud_region="europe-west1",
            pue=1.1,
            measure_power_secs=0.5,
            functional_unit=unit,
        )
        for n in (300, 700):
            with tracker.start_tracking("step") as step:
                sum(i * i for i in range(100_000))
                if unit is None:
                    step.add_units(n, "inference")
    untracked = CarbonTracker(project_name="p", pipeline="etl", output_dir=str(store))
    with untracked.start_tracking("load"):
        pass
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "carbonpipe", "esg", "--store", str(store), "--period", month,
         "--out", str(out), "--no-compact"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, load_schema("esg_report"))
    sci = {(x["pipeline"], x["functional_unit"]): x for x in report["sci"]}
    assert set(sci) == {("serving", "inference"), ("training", "training run")}
    s = open_store(str(store))
    records = list(read_records(s, record_keys(s)))
    serving = sci["serving", "inference"]
    assert serving["units"] == 1000.0 and serving["records"] == 2
    ours = sci_by_unit(r for r in records if r.pipeline == "serving")["inference"]
    assert math.isclose(serving["sci_g_per_unit"], ours, rel_tol=1e-12)
    o_g = sum(r.emissions_kg_co2e for r in records if r.pipeline == "serving") * 1000
    assert math.isclose(serving["operational_g_co2e"], o_g, rel_tol=1e-12)
    mine = [r for r in records if r.pipeline == "serving"]
    m_g = sum(getattr(r, "embodied_kg_co2e", None) or 0.0 for r in mine) * 1000
    assert math.isclose(serving["embodied_g_co2e"], m_g, rel_tol=1e-12, abs_tol=1e-15)
    if all(getattr(r, "embodied_kg_co2e", None) is None for r in mine):
        assert serving["embodied"][0]["note"].startswith("embodied not measured")
    else:  # the embodied factors used are disclosed: method, source, lifetime
        assert serving["embodied"][0]["method"] and "lifetime_years" in serving["embodied"][0]
    assert serving["intensity_method"] == "location-based"
    assert serving["intensity_g_per_kwh"] is not None
    assert [p["value"] for p in serving["pue"]] == [1.1]
    assert serving["intensity_sources"][0]["records"] == 2
    assert any("x_carbon_trace" in b for b in serving["boundary"]["included"])
    assert any("networking" in b for b in serving["boundary"]["excluded"])
    training = sci["training", "training run"]
    assert training["units"] == 2.0
    page = (out / "report.html").read_text()
    assert "Software Carbon Intensity (SCI)" in page
    assert "serving per inference: disclosure" in page and "Outside the boundary" in page
