"""``carbonpipe run`` on a loopback AWS, GCP or Azure metadata server that names the instance
type: the record's embodied share with its source, the PUE of its region, and a total budget."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe import open_store
from carbonpipe.hardware.instances import lookup_instance
from carbonpipe.location.detect import detect_location
from carbonpipe.record import Record
from carbonpipe.report import read_records, record_keys
from tests import metadata_servers as _servers
from tests.metadata_servers import DMI_AWS, DMI_AZURE, DMI_GCP, INSTANCE_TYPES, CloudMetadata

cloud_metadata = _servers.cloud_metadata
metadata_servers = _servers.metadata_servers

CLI = [sys.executable, "-m", "carbonpipe"]
DMI_FOR = {"gcp": DMI_GCP, "aws": DMI_AWS, "azure": DMI_AZURE}
PUE_FOR = {"gcp": 1.09, "aws": 1.11, "azure": 1.14}  # europe-west1, eu-west-1, westeurope
YEAR_S = 365.25 * 86400


def _run(
    store: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "run",
            "--store",
            str(store),
            "--step",
            "train",
            *options,
            "--",
            sys.executable,
            "-c",
            "pass",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CARBONPIPE_MEASURE_POWER_SECS": "0.5", **(env or {})},
    )


def _warm(provider: str, cloud_metadata: CloudMetadata) -> None:
    """Ask the loopback server once with a deadline a loaded box cannot miss: the run reads the
    answer (instance type included) from the disk cache, as a pod's later steps do."""
    cloud_metadata.write_dmi(DMI_FOR[provider])
    assert detect_location(deadline_s=5.0).instance_type == INSTANCE_TYPES[provider]


def _records(store: Path) -> list[Record]:
    opened = open_store(str(store))
    return sorted(read_records(opened, record_keys(opened)), key=lambda r: r.attempt)


@pytest.mark.parametrize("provider", ["gcp", "aws", "azure"])
def test_a_step_on_the_cloud_gets_its_embodied_share_with_its_source(
    cloud_metadata: CloudMetadata, tmp_path: Path, provider: str
) -> None:
    _warm(provider, cloud_metadata)

    out = _run(tmp_path / "store")

    assert out.returncode == 0, out.stderr
    [rec] = _records(tmp_path / "store")
    spec = lookup_instance(provider, INSTANCE_TYPES[provider])
    assert spec is not None
    block = rec.embodied
    assert block is not None
    assert (block["instance_type"], block["instance_type_by"]) == (
        INSTANCE_TYPES[provider],
        "metadata",
    )
    assert block["method"] == "ccf" and "Cloud Carbon Footprint" in block["source"]
    assert block["vintage"] and block["lifetime_years"] == 4.0
    assert block["host_kg_co2e"] == spec.embodied_kg_co2e
    assert 0 < block["share"] <= spec.vcpus / spec.family_vcpus
    expected = spec.embodied_kg_co2e * rec.duration_s / (4 * YEAR_S) * block["share"]
    assert rec.embodied_kg_co2e is not None and math.isclose(rec.embodied_kg_co2e, expected)
    assert rec.total_kg_co2e == pytest.approx(rec.emissions_kg_co2e + rec.embodied_kg_co2e)
    # The PUE is the region's published figure, with its source.
    assert rec.pue == PUE_FOR[provider]
    assert rec.pue_source is not None and rec.pue_source["kind"] == "region"
    Record.from_json(rec.to_json())  # the stored shape validates


def test_the_instance_type_option_and_a_configured_pue_win(
    cloud_metadata: CloudMetadata, tmp_path: Path
) -> None:
    _warm("aws", cloud_metadata)

    out = _run(
        tmp_path / "store",
        "--instance-type",
        "p5.48xlarge",
        env={"CARBONPIPE_PUE": "1.3", "CUDA_VISIBLE_DEVICES": "0,1"},
    )

    assert out.returncode == 0, out.stderr
    [rec] = _records(tmp_path / "store")
    assert rec.embodied is not None
    assert (rec.embodied["instance_type"], rec.embodied["instance_type_by"]) == (
        "p5.48xlarge",
        "argument",
    )
    assert rec.embodied["method"] == "estimated" and rec.embodied["host_kg_co2e"] == 2400.0
    assert rec.embodied["share"] >= 2 / 8  # two of its eight GPUs visible
    assert (rec.pue, rec.pue_source and rec.pue_source["kind"]) == (1.3, "user")


def test_off_the_cloud_the_default_model_and_pue_one(tmp_path: Path) -> None:
    out = _run(tmp_path / "store", "--country", "FR", "--tracking-mode", "offline")

    assert out.returncode == 0, out.stderr
    [rec] = _records(tmp_path / "store")
    assert rec.embodied is not None and rec.embodied["method"] == "estimated"
    assert rec.embodied["instance_type"] is None and "off the cloud" in rec.embodied["note"]
    assert rec.pue == 1.0 and rec.pue_source == {
        "kind": "on_premises",
        "name": "on premises: 1.0 (no facility overhead counted; set pue to count it)",
        "vintage": None,
    }
    # The report says so, and sums the embodied share beside the operational figure.
    report = subprocess.run(
        [*CLI, "report", "--store", str(tmp_path / "store")], capture_output=True, text=True
    )
    assert "1 records ran off the cloud with no configured pue: PUE 1.0" in report.stdout
    assert "embodied:" in report.stdout
    as_json = subprocess.run(
        [*CLI, "report", "--store", str(tmp_path / "store"), "--json"],
        capture_output=True,
        text=True,
    )
    summary = json.loads(as_json.stdout)
    assert summary["embodied_kg_co2e"] == pytest.approx(rec.embodied_kg_co2e)
    assert summary["total_kg_co2e"] == pytest.approx(rec.total_kg_co2e)


def test_a_total_budget_counts_the_embodied_share(tmp_path: Path) -> None:
    # A GPU host with a short lifetime: the embodied share of a brief step outweighs its energy
    # by far, so a limit between the two admits the next step on operational, not on total.
    store = tmp_path / "store"
    where = ["--provider", "gcp", "--region", "europe-west1", "--instance-type", "a2-megagpu-16g"]
    scope = ["--budget-scope", "pipeline:default", "--budget-period", "total"]
    lifetime = {"CARBONPIPE_EMBODIED_LIFETIME_YEARS": "0.5"}
    # A tracker that knows a total budget charges the scope's total book too.
    first_budget = [*scope, "--budget-kg", "1000", "--budget-basis", "total"]
    first = _run(store, *where, *first_budget, "--budget-estimate-kg", "0.001", env=lifetime)
    assert first.returncode == 0, first.stderr
    [rec] = _records(store)
    assert rec.embodied_kg_co2e is not None and rec.embodied_kg_co2e > 10 * rec.emissions_kg_co2e
    limit = ["--budget-kg", repr(rec.emissions_kg_co2e + rec.embodied_kg_co2e / 2)]
    estimate = ["--budget-estimate-kg", "0"]

    operational = _run(store, *where, *scope, *limit, *estimate, env=lifetime)
    assert operational.returncode == 0, operational.stderr

    total = [*scope, *limit, *estimate, "--budget-basis", "total"]
    refused = _run(store, *where, *total, env=lifetime)
    assert refused.returncode != 0
    assert "pipeline:default (total)" in refused.stderr
