"""A location that would give a silently wrong number is refused, or falls back visibly.

Given locations (argument, ``CARBONPIPE_*`` variable, carbon.yaml) naming an unknown provider or
a region not in the table are refused before the step runs, with the nearest names; a known
region without a figure is priced at its country, and says so; a *detected* region the table
lacks is kept, priced at its country when its name points to one, and noted in the record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.errors import ConfigError
from carbonpipe.intensity.table import load_table, regions
from carbonpipe.location.detect import clear_cache, detect_location
from carbonpipe.location.validate import check_region
from carbonpipe.tracker import CarbonTracker
from tests import metadata_servers as _servers
from tests.metadata_servers import DMI_AWS, DMI_AZURE, DMI_GCP, CloudMetadata

cloud_metadata = _servers.cloud_metadata
metadata_servers = _servers.metadata_servers

CLI = [sys.executable, "-m", "carbonpipe"]
TABLE = load_table()


@pytest.fixture(autouse=True)
def _fresh_cloud_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _marker_cmd(marker: Path) -> list[str]:
    return ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]


# -- refused before the step runs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "env", "named", "nearest"),
    [
        pytest.param(
            ["--region", "europe-wset1"], {}, "--region", "did you mean europe-west1", id="region"
        ),
        pytest.param(
            ["--provider", "gcp", "--region", "us-east9"],
            {},
            "--region",
            "did you mean us-east",
            id="region-of-provider",
        ),
        pytest.param(["--provider", "gpc"], {}, "--provider", "did you mean gcp", id="provider"),
        pytest.param(
            ["--provider", "aws", "--region", "europe-west1"],
            {},
            "--region",
            "it is gcp's",
            id="region-of-another-provider",
        ),
        pytest.param(
            [],
            {"CARBONPIPE_CLOUD_REGION": "westeurop"},
            "CARBONPIPE_CLOUD_REGION",
            "did you mean westeurope",
            id="env-region",
        ),
        pytest.param(
            [],
            {"CARBONPIPE_CLOUD_PROVIDER": "amazn"},
            "CARBONPIPE_CLOUD_PROVIDER",
            "did you mean aws",
            id="env-provider",
        ),
    ],
)
def test_cli_refuses_an_unknown_location_before_the_command_starts(
    tmp_path: Path, options: list[str], env: dict[str, str], named: str, nearest: str
) -> None:
    marker = tmp_path / "ran"
    store = tmp_path / "store"

    out = _run(["run", "--store", str(store), *options, *_marker_cmd(marker)], tmp_path, env)

    assert out.returncode == 2, out.stderr
    assert named in out.stderr and nearest in out.stderr, out.stderr
    assert not marker.exists()
    assert not store.exists()


@pytest.mark.parametrize(
    ("location", "field", "nearest"),
    [
        pytest.param("{provider: gpc}", "location.provider", "did you mean gcp", id="provider"),
        pytest.param(
            "{region: europe-wset1}", "location.region", "did you mean europe-west1", id="region"
        ),
        pytest.param(
            "{provider: azure, region: west-europe}",
            "location.region",
            "did you mean westeurope",
            id="azure-region",
        ),
    ],
)
def test_carbon_yaml_location_is_refused_as_the_option_is(
    tmp_path: Path, location: str, field: str, nearest: str
) -> None:
    config = tmp_path / "carbon.yaml"
    config.write_text(f"project: p\nlocation: {location}\n", encoding="utf-8")
    marker = tmp_path / "ran"

    out = _run(
        ["run", "--config", str(config), "--store", str(tmp_path / "s"), *_marker_cmd(marker)],
        tmp_path,
    )

    assert out.returncode == 2, out.stderr
    assert f"{config} {field}" in out.stderr and nearest in out.stderr, out.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"cloud_region": "europe-wset1"}, "cloud_region", id="region"),
        pytest.param({"cloud_provider": "gpc"}, "cloud_provider", id="provider"),
        pytest.param(
            {"cloud_provider": "azure", "cloud_region": "eu-west-1"}, "cloud_region", id="mixed"
        ),
        pytest.param({"country_iso_code": "XX"}, "country_iso_code", id="country"),
    ],
)
def test_tracker_refuses_an_unknown_location_when_built(
    tmp_path: Path, kwargs: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        CarbonTracker(output_dir=str(tmp_path), **kwargs)
    assert isinstance(info.value, ValueError)  # what the API raised for bad arguments before


def test_tracker_refuses_a_bad_env_region_instead_of_pricing_the_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBONPIPE_CLOUD_REGION", "europe-wset1")
    with pytest.raises(ConfigError, match=r"CARBONPIPE_CLOUD_REGION.*did you mean europe-west1"):
        CarbonTracker(output_dir=str(tmp_path))


_REGION_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=24)


@settings(max_examples=300, deadline=None)
@given(name=_REGION_NAMES, provider=st.sampled_from([None, "gcp", "aws", "azure"]))
def test_a_region_is_accepted_exactly_when_the_table_has_it(
    name: str, provider: str | None
) -> None:
    owner = {r.region: r.provider for r in TABLE.regions}.get(name)
    if owner is not None and provider in (None, owner):
        assert check_region(provider, name, name="region") == (owner, name)
    else:
        with pytest.raises(ConfigError, match=r"^region="):
            check_region(provider, name, name="region")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_one_typo_in_a_known_region_is_refused_with_a_suggestion(data: st.DataObject) -> None:
    row = data.draw(st.sampled_from(TABLE.regions))
    at = data.draw(st.integers(0, len(row.region) - 1))
    letter = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
    typo = row.region[:at] + letter + row.region[at + 1 :]
    if TABLE.region(row.provider, typo) is not None:
        return  # the typo spells another real region
    with pytest.raises(ConfigError) as info:
        check_region(row.provider, typo, name="--region")
    assert "did you mean" in str(info.value)


# -- visible fallbacks --------------------------------------------------------------------------


def test_a_known_region_without_a_figure_is_priced_at_its_country_and_says_so(
    tmp_path: Path,
) -> None:
    [row] = [r for r in regions("aws") if r.region == "ap-south-2"]
    assert row.intensity_g_per_kwh is None  # a location-only row
    country = TABLE.country(row.country_iso)
    assert country is not None
    record_file = tmp_path / "record.json"

    out = _run(
        [
            "run",
            "--store",
            str(tmp_path / "s"),
            "--provider",
            "aws",
            "--region",
            "ap-south-2",
            "--record-json",
            str(record_file),
            "--",
            "true",
        ],
        tmp_path,
    )

    assert out.returncode == 0, out.stderr
    record = json.loads(record_file.read_text())
    assert record["location"]["region"] == "ap-south-2"
    assert record["intensity_source"]["kind"] == "country"
    assert record["intensity_source"]["name"] == country.source
    assert record["intensity_g_per_kwh"] == country.intensity_g_per_kwh


@pytest.mark.parametrize(
    ("provider", "answer", "region", "country"),
    [
        pytest.param("gcp", "us-central9-a", "us-central9", "USA", id="gcp-family-in-one-country"),
        pytest.param("gcp", "europe-west99-b", "europe-west99", None, id="gcp-family-across"),
        pytest.param("aws", "us-east-9", "us-east-9", "USA", id="aws-family-in-one-country"),
        pytest.param("aws", "ap-southeast-9", "ap-southeast-9", None, id="aws-family-across"),
        pytest.param("azure", "germanycentral", "germanycentral", "DEU", id="azure-country-name"),
    ],
)
def test_a_detected_unknown_region_is_kept_priced_at_its_country_and_noted(
    cloud_metadata: CloudMetadata,
    tmp_path: Path,
    provider: str,
    answer: str,
    region: str,
    country: str | None,
) -> None:
    # The loopback server of that provider now answers this zone or region.
    cloud_metadata.servers[provider].region = answer
    cloud_metadata.write_dmi({"gcp": DMI_GCP, "aws": DMI_AWS, "azure": DMI_AZURE}[provider])
    # Warm the metadata cache with a deadline a loaded box cannot miss; the CLI reads it back.
    warm = detect_location(deadline_s=5.0)
    assert (warm.provider, warm.region) == (provider, region)
    record_file = tmp_path / "record.json"
    marker = tmp_path / "ran"

    out = _run(
        [
            "run",
            "--store",
            str(tmp_path / "s"),
            "--record-json",
            str(record_file),
            *_marker_cmd(marker),
        ],
        tmp_path,
    )

    assert out.returncode == 0, out.stderr
    assert marker.exists()  # the step ran
    record = json.loads(record_file.read_text())
    assert record["location"]["region"] == region
    assert record["location"]["detected_by"] == "metadata"
    assert record["location"]["country_iso"] == country
    [note] = [e for e in record["tracking_errors"] if "not in carbonpipe's region table" in e]
    assert region in note
    expected = TABLE.country(country) if country else TABLE.world
    assert expected is not None
    assert record["intensity_g_per_kwh"] == expected.intensity_g_per_kwh
    assert record["intensity_source"]["kind"] == ("country" if country else "world")
