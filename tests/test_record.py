"""The record schema: deterministic ids, Hive keys, validation that names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from carbonpipe.errors import InvalidRecord
from carbonpipe.record import (
    SCHEMA,
    Record,
    legacy_record_key,
    make_record_id,
    partition_value,
    record_key,
)


def _record(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "record_id": make_record_id("p", "pipe", "run-1", "train", 1),
        "project": "p",
        "experiment": "",
        "pipeline": "pipe",
        "run_id": "run-1",
        "step": "train",
        "team": "",
        "attempt": 1,
        "labels": {},
        "started_at": "2026-11-24T10:00:00.000000Z",
        "ended_at": "2026-11-24T10:00:05.000000Z",
        "duration_s": 5.0,
        "status": "succeeded",
        "energy_kwh": {"cpu": 1e-4, "gpu": 0.0, "ram": 1e-5, "remote": 0.0, "total": 1.1e-4},
        "power_w": {"cpu": 72.0, "gpu": 0.0, "ram": 7.2},
        "pue": 1.0,
        "intensity_g_per_kwh": 100.0,
        "emissions_kg_co2e": 1.1e-5,
        "location": {
            "provider": "gcp",
            "region": "europe-west1",
            "country_iso": "BEL",
            "detected_by": "argument",
        },
        "intensity_source": {"name": "Google Cloud", "vintage": "2023", "kind": "cloud_region"},
        "measurement": {"method": "cpu_load", "tracking_mode": "machine"},
        "remote": [],
        "tracking_errors": [],
        "alerts": [],
    }
    data.update(overrides)
    return data


def test_record_id_is_deterministic_per_attempt() -> None:
    a = make_record_id("p", "pipe", "run", "train", 1)
    assert a == make_record_id("p", "pipe", "run", "train", 1)
    assert a != make_record_id("p", "pipe", "run", "train", 2)
    assert a != make_record_id("p", "pipe", "run2", "train", 1)
    assert len(a) == 32


def test_record_round_trips_byte_for_byte() -> None:
    rec = Record.from_dict(_record())
    again = Record.from_json(rec.to_json())
    assert again == rec
    assert again.to_json() == rec.to_json()


def test_record_key_is_hive_partitioned_by_end_date_and_pipeline() -> None:
    rec = Record.from_dict(_record(pipeline="my pipe/v2"))
    part = partition_value("my pipe/v2")  # sanitised, plus a hash of the true name
    assert part.startswith("my_pipe_v2-") and part != partition_value("my_pipe_v2")
    assert rec.key == f"records/v2/date=2026-11-24/pipeline_key={part}/{rec.record_id}.json"
    assert record_key("2026-01-01", "a", "x") == "records/v2/date=2026-01-01/pipeline_key=a/x.json"
    # The layout of earlier versions, which readers still read and `carbonpipe migrate` moves.
    assert (
        legacy_record_key("2026-01-01", "a", "x") == "records/v1/date=2026-01-01/pipeline=a/x.json"
    )
    assert partition_value("") not in ("", "_")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"schema": "other/1"}, "schema", id="schema"),
        pytest.param({"step": ""}, "step", id="empty-step"),
        pytest.param({"attempt": 0}, "attempt", id="attempt-zero"),
        pytest.param({"attempt": True}, "attempt", id="attempt-bool"),
        pytest.param({"status": "done"}, "status", id="status"),
        pytest.param({"ended_at": "yesterday"}, "ended_at", id="timestamp"),
        pytest.param({"ended_at": "2026-11-24T10:00:00"}, "ended_at", id="naive-timestamp"),
        pytest.param({"duration_s": -1}, "duration_s", id="negative"),
        pytest.param({"emissions_kg_co2e": float("nan")}, "emissions_kg_co2e", id="nan"),
        pytest.param({"energy_kwh": {"cpu": 1}}, "energy_kwh.gpu", id="energy-part"),
        pytest.param(
            {"location": {"detected_by": "guess"}}, "location.detected_by", id="detected-by"
        ),
        pytest.param({"measurement": {"method": "magic"}}, "measurement.method", id="method"),
        pytest.param({"labels": {"a": 1}}, "labels", id="labels"),
        pytest.param({"intensity_source": {"name": "x"}}, "intensity_source", id="source"),
    ],
)
def test_invalid_record_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRecord, match=f"'{field}'"):
        Record.from_dict(_record(**overrides))


def test_invalid_json_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="JSON"):
        Record.from_json(b"{not json")
    with pytest.raises(InvalidRecord, match="object"):
        Record.from_json(json.dumps([1]))
