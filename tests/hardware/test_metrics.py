"""A tracked step's metrics carry its embodied share and operational + embodied."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbonpipe import CarbonTracker


def test_metrics_show_the_embodied_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(tmp_path / "absent.yaml"))
    tracker = CarbonTracker(
        project_name="p",
        output_dir=str(tmp_path / "store"),
        cloud_provider="aws",
        cloud_region="eu-west-1",
        instance_type="p4d.24xlarge",
        measure_power_secs=0.5,
    )
    with tracker.start_tracking("fit"):
        pass
    metrics = tracker.stop_tracking("fit")

    assert metrics.embodied_kg_co2e is not None and metrics.embodied_kg_co2e > 0
    assert metrics.total_kg_co2e == pytest.approx(
        metrics.emissions_kg_co2e + metrics.embodied_kg_co2e
    )
    shown = metrics.to_dict()
    assert shown["embodied_kg_co2e"] == metrics.embodied_kg_co2e and shown["pue"] == 1.11
    assert metrics.record.embodied is not None
    assert metrics.record.embodied["instance_type_by"] == "argument"

    from carbonpipe.integrations.kfp.tracked import step_metrics

    ui = step_metrics(metrics)
    assert ui["embodied_g_co2e"] == pytest.approx(metrics.embodied_kg_co2e * 1000)
    assert ui["total_g_co2e"] == pytest.approx(metrics.total_kg_co2e * 1000)
