"""The packaged JSON Schemas: valid 2020-12, versioned like the documents, and met by every
document carbonpipe writes (records, charges, baselines, the ESG report) with strict types:
every figure a float, every optional field present with a typed null."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe.baseline import BASELINE_SCHEMA
from carbonpipe.budgets.charges import CHARGE_SCHEMA
from carbonpipe.esg.report import REPORT_SCHEMA
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.measure.base import Measurement
from carbonpipe.measure.host import host_facts
from carbonpipe.pricing import build_record
from carbonpipe.record import (
    ENERGY_PARTS,
    LOCATION_FIELDS,
    MEASUREMENT_FIELDS,
    POWER_PARTS,
    SCHEMA,
    Record,
    make_record_id,
)
from carbonpipe.schemas.table import SCHEMA_FILES, load_schema, schema_path
from tests.schema_check import assert_all_valid, assert_valid, errors

CLI = [sys.executable, "-m", "carbonpipe"]


def test_each_schema_is_2020_12_and_carries_the_version_its_documents_say() -> None:
    constants = {
        "record": SCHEMA,
        "charge": CHARGE_SCHEMA,
        "baseline": BASELINE_SCHEMA,
        "esg_report": REPORT_SCHEMA,
    }
    assert set(constants) == set(SCHEMA_FILES)
    for name, constant in constants.items():
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["schema"]["const"] == constant
        kind, version = constant.removeprefix("carbonpipe.").split("/")
        assert schema["$id"] == f"urn:carbonpipe:schema:{kind}/{version}"
        assert schema_path(name).name == f"{kind}.v{version}.json"
        assert errors(name, {}) != []  # the schema is not vacuous


def test_the_record_schema_documents_exactly_what_a_record_writes() -> None:
    schema = load_schema("record")
    props = schema["properties"]
    assert set(props) == {f.name for f in dataclasses.fields(Record)}
    assert set(schema["required"]) == set(props)
    assert props["energy_kwh"]["required"] == list(ENERGY_PARTS)
    assert props["power_w"]["required"] == list(POWER_PARTS)
    assert props["location"]["required"] == list(LOCATION_FIELDS)
    assert props["measurement"]["required"] == list(MEASUREMENT_FIELDS)
    for name, node in _walk(schema):  # each field described once, with its unit where it has one
        assert node.get("description"), name


def _walk(node: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, sub in node.get("properties", {}).items():
        out.append((prefix + name, sub))
        out += _walk(sub, f"{prefix}{name}.")
        if isinstance(sub.get("items"), dict):
            out += _walk(sub["items"], f"{prefix}{name}[].")
    return out


# -- any record a writer can build --------------------------------------------------------------

_T0 = datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
# Figures arrive as floats or as ints (a sum over nothing, a meter that rounds): both are written
# as floats.
_figure = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.integers(min_value=0, max_value=10**6),
)
_name = st.text(min_size=1, max_size=12)
_maybe_text = st.none() | st.text(min_size=1, max_size=20)


@st.composite
def _records(draw: st.DrawFn) -> Record:
    duration = draw(_figure)
    m = Measurement(
        started_at=_T0,
        ended_at=_T0 + timedelta(seconds=float(duration)),
        duration_s=duration,
        cpu_energy_kwh=draw(_figure),
        gpu_energy_kwh=draw(_figure),
        ram_energy_kwh=draw(_figure),
        cpu_power_w=draw(_figure),
        gpu_power_w=draw(_figure),
        ram_power_w=draw(_figure),
        method=draw(st.sampled_from(["rapl", "cpu_load", "tdp", "nvml", "estimate"])),
        tracking_mode=draw(st.sampled_from(["machine", "process"])),
        share=draw(st.sampled_from(["machine", "process", "cgroup"])),
        codecarbon_version=draw(_maybe_text),
        cpu_model=draw(_maybe_text),
        gpu_model=draw(_maybe_text),
    )
    project, pipeline, run_id, step = (draw(_name) for _ in range(4))
    attempt = draw(st.integers(min_value=1, max_value=50))
    identity = {
        "record_id": make_record_id(project, pipeline, run_id, step, attempt),
        "project": project,
        "experiment": draw(st.text(max_size=8)),
        "pipeline": pipeline,
        "run_id": run_id,
        "step": step,
        "team": draw(st.text(max_size=8)),
        "attempt": attempt,
        "labels": draw(st.dictionaries(_name, st.text(max_size=8), max_size=3)),
    }
    provider = draw(st.sampled_from([None, "gcp", "aws", "azure"]))
    location = {
        "provider": provider,
        "region": draw(_maybe_text) if provider else None,
        "country_iso": draw(st.sampled_from([None, "FRA", "USA"])),
        "detected_by": draw(st.sampled_from(["metadata", "argument", "env", "default", "world"])),
    }
    remote = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "server": _name,
                    "count": st.integers(min_value=0, max_value=9),
                    "energy_kwh": _figure,
                    "emissions_kg_co2e": _figure,
                }
            ),
            max_size=2,
        )
    )
    host = draw(st.none() | st.just(host_facts()))
    return build_record(
        identity,
        draw(st.sampled_from(["succeeded", "failed", "killed", "lost"])),
        m,
        location=location,
        intensity=lookup_intensity(None, None, location["country_iso"]),
        pue=draw(st.sampled_from([1, 1.1, 1.58])),
        tracking_mode=m.tracking_mode,
        remote=remote,
        host=host,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_every_record_a_writer_builds_is_written_as_the_schema_says(record: Record) -> None:
    raw = record.to_json()
    assert_valid("record", raw)
    back = Record.from_json(raw)
    assert back.to_json() == raw  # typed once: reading and writing again changes nothing
    data = json.loads(raw)
    assert isinstance(data["energy_kwh"]["remote"], float)
    assert set(data["measurement"]) == set(MEASUREMENT_FIELDS)
    assert math.isclose(
        data["energy_kwh"]["total"], sum(data["energy_kwh"][p] for p in ENERGY_PARTS[:4])
    )


def test_a_carbonpipe_record_1_with_ints_and_missing_fields_is_read_and_written_as_2() -> None:
    old = {
        "schema": "carbonpipe.record/1",
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
        "duration_s": 5,
        "status": "succeeded",
        "energy_kwh": {"cpu": 1e-4, "gpu": 0, "ram": 1e-5, "remote": 0, "total": 1.1e-4},
        "power_w": {"cpu": 72, "gpu": 0, "ram": 7.2},
        "pue": 1,
        "intensity_g_per_kwh": 100,
        "emissions_kg_co2e": 1.1e-5,
        "location": {"provider": "gcp", "region": "europe-west1", "detected_by": "argument"},
        "intensity_source": {"name": "Google Cloud", "vintage": "2023", "kind": "cloud_region"},
        "measurement": {"method": "cpu_load", "tracking_mode": "machine"},
        "remote": [{"server": "llm", "count": 1, "energy_kwh": 0, "emissions_kg_co2e": 0}],
        "tracking_errors": [],
        "alerts": [],
    }
    assert errors("record", old)  # not a /2 record as it is
    rec = Record.from_json(json.dumps(old))
    assert rec.schema == SCHEMA
    raw = rec.to_json()
    assert_valid("record", raw)
    data = json.loads(raw)
    assert data["energy_kwh"]["remote"] == 0.0 and isinstance(data["energy_kwh"]["remote"], float)
    assert data["location"]["country_iso"] is None
    assert data["measurement"]["gpu_model"] is None and data["measurement"]["os"] is None
    assert data["remote"][0]["energy_kwh"] == 0.0


# -- every writer, as users run it ---------------------------------------------------------------

_TRACKED = textwrap.dedent(
    """
    import sys
    from carbonpipe import CarbonTracker, current_step
    tracker = CarbonTracker(
        project_name="schema", pipeline="writers", experiment_name="exp", team="ml",
        run_id="run-tracker", output_dir=sys.argv[1], cloud_provider="gcp",
        cloud_region="europe-west1", measure_power_secs=0.5,
    )
    with tracker.start_tracking("infer"):
        current_step().add_remote("http://llm:8000", energy_kwh=0.002, emissions_kg_co2e=0.0005)
    """
)
_KILLED = textwrap.dedent(
    """
    import sys, time
    from carbonpipe import CarbonTracker
    tracker = CarbonTracker(
        project_name="schema", pipeline="writers", run_id="run-lost",
        output_dir=sys.argv[1], country_iso_code="FRA", measure_power_secs=0.5,
    )
    with tracker.start_tracking("hang"):
        print("started", flush=True)
        time.sleep(600)
    """
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=180)
    return done


def test_every_document_the_writers_store_matches_its_schema(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for step, cmd in (("ok", ["true"]), ("broken", ["false"])):
        _cli(
            "run",
            "--store",
            str(store),
            "--pipeline",
            "writers",
            "--step",
            step,
            "--run-id",
            "run-cli",
            "--country",
            "FRA",
            "--",
            *cmd,
        )
    subprocess.run([sys.executable, "-c", _TRACKED, str(store)], check=True, timeout=180)
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(store)], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout is not None and killed.stdout.readline().strip() == "started"
    time.sleep(0.5)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    for _ in range(3):  # its sidecar may still be writing its last heartbeat
        flushed = json.loads(_cli("flush", "--json").stdout)
        if flushed["lost_steps"]["lost"]:
            break
        time.sleep(0.5)
    baseline = _cli(
        "baseline",
        "create",
        "--store",
        str(store),
        "--pipeline",
        "writers",
        "--step",
        "ok",
        "--runs",
        "1",
    )
    assert baseline.returncode == 0, baseline.stderr
    esg = _cli("esg", "--store", str(store), "--period", _today()[:7], "--no-compact", "--json")
    assert esg.returncode == 0, esg.stderr

    records = sorted((store / "records").rglob("*.json"))
    statuses = sorted(Record.from_json(p.read_bytes()).status for p in records)
    assert statuses == ["failed", "lost", "succeeded", "succeeded"]
    assert assert_all_valid("record", records) == 4
    assert assert_all_valid("charge", (store / "budgets").rglob("charges/**/*.json")) >= 4
    assert assert_all_valid("baseline", (store / "baselines").rglob("*.json")) == 1
    assert assert_all_valid("esg_report", (store / "esg").rglob("report.json")) == 1
    tracked = next(
        r for r in map(Record.from_json, (p.read_bytes() for p in records)) if r.step == "infer"
    )
    assert tracked.remote[0]["count"] == 1 and tracked.measurement["os"] == host_facts()["os"]


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def test_duckdb_infers_every_figure_as_double_from_a_sample_of_zeros(tmp_path: Path) -> None:
    """The issue's case: 40 records without remote calls and one with, read by DuckDB's
    ``read_json_auto`` (type inference from a sample): ``energy_kwh.remote`` is DOUBLE and its
    sum is the one remote figure, not 0."""
    duckdb = pytest.importorskip("duckdb")
    m = Measurement.nothing(_T0, tracking_mode="machine", share="machine")
    for i in range(41):
        identity = {
            "record_id": make_record_id("p", "pipe", "run", f"s{i}", 1),
            "project": "p",
            "experiment": "",
            "pipeline": "pipe",
            "run_id": "run",
            "step": f"s{i}",
            "team": "",
            "attempt": 1,
            "labels": {},
        }
        remote = [{"server": "llm", "count": 1, "energy_kwh": 2.5e-06, "emissions_kg_co2e": 0}]
        record = build_record(
            identity,
            "succeeded",
            m,
            location={"provider": None, "region": None, "detected_by": "world"},
            intensity=lookup_intensity(None, None, None),
            pue=1,
            tracking_mode="machine",
            remote=remote if i == 40 else (),
            host=host_facts(),
        )
        path = tmp_path / record.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.to_json())
    con = duckdb.connect()
    glob = f"{tmp_path}/records/**/*.json"
    types = dict(
        con.execute(
            f"select column_name, column_type from (describe select energy_kwh.remote as remote, "
            f"measurement.ram_total_size_gib as ram, pue from read_json_auto('{glob}'))"
        ).fetchall()
    )
    assert types == {"remote": "DOUBLE", "ram": "DOUBLE", "pue": "DOUBLE"}
    [(total,)] = con.execute(
        f"select sum(energy_kwh.remote) from read_json_auto('{glob}')"
    ).fetchall()
    assert total == 2.5e-06
