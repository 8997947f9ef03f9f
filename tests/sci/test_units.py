"""SCI's functional unit R through the tracker: step.add_units, functional_unit=, the record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from carbonpipe import CarbonTracker, open_store
from carbonpipe.errors import ConfigError
from carbonpipe.functional_unit import parse_units_text
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys
from carbonpipe.schemas.table import load_schema


def _grams(rec: Record) -> float:
    """O + M in grams: M is 0 where the record has no embodied figure."""
    return (rec.emissions_kg_co2e + (getattr(rec, "embodied_kg_co2e", None) or 0.0)) * 1000


def _tracker(tmp_path: Path, **kwargs: object) -> CarbonTracker:
    return CarbonTracker(
        project_name="p",
        output_dir=str(tmp_path / "store"),
        cloud_provider="gcp",
        cloud_region="europe-west1",
        measure_power_secs=0.5,
        pipeline="serving",
        **kwargs,  # type: ignore[arg-type]
    )


def _records(tmp_path: Path) -> dict[str, Record]:
    store = open_store(str(tmp_path / "store"))
    return {r.step: r for r in read_records(store, record_keys(store))}


def test_a_step_with_declared_units_gets_an_sci_score(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path, functional_unit="training run")
    with tracker.start_tracking("serve") as step:
        sum(i * i for i in range(100_000))
        step.add_units(600, "inference")
        step.add_units(400, "inference")
    metrics = step.metrics
    assert metrics is not None and metrics.sci_g_per_unit == metrics.record.sci_g_per_unit
    assert metrics.to_dict()["functional_units"] == {"name": "inference", "count": 1000.0}
    assert metrics.to_dict()["sci_g_per_unit"] == metrics.sci_g_per_unit
    with tracker.start_tracking("train"):
        sum(i * i for i in range(100_000))
    recs = _records(tmp_path)
    serve, train = recs["serve"], recs["train"]
    assert serve.functional_units == {"name": "inference", "count": 1000.0}
    assert serve.sci_g_per_unit is not None and serve.sci_g_per_unit > 0
    assert math.isclose(serve.sci_g_per_unit, _grams(serve) / 1000)
    # The tracker's functional_unit: one training run per step, SCI = its grams.
    assert train.functional_units == {"name": "training run", "count": 1.0}
    assert math.isclose(train.sci_g_per_unit or 0, _grams(train))
    schema = load_schema("record")
    for rec in recs.values():
        jsonschema.validate(json.loads(rec.to_json()), schema)


def test_a_step_without_units_has_null_sci(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    with tracker.start_tracking("prep"):
        pass
    rec = _records(tmp_path)["prep"]
    data = json.loads(rec.to_json())
    assert data["functional_units"] is None and data["sci_g_per_unit"] is None
    jsonschema.validate(data, load_schema("record"))


@pytest.mark.parametrize(
    ("count", "name", "field"),
    [
        (0, "inference", "count"),
        (-1, "inference", "count"),
        (float("nan"), "inference", "count"),
        (float("inf"), "inference", "count"),
        ("10", "inference", "count"),
        (True, "inference", "count"),
        (10, "", "unit"),
        (10, "x" * 65, "unit"),
    ],
)
def test_invalid_units_are_refused_naming_the_field(
    tmp_path: Path, count: object, name: object, field: str
) -> None:
    tracker = _tracker(tmp_path)
    with tracker.start_tracking("serve") as step, pytest.raises(ConfigError, match=f"^{field}"):
        step.add_units(count, name)  # type: ignore[arg-type]


def test_one_functional_unit_per_step(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    with tracker.start_tracking("serve") as step:
        step.add_units(1, "inference")
        with pytest.raises(ConfigError, match="one functional unit"):
            step.add_units(1, "token")


def test_the_trackers_functional_unit_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^functional_unit"):
        _tracker(tmp_path, functional_unit=" ")


def test_units_file_text() -> None:
    assert parse_units_text("1000 inference\n") == {"name": "inference", "count": 1000.0}
    assert parse_units_text('{"count": 2, "name": "batch job"}') == {
        "name": "batch job",
        "count": 2.0,
    }
    assert parse_units_text("  \n") is None
    with pytest.raises(ConfigError, match="CARBONPIPE_UNITS_FILE"):
        parse_units_text("lots of inferences")
    with pytest.raises(ConfigError, match="CARBONPIPE_UNITS_FILE count"):
        parse_units_text("0 inference")
