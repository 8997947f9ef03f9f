"""The region table covers every region its provider publishes, so refusing unknown ones is safe.

``data/published_regions.csv`` lists each provider's published regions (sources named in it);
every one must price to something better than the world average: its own figure, or, on a
location-only row, its country's, said so by ``kind == "country"``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from carbonpipe.intensity.table import load_table, lookup_intensity

PUBLISHED = Path(__file__).parent / "data" / "published_regions.csv"
TABLE = load_table()


def _published() -> list[tuple[str, str]]:
    lines = [
        line
        for line in PUBLISHED.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [(row["provider"], row["region"]) for row in csv.DictReader(lines)]


PUBLISHED_REGIONS = _published()


def test_the_published_list_has_each_provider_once_per_region() -> None:
    assert len(PUBLISHED_REGIONS) == len(set(PUBLISHED_REGIONS))
    assert {p for p, _ in PUBLISHED_REGIONS} == {"gcp", "aws", "azure"}


@pytest.mark.parametrize(("provider", "region"), PUBLISHED_REGIONS)
def test_every_published_region_is_priced_by_the_table(provider: str, region: str) -> None:
    row = TABLE.region(provider, region)
    assert row is not None, f"{provider} {region} is published but missing from intensity.csv"
    value = lookup_intensity(provider, region)
    if row.intensity_g_per_kwh is not None:
        assert (value.kind, value.intensity_g_per_kwh) == ("cloud_region", row.intensity_g_per_kwh)
    else:  # a location-only row: its grid's country prices it, and says so
        country = TABLE.country(row.country_iso)
        assert country is not None, f"{provider} {region}: no country row {row.country_iso}"
        assert (value.kind, value.zone) == ("country", row.country_iso)
        assert value.intensity_g_per_kwh == country.intensity_g_per_kwh


def test_every_table_region_is_a_published_one() -> None:
    stale = {(r.provider, r.region) for r in TABLE.regions} - set(PUBLISHED_REGIONS)
    assert stale == set()


def test_gcp_us_east7_is_priced_at_google_s_figure_not_the_world_average() -> None:
    value = lookup_intensity("gcp", "us-east7")
    assert value.kind == "cloud_region" and value.vintage == "2025"
    assert value.intensity_g_per_kwh != TABLE.world.intensity_g_per_kwh


CHECKED_BOTOCORE = "1.44.8"  # the botocore whose endpoints.json the AWS list was read from


def test_the_installed_aws_sdk_lists_no_region_the_published_list_lacks() -> None:
    botocore = pytest.importorskip("botocore")
    if botocore.__version__ != CHECKED_BOTOCORE:
        # botocore is not pinned: a release that adds a region must not turn an unrelated CI run
        # red. Re-read the list from the new endpoints.json and move CHECKED_BOTOCORE on.
        pytest.skip(f"botocore {botocore.__version__}, the list was read from {CHECKED_BOTOCORE}")
    endpoints = Path(botocore.__file__).parent / "data" / "endpoints.json"
    data = json.loads(endpoints.read_text(encoding="utf-8"))
    public = {"aws", "aws-cn", "aws-us-gov", "aws-eusc"}  # aws-iso*: classified regions
    listed = {
        ("aws", region)
        for partition in data["partitions"]
        if partition["partition"] in public
        for region in partition["regions"]
    }
    assert listed - set(PUBLISHED_REGIONS) == set(), "add these regions to intensity.csv"


def test_the_light_name_reader_agrees_with_the_full_table() -> None:
    from carbonpipe.intensity.names import region_names

    assert region_names() == {r.region: r.provider for r in TABLE.regions}
