"""Tests for carbonpipe.intensity.table: the data file, lookups and fallbacks, and recommendations."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carbonpipe.intensity import table as intensity
from carbonpipe.intensity.table import (
    DATA_FILE,
    Intensity,
    Recommendation,
    country_for_region,
    load_table,
    lookup_intensity,
    regional_recommendations,
    regions,
)


def _file_rows() -> list[dict[str, str]]:
    """Read the packaged CSV independently of the module under test."""
    lines = [
        line
        for line in DATA_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return list(csv.DictReader(lines))


ROWS = _file_rows()
BY_KEY = {(r["provider"], r["region"]): r for r in ROWS}
COUNTRIES = {r["country_iso"]: r for r in ROWS if r["provider"] == "country"}
WORLD_ROW = next(r for r in ROWS if r["provider"] == "world")


def _value(row: dict[str, str]) -> float:
    return float(row["intensity_g_per_kwh"])


def _angle(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle angle between two (lat, lon) points, computed independently (haversine)."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * math.asin(math.sqrt(h))


def _position(row: dict[str, str]) -> tuple[float, float]:
    return float(row["latitude"]), float(row["longitude"])


# --- the data file ------------------------------------------------------------------------


def test_every_intensity_value_has_a_source_and_a_vintage() -> None:
    for row in ROWS:
        if row["intensity_g_per_kwh"]:
            assert row["source"].strip(), row
            assert row["vintage"].strip(), row
        else:
            assert row["provider"] in intensity.PROVIDERS, row
            assert not row["source"] and not row["vintage"], row


@pytest.mark.parametrize(
    ("provider", "minimum"),
    [
        pytest.param("gcp", 40, id="gcp"),
        pytest.param("aws", 30, id="aws"),
        pytest.param("azure", 50, id="azure"),
        pytest.param("country", 200, id="countries"),
    ],
)
def test_file_covers_the_main_regions_of_each_provider(provider: str, minimum: int) -> None:
    assert sum(r["provider"] == provider for r in ROWS) >= minimum


def test_file_has_exactly_one_world_row() -> None:
    assert [r["region"] for r in ROWS if r["provider"] == "world"] == ["WORLD"]


def test_every_cloud_region_names_a_country_with_a_figure() -> None:
    for row in ROWS:
        if row["provider"] in intensity.PROVIDERS:
            assert row["country_iso"] in COUNTRIES, row


@pytest.mark.parametrize("provider", intensity.PROVIDERS)
def test_each_provider_has_at_least_25_regions_with_their_own_figure(provider: str) -> None:
    own = [r for r in ROWS if r["provider"] == provider and r["intensity_g_per_kwh"]]
    assert len(own) >= 25


def test_packaged_table_loads_and_matches_the_file() -> None:
    table = load_table()
    assert len(table.regions) == sum(r["provider"] in intensity.PROVIDERS for r in ROWS)
    assert len(table.countries) == len(COUNTRIES)
    assert table.world.intensity_g_per_kwh == _value(WORLD_ROW)


# --- lookups --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "region", "key"),
    [
        pytest.param("gcp", "europe-west1", ("gcp", "europe-west1"), id="gcp-region"),
        pytest.param("gcp", "us-central1-a", ("gcp", "us-central1"), id="gcp-zone"),
        pytest.param("GCP", " europe-north1 ", ("gcp", "europe-north1"), id="gcp-case-space"),
        pytest.param("aws", "eu-west-3", ("aws", "eu-west-3"), id="aws-region"),
        pytest.param("aws", "us-east-1a", ("aws", "us-east-1"), id="aws-az"),
        pytest.param("aws", "us-gov-west-1b", ("aws", "us-gov-west-1"), id="aws-govcloud-az"),
        pytest.param("azure", "westeurope", ("azure", "westeurope"), id="azure-name"),
        pytest.param("azure", "West Europe", ("azure", "westeurope"), id="azure-display-name"),
        pytest.param("azure", "UK South", ("azure", "uksouth"), id="azure-display-uk"),
    ],
)
def test_known_region_returns_its_published_figure(
    provider: str, region: str, key: tuple[str, str]
) -> None:
    row = BY_KEY[key]
    got = lookup_intensity(provider, region)
    assert got == Intensity(
        _value(row), row["source"], row["vintage"], "cloud_region", f"{key[0]}:{key[1]}"
    )


@pytest.mark.parametrize(
    ("provider", "region", "country_iso", "expected_zone", "expected_kind"),
    [
        pytest.param("aws", "eu-south-2", None, "ESP", "country", id="location-only-region"),
        pytest.param("gcp", "mars-north1", "FR", "FRA", "country", id="unknown-region-country"),
        pytest.param("gcp", "mars-north1", None, "WORLD", "world", id="unknown-region-world"),
        pytest.param(None, None, "DEU", "DEU", "country", id="off-cloud-alpha3"),
        pytest.param(None, None, "de", "DEU", "country", id="off-cloud-alpha2-lower"),
        pytest.param(None, "us-east-1", "JP", "JPN", "country", id="region-without-provider"),
        pytest.param(None, None, "ZZZ", "WORLD", "world", id="unknown-country-code"),
        pytest.param(None, None, None, "WORLD", "world", id="nothing-known"),
        pytest.param("", "", "", "WORLD", "world", id="empty-strings"),
        pytest.param("aws", "ca-west-1", "XX", "CAN", "country", id="bad-country-then-region"),
    ],
)
def test_lookup_falls_back_to_country_then_world(
    provider: str | None,
    region: str | None,
    country_iso: str | None,
    expected_zone: str,
    expected_kind: str,
) -> None:
    expected_row = WORLD_ROW if expected_zone == "WORLD" else COUNTRIES[expected_zone]
    got = lookup_intensity(provider, region, country_iso)
    assert got.kind == expected_kind
    assert got.zone == expected_zone
    assert got.intensity_g_per_kwh == _value(expected_row)
    assert (got.source_name, got.vintage) == (expected_row["source"], expected_row["vintage"])


def test_region_figure_wins_over_a_country_argument() -> None:
    got = lookup_intensity("azure", "westeurope", "FR")
    assert got.zone == "azure:westeurope"


@pytest.mark.parametrize(
    ("alpha2", "alpha3"),
    [
        pytest.param(r["country_iso2"], r["country_iso"], id=r["country_iso"])
        for r in ROWS
        if r["country_iso"] in {"FRA", "USA", "IND", "BRA", "JPN", "ZAF", "GBR"}
        and r["provider"] == "country"
    ],
)
def test_alpha2_and_alpha3_codes_give_the_same_answer(alpha2: str, alpha3: str) -> None:
    assert lookup_intensity(None, None, alpha2) == lookup_intensity(None, None, alpha3.lower())


def test_to_source_dict_is_the_records_intensity_source() -> None:
    got = lookup_intensity("gcp", "europe-west9")
    assert got.to_source_dict() == {
        "name": got.source_name,
        "vintage": got.vintage,
        "kind": "cloud_region",
    }


@pytest.mark.parametrize(
    ("provider", "region", "expected"),
    [
        pytest.param(
            "gcp", "europe-north1", BY_KEY["gcp", "europe-north1"]["country_iso"], id="gcp"
        ),
        pytest.param("aws", "me-central-1", BY_KEY["aws", "me-central-1"]["country_iso"], id="aws"),
        pytest.param(
            "azure", "Japan East", BY_KEY["azure", "japaneast"]["country_iso"], id="azure"
        ),
        pytest.param("gcp", "europe-west99", None, id="unknown"),
        pytest.param(None, "europe-west1", None, id="no-provider"),
        pytest.param("aws", None, None, id="no-region"),
    ],
)
def test_country_for_region(provider: str | None, region: str | None, expected: str | None) -> None:
    assert country_for_region(provider, region) == expected


def test_regions_lists_rows_of_one_provider_or_all() -> None:
    gcp = regions("gcp")
    assert {r.provider for r in gcp} == {"gcp"}
    assert [r.region for r in gcp] == [r["region"] for r in ROWS if r["provider"] == "gcp"]
    assert len(regions()) == sum(r["provider"] in intensity.PROVIDERS for r in ROWS)


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        pytest.param(lambda: lookup_intensity(5, None), TypeError, "provider", id="provider-type"),  # type: ignore[arg-type]
        pytest.param(lambda: lookup_intensity("oracle", None), ValueError, "provider", id="provider-value"),
        pytest.param(lambda: lookup_intensity("gcp", 3), TypeError, "region", id="region-type"),  # type: ignore[arg-type]
        pytest.param(lambda: lookup_intensity("gcp", None, 250), TypeError, "country_iso", id="country-type"),  # type: ignore[arg-type]
        pytest.param(lambda: lookup_intensity("gcp", None, "France"), ValueError, "country_iso", id="country-name"),
        pytest.param(lambda: lookup_intensity(None, None, "F1"), ValueError, "country_iso", id="country-digits"),
        pytest.param(lambda: country_for_region("ibm", "x"), ValueError, "provider", id="country-for-region"),
        pytest.param(lambda: regions("digitalocean"), ValueError, "provider", id="regions"),
        pytest.param(lambda: regional_recommendations("gcp", "europe-west3", limit=-1), ValueError, "limit", id="limit-negative"),
        pytest.param(lambda: regional_recommendations("gcp", "europe-west3", limit=2.5), TypeError, "limit", id="limit-type"),  # type: ignore[arg-type]
        pytest.param(lambda: regional_recommendations("gcp", "europe-west3", min_saving_percent=100), ValueError, "min_saving_percent", id="min-saving"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_naming_the_argument(
    call: object, error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        call()  # type: ignore[operator]


def test_importing_the_module_reads_no_file() -> None:
    code = (
        "import carbonpipe.intensity.table as m; assert m._default_table.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- recommendations ----------------------------------------------------------------------


def _region_recs(recs: list[Recommendation]) -> list[Recommendation]:
    return [r for r in recs if r.kind == "region"]


@pytest.mark.parametrize(
    ("provider", "region"),
    [
        pytest.param("gcp", "europe-west3", id="gcp-frankfurt"),
        pytest.param("gcp", "us-east1", id="gcp-south-carolina"),
        pytest.param("aws", "eu-central-1", id="aws-frankfurt"),
        pytest.param("aws", "ap-southeast-2", id="aws-sydney"),
        pytest.param("azure", "eastus", id="azure-virginia"),
        pytest.param("azure", "germanywestcentral", id="azure-frankfurt"),
    ],
)
def test_recommendations_are_lower_regions_nearest_first_with_computed_savings(
    provider: str, region: str
) -> None:
    here = BY_KEY[provider, region]
    current = _value(here)
    recs = _region_recs(regional_recommendations(provider, region))
    assert 0 < len(recs) <= 3
    angles = []
    for rec in recs:
        assert rec.provider == provider and rec.region is not None
        row = BY_KEY[provider, rec.region]
        value = _value(row) if row["intensity_g_per_kwh"] else _value(COUNTRIES[row["country_iso"]])
        assert rec.intensity_g_per_kwh == value < current
        assert rec.saving_percent is not None
        assert rec.saving_percent == pytest.approx((current - value) / current * 100)
        assert rec.saving_percent >= 10
        assert str(rec) == rec.text
        assert rec.text.startswith(f"Consider migrating to {rec.region} ")
        assert f"{rec.saving_percent:.0f}% lower carbon intensity than {region} " in rec.text
        angles.append(_angle(_position(here), _position(row)))
    assert angles == sorted(angles)


def test_recommendations_pick_the_nearest_of_all_lower_regions() -> None:
    here = BY_KEY["gcp", "europe-west3"]
    lower = [
        r
        for r in ROWS
        if r["provider"] == "gcp"
        and (_value(here) - _value(r)) / _value(here) * 100 >= 10
        and r["region"] != "europe-west3"
    ]
    nearest = sorted(lower, key=lambda r: _angle(_position(here), _position(r)))[:3]
    recs = _region_recs(regional_recommendations("gcp", "europe-west3"))
    assert [r.region for r in recs] == [r["region"] for r in nearest]


def test_lowest_region_of_a_provider_gets_no_region_advice() -> None:
    lowest = min((r for r in ROWS if r["provider"] == "gcp"), key=_value)
    assert _region_recs(regional_recommendations("gcp", lowest["region"])) == []


def test_limit_caps_region_advice() -> None:
    assert len(_region_recs(regional_recommendations("gcp", "asia-south1", limit=5))) == 5
    assert _region_recs(regional_recommendations("gcp", "asia-south1", limit=0)) == []


def test_unknown_region_compares_with_its_country_average() -> None:
    poland = COUNTRIES["POL"]
    recs = _region_recs(regional_recommendations("gcp", "europe-nowhere9", country_iso="PL"))
    assert recs
    for rec in recs:
        assert rec.provider == "gcp" and rec.region is not None
        assert rec.intensity_g_per_kwh is not None and rec.saving_percent is not None
        assert rec.saving_percent == pytest.approx(
            (_value(poland) - rec.intensity_g_per_kwh) / _value(poland) * 100
        )
        assert f"than the {poland['location_name']} grid average" in rec.text
        # a national average against another figure for the same grid is no saving
        assert BY_KEY["gcp", rec.region]["country_iso"] != "POL"


def test_off_cloud_without_location_ranks_all_providers_by_intensity() -> None:
    world = _value(WORLD_ROW)
    recs = _region_recs(regional_recommendations(None, None, limit=5))
    values = [r.intensity_g_per_kwh for r in recs]
    assert values == sorted(values)  # type: ignore[type-var]
    cloud = [r for r in ROWS if r["provider"] in intensity.PROVIDERS and r["intensity_g_per_kwh"]]
    assert values[0] == min(_value(r) for r in cloud)
    for rec in recs:
        assert "than the world average" in rec.text
        assert rec.saving_percent == pytest.approx((world - rec.intensity_g_per_kwh) / world * 100)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("provider", "region", "country_iso"),
    [
        pytest.param("gcp", "europe-west3", None, id="known-region"),
        pytest.param("aws", "mars-1", "BR", id="unknown-region"),
        pytest.param(None, None, None, id="off-cloud"),
        pytest.param("gcp", "northamerica-northeast1", None, id="already-lowest"),
    ],
)
def test_time_shift_advice_has_no_number_without_hourly_data(
    provider: str | None, region: str | None, country_iso: str | None
) -> None:
    recs = regional_recommendations(provider, region, country_iso=country_iso)
    shifts = [r for r in recs if r.kind == "time_shift"]
    assert len(shifts) == 1
    (shift,) = shifts
    assert shift.saving_percent is None and shift.intensity_g_per_kwh is None
    assert not re.search(r"\d", shift.text)
    assert recs[-1] is shift


def test_every_number_in_region_advice_is_in_the_data() -> None:
    for rec in _region_recs(regional_recommendations("aws", "ap-southeast-3")):
        grams = re.findall(r"([\d.]+) g/kWh", rec.text)
        assert intensity.format_g_per_kwh(rec.intensity_g_per_kwh or 0) == grams[0]


# --- validation of the data file ----------------------------------------------------------

_HEADER = ",".join(intensity.COLUMNS)
_GOOD = [
    "gcp,europe-west1,Belgium,BEL,,50.47,3.82,126.43,Google,2025,",
    "country,BEL,Belgium,BEL,BE,,,138.1,OWID,2023,",
    "world,WORLD,World,,,,,436,Ember,2022,",
]


def _write(tmp_path: Path, rows: list[str], header: str = _HEADER) -> Path:
    path = tmp_path / "intensity.csv"
    path.write_text("# a comment\n" + "\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_minimal_valid_file_loads(tmp_path: Path) -> None:
    table = load_table(_write(tmp_path, _GOOD))
    assert table.lookup("gcp", "europe-west1", None).intensity_g_per_kwh == 126.43
    assert table.lookup(None, None, "BE").zone == "BEL"


@pytest.mark.parametrize(
    ("rows", "line", "column"),
    [
        pytest.param([_GOOD[0].replace("50.47", "north"), *_GOOD[1:]], 3, "latitude", id="latitude-text"),
        pytest.param([_GOOD[0].replace("50.47", "95"), *_GOOD[1:]], 3, "latitude", id="latitude-range"),
        pytest.param([_GOOD[0].replace("126.43", "-4"), *_GOOD[1:]], 3, "intensity_g_per_kwh", id="negative"),
        pytest.param([_GOOD[0].replace("126.43", "nan"), *_GOOD[1:]], 3, "intensity_g_per_kwh", id="nan"),
        pytest.param([_GOOD[0].replace("Google", ""), *_GOOD[1:]], 3, "source", id="value-without-source"),
        pytest.param([_GOOD[0].replace(",2025,", ",,"), *_GOOD[1:]], 3, "vintage", id="value-without-vintage"),
        pytest.param([_GOOD[0].replace("126.43", ""), *_GOOD[1:]], 3, "source", id="source-without-value"),
        pytest.param([_GOOD[0].replace("gcp,", "oci,", 1), *_GOOD[1:]], 3, "provider", id="provider"),
        pytest.param([_GOOD[0].replace("BEL", "Belgium"), *_GOOD[1:]], 3, "country_iso", id="country"),
        pytest.param([_GOOD[0].replace("europe-west1", "Europe-West1"), *_GOOD[1:]], 3, "region", id="region-case"),
        pytest.param([*_GOOD, _GOOD[0]], 6, "region", id="duplicate-region"),
        pytest.param([_GOOD[0], _GOOD[1].replace(",BE,", ",,"), _GOOD[2]], 4, "country_iso2", id="no-alpha2"),
        pytest.param([_GOOD[0], _GOOD[1].replace("country,BEL", "country,BLX"), _GOOD[2]], 4, "region", id="country-key"),
        pytest.param([*_GOOD, "world,WORLD,World,,,,,480,Ember,2023,"], 6, "region", id="second-world"),
    ],
)  # fmt: skip
def test_a_bad_row_is_reported_by_line_and_column(
    tmp_path: Path, rows: list[str], line: int, column: str
) -> None:
    with pytest.raises(ValueError, match=rf"line {line}, column '{column}'"):
        load_table(_write(tmp_path, rows))


def test_a_missing_column_is_reported(tmp_path: Path) -> None:
    header = _HEADER.replace(",vintage", "")
    rows = [",".join(r.split(",")[:9] + r.split(",")[10:]) for r in _GOOD]
    with pytest.raises(ValueError, match=r"line 2: header .* missing \['vintage'\]"):
        load_table(_write(tmp_path, rows, header))


def test_a_short_row_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line 3: expected 11 fields, found 3"):
        load_table(_write(tmp_path, ["gcp,europe-west1,Belgium", *_GOOD[1:]]))


def test_a_file_without_a_world_row_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no world row"):
        load_table(_write(tmp_path, _GOOD[:2]))
