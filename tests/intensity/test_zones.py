"""Cloud regions -> grid zones (data/zones.csv) and the parsers under arbitrary bodies."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe.intensity import carbonaware, electricitymaps, uk, watttime
from carbonpipe.intensity.base import IntensitySeries
from carbonpipe.intensity.names import region_names
from carbonpipe.intensity.parsing import Malformed, make_series
from carbonpipe.intensity.zones import DATA_FILE, load_zones, zone_for


def test_every_cloud_region_of_the_table_has_a_zone_or_a_reason() -> None:
    rows = load_zones()
    missing = []
    for region, provider in region_names().items():
        row = rows.get((provider, region))
        if row is None:
            missing.append(f"{provider}:{region}")
        elif row.em_zone is None:
            assert row.note.startswith("unmapped: "), (provider, region)
    assert missing == []
    # No row of zones.csv names a region the table does not know.
    known = {(p, r) for r, p in region_names().items()}
    assert {k for k in rows if k[0] != "country"} <= known


def test_every_row_carries_source_and_vintage_and_the_file_its_licence() -> None:
    with open(DATA_FILE, encoding="utf-8") as f:
        text = f.read()
    assert "Real Time Cloud" in text and "License.md" in text
    for row in load_zones().values():
        assert row.source in ("GSF", "carbonpipe") and row.vintage.isdigit()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert list(csv.reader(lines))[0] == [
        "provider",
        "region",
        "em_zone",
        "watttime_region",
        "source",
        "vintage",
        "note",
    ]


def test_zone_for_each_source() -> None:
    assert zone_for("gcp", "europe-west1", "BEL") == "BE"
    assert zone_for("aws", "us-east-1", "USA", source="watttime") == "PJM_DC"
    assert zone_for("azure", "eastus", "USA", source="carbon-aware-sdk") == "eastus"
    assert zone_for("gcp", "europe-west2", "GBR", source="uk") == "GB"
    assert zone_for("gcp", "europe-west1", "BEL", source="uk") is None
    assert zone_for("gcp", "europe-west1", "BEL", source="file") == "BE"


def test_country_fallback_for_single_zone_countries_only() -> None:
    assert zone_for(None, None, "FRA") == "FR"
    assert zone_for("gcp", "no-such-region", "DEU") == "DE"
    assert zone_for(None, None, "USA") is None  # many zones: no guess
    assert zone_for("gcp", "us-east7", "USA") is None  # listed unmapped, with its reason


# --- Arbitrary bodies: a series or Malformed, nothing else -----------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_stamp = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
).map(lambda d: d.isoformat().replace("+00:00", "Z"))
_value = st.one_of(st.floats(allow_nan=False), st.integers(), st.none(), st.text(max_size=5))
_em_body = st.fixed_dictionaries(
    {
        "zone": st.just("BE"),
        "history": st.lists(
            st.fixed_dictionaries({"carbonIntensity": _value, "datetime": _stamp | _json}),
            max_size=5,
        ),
    }
)
_wt_body = st.fixed_dictionaries(
    {
        "data": st.lists(
            st.fixed_dictionaries({"point_time": _stamp | _json, "value": _value}), max_size=5
        ),
        "meta": st.fixed_dictionaries(
            {},
            optional={
                "units": st.sampled_from(["lbs_co2_per_mwh", "kg"]) | _json,
                "data_point_period_seconds": st.integers(-5, 100000) | _json,
                "signal_type": st.just("co2_moer") | _json,
                "generated_at": _stamp | _json,
            },
        ),
    }
)
_uk_body = st.fixed_dictionaries(
    {
        "data": st.lists(
            st.fixed_dictionaries(
                {
                    "from": _stamp | _json,
                    "to": _stamp | _json,
                    "intensity": st.fixed_dictionaries(
                        {}, optional={"forecast": _value, "actual": _value}
                    )
                    | _json,
                }
            ),
            max_size=4,
        )
    }
)


def _outcome(parse: Any, body: Any) -> None:
    body = json.loads(json.dumps(body))  # what the wire would give
    try:
        points = parse(body)
        if isinstance(points, tuple):
            points = points[0]
        series = make_series(
            points,
            source_name="t",
            zone="Z",
            signal="average",
            resolution_s=3600,
            vintage="",
            forecast=False,
        )
    except Malformed:
        return
    assert isinstance(series, IntensitySeries)
    assert all(p.start < p.end for p in series.points)
    assert all(a.end <= b.start for a, b in zip(series.points, series.points[1:], strict=False))
    assert all(0 <= p.intensity_g_per_kwh <= 5000 for p in series.points)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_json | _em_body | _wt_body | _uk_body)
def test_every_parser_gives_a_series_or_malformed(body: Any) -> None:
    _outcome(
        lambda b: electricitymaps.parse_points(b.get("history") if isinstance(b, dict) else b, "h"),
        body,
    )
    _outcome(watttime.parse_body, body)
    _outcome(lambda b: uk.parse_national(b, prefer_actual=True), body)
    _outcome(uk.parse_regional, body)
    _outcome(carbonaware.parse_history, body)
    _outcome(carbonaware.parse_forecast, body)
