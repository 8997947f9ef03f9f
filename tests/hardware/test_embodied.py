"""The embodied share M = TE x (TiR / EL) x (RR / ToR), the instance table and PUE per place."""

from __future__ import annotations

import csv
import io
import math
from importlib import resources

import pytest

from carbonpipe.hardware.embodied import (
    DEFAULT_MODEL_SOURCE,
    default_model_kg,
    embodied_figure,
    share,
)
from carbonpipe.hardware.instances import lookup_instance, sources
from carbonpipe.hardware.pue import resolve_pue

YEAR_S = 365.25 * 86400
WHOLE = {"cpus": None, "gpus": None, "host_cpus": 8, "host_gpus": 0, "sockets": 1}


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("carbonpipe.hardware").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))


def test_every_row_names_a_known_source_and_a_vintage() -> None:
    known = sources()
    for name in ("instances.csv", "pue.csv"):
        for row in _rows(name):
            assert row["source"] in known, row
            assert row.get("vintage") or row.get("year"), row
    for row in _rows("instances.csv"):
        assert 0 < int(row["vcpus"]) <= int(row["family_vcpus"]), row
        assert 0 <= int(row["gpus"]) <= int(row["family_gpus"]), row
        assert float(row["embodied_kg_co2e"]) >= 1000, row
        assert row["method"] in ("ccf", "estimated")
    for row in _rows("pue.csv"):
        assert 1.0 <= float(row["pue"]) < 2.0, row
    assert {r["provider"] for r in _rows("pue.csv") if r["region"] == "*"} == {
        "aws",
        "gcp",
        "azure",
    }


@pytest.mark.parametrize(
    ("provider", "spelled", "table"),
    [
        ("aws", "m6i.large", "m6i.large"),
        ("aws", "P4D.24XLARGE", "p4d.24xlarge"),
        ("gcp", "n2-standard-8", "n2-standard-8"),
        ("azure", "Standard_D4s_v3", "D4s v3"),
        ("azure", "Standard_ND96isr_H100_v5", "ND96isr H100 v5"),
    ],
)
def test_types_are_found_as_the_metadata_servers_spell_them(
    provider: str, spelled: str, table: str
) -> None:
    spec = lookup_instance(provider, spelled)
    assert spec is not None and spec.instance_type == table


def test_current_gpu_families_are_there_estimated() -> None:
    for provider, name in (
        ("aws", "p5.48xlarge"),
        ("gcp", "a3-highgpu-8g"),
        ("azure", "Standard_ND96isr_H100_v5"),
    ):
        spec = lookup_instance(provider, name)
        assert spec is not None and spec.method == "estimated" and spec.gpus == 8
        assert spec.embodied_kg_co2e == default_model_kg(2, 8) == 2400.0


def test_m_is_te_times_time_over_lifetime_times_share() -> None:
    spec = lookup_instance("gcp", "n2-standard-8")
    assert spec is not None
    kg, block = embodied_figure(
        provider="gcp",
        instance_type="n2-standard-8",
        instance_type_by="metadata",
        duration_s=3600.0,
        resources=WHOLE,
    )
    expected = spec.embodied_kg_co2e * (3600.0 / (4 * YEAR_S)) * (8 / 128)
    assert math.isclose(kg, expected, rel_tol=1e-12)
    assert block["method"] == "ccf" and "Cloud Carbon Footprint" in block["source"]
    assert (block["share"], block["lifetime_years"], block["vintage"]) == (8 / 128, 4.0, "2021-12")
    assert (block["instance_type"], block["instance_type_by"]) == ("n2-standard-8", "metadata")

    longer, _ = embodied_figure(
        provider="gcp",
        instance_type="n2-standard-8",
        instance_type_by="metadata",
        duration_s=3600.0,
        resources=WHOLE,
        lifetime_years=6.0,
    )
    assert math.isclose(longer, kg * 4 / 6)


def test_the_share_takes_the_cgroup_limit_and_the_visible_gpus() -> None:
    # 96 vCPUs and 8 GPUs: a pod limited to 12 CPUs and one GPU holds an eighth of the host.
    assert share(12, 1, instance_vcpus=96, instance_gpus=8, family_vcpus=96, family_gpus=8) == 1 / 8
    # A limit above the instance's vCPUs counts as the instance.
    assert share(500, None, instance_vcpus=8, instance_gpus=0, family_vcpus=128, family_gpus=0) == (
        8 / 128
    )
    # On a GPU family the GPUs the step sees can outweigh its CPUs.
    assert share(2, 4, instance_vcpus=96, instance_gpus=8, family_vcpus=96, family_gpus=8) == 0.5


def test_an_unknown_type_and_a_local_machine_get_the_default_model_labelled() -> None:
    kg, block = embodied_figure(
        provider="aws",
        instance_type="zz9.huge",
        instance_type_by="env",
        duration_s=YEAR_S,
        resources={**WHOLE, "sockets": 2, "host_gpus": 2, "cpus": 4.0, "gpus": 1},
    )
    assert block["method"] == "estimated" and block["source"] == DEFAULT_MODEL_SOURCE
    assert block["host_kg_co2e"] == 1000 + 2 * 100 + 2 * 150
    assert math.isclose(block["share"], 4 / 8)
    assert math.isclose(kg, 1500 / 4 * 0.5)
    assert "not in the embodied table" in block["note"]

    _, local = embodied_figure(
        provider=None, instance_type=None, instance_type_by=None, duration_s=1.0, resources=WHOLE
    )
    assert local["method"] == "estimated" and local["share"] == 1.0
    assert local["note"].startswith("off the cloud")


def test_pue_user_then_region_then_fleet_then_on_premises() -> None:
    assert resolve_pue("gcp", "europe-west1", 1.4) == (
        1.4,
        {"kind": "user", "name": "configured pue", "vintage": None},
    )
    pue, src = resolve_pue("gcp", "europe-west1")
    assert (pue, src["kind"], src["vintage"]) == (1.09, "region", "2024")
    assert "Real Time Cloud" in src["name"]
    pue, src = resolve_pue("azure", "westeurope")
    assert (pue, src["kind"]) == (1.14, "region")
    pue, src = resolve_pue("aws", "ap-east-1")  # a region without its own figure
    assert (pue, src["kind"], src["vintage"]) == (1.15, "fleet", "2024")
    pue, src = resolve_pue(None, None)
    assert (pue, src["kind"]) == (1.0, "on_premises")
