"""KFP: wait_for_clean_grid and carbon_component(shift_within=...) start at the forecast's
cleanest second under kfp.local's SubprocessRunner; forecasts at 1-second resolution."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from carbonpipe.record import Record
from carbonpipe.stores.opener import open_store

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.timeout(300),
]

LOCATION = {"cloud_provider": "gcp", "cloud_region": "europe-west1"}
ZONE = "FR"


def _forecast_component():
    from kfp import dsl

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def write_forecast(path: str, clean_in_s: int) -> float:
        """Write a 1-second forecast: 400 g/kWh, but 50 for 4 s starting clean_in_s from now."""
        import time
        from datetime import datetime, timezone

        now = int(time.time()) + 1
        clean = now + clean_in_s
        rows = ["timestamp,zone,intensity_g_per_kwh"]
        for t in range(now - 10, now + 90):
            value = 50.0 if clean <= t < clean + 4 else 400.0
            rows.append(f"{datetime.fromtimestamp(t, timezone.utc).isoformat()},FR,{value}")
        with open(path, "w") as fh:
            fh.write("\n".join(rows) + "\n")
        return float(clean)

    return write_forecast


def _records(store: str) -> list[Record]:
    s = open_store(store)
    return [Record.from_json(s.get(k).data) for k in s.list("records/") if k.endswith(".json")]


def test_wait_for_clean_grid_waits_for_the_clean_second_and_returns_the_plan(
    tmp_path: Path,
) -> None:
    from kfp import dsl

    from carbonpipe.components import run_local, wait_for_clean_grid

    forecast = str(tmp_path / "f.csv")
    write_forecast = _forecast_component()

    @dsl.pipeline(name="shift")
    def shift(path: str) -> str:
        clean = write_forecast(path=path, clean_in_s=4)
        wait = wait_for_clean_grid(
            shift_within="30s",
            expected_duration="2s",
            intensity_source="file:" + forecast,
            intensity_zone=ZONE,
        ).after(clean)
        return wait.outputs["Output"]

    task = run_local(shift, pipeline_root=tmp_path / "out", path=forecast)
    plan = json.loads(task.output)
    assert plan["intensity_planned"] == 50.0 and plan["intensity_now"] == 400.0
    assert plan["wait_s"] > 0 and plan["source"] == "file" and plan["zone"] == ZONE
    assert "cleaner" in plan["reason"]
    # The plan as Metrics, for the KFP UI.
    [done] = (tmp_path / "out").glob("*/wait-for-clean-grid/executor_output.json")
    [ui] = json.loads(done.read_text())["artifacts"]["plan"]["artifacts"]
    assert ui["metadata"]["shifted"] == 1.0 and ui["metadata"]["saving_percent"] == 87.5
    assert ui["metadata"]["waited_s"] >= ui["metadata"]["wait_s"] - 0.01
    # The plan's start is the forecast's clean second, and the task waited for it.
    rows = Path(forecast).read_text().splitlines()[1:]
    first_clean = next(r.split(",")[0] for r in rows if r.endswith(",50.0"))
    assert datetime.fromisoformat(plan["planned_start"].replace("Z", "+00:00")) == (
        datetime.fromisoformat(first_clean)
    )


def test_carbon_component_with_shift_within_starts_at_the_clean_second_and_records_it(
    tmp_path: Path,
) -> None:
    from kfp import dsl

    from carbonpipe.components import carbon_component, run_local

    forecast, marker = str(tmp_path / "f.csv"), str(tmp_path / "started")
    write_forecast = _forecast_component()

    @carbon_component(
        project="shift",
        shift_within="30s",
        expected_duration="2s",
        intensity_source="file:" + forecast,
        intensity_zone=ZONE,
        **LOCATION,
    )
    def fit(marker: str) -> None:
        import time

        with open(marker, "w") as fh:
            fh.write(repr(time.time()))

    @dsl.pipeline(name="shift-step")
    def shift_step(path: str, marker: str, store: str) -> float:
        clean = write_forecast(path=path, clean_in_s=4)
        fit(marker=marker, carbon_store=store).after(clean)
        return clean.output

    store = str(tmp_path / "store")
    task = run_local(
        shift_step, pipeline_root=tmp_path / "out", path=forecast, marker=marker, store=store
    )
    clean_at, started = float(task.output), float(Path(marker).read_text())
    # Not before the clean second; late by at most 3 s of a loaded machine's start-up, which
    # is still within the 4 s clean window the forecast offers.
    assert clean_at - 0.5 <= started <= clean_at + 3.0, started - clean_at
    [record] = _records(store)
    s = record.scheduling
    assert s is not None
    assert (s["intensity_at_decision"], s["intensity_planned"]) == (400.0, 50.0)
    assert s["intensity_actual"] is not None and s["intensity_actual"] < 400.0
    assert s["source"]["name"] == "file" and s["waited_s"] > 0


def test_bad_shift_settings_are_refused_when_the_component_is_defined() -> None:
    from carbonpipe.components import carbon_component
    from carbonpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="shift_within"):
        carbon_component(shift_within="soon")
    with pytest.raises(ConfigError, match="expected_duration: goes with shift_within"):
        carbon_component(expected_duration="1h")
