"""Tests for carbonpipe.impact: sourced factors, everyday equivalents and their wording."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbonpipe.impact import (
    COMPARISON_KEYS,
    FACTORS_FILE,
    Equivalents,
    emissions_comparison,
    equivalents,
    load_factors,
    summary_line,
)

RAW: dict[str, Any] = yaml.safe_load(FACTORS_FILE.read_text(encoding="utf-8"))
F = {name: entry["value"] for name, entry in RAW["factors"].items()}

# Hand-derived from the factors file; the mile and the Julian year are definitions.
KWH_PER_CHARGE = F["smartphone_charge_energy"]
G_PER_KM = F["passenger_car_co2_per_mile"] / 1.609344
KG_PER_KM = G_PER_KM / 1000
KG_PER_TREE_MINUTE = F["tree_seedling_co2"] / (F["tree_seedling_growing_period"] * 365.25 * 1440)
LED_KW = F["led_bulb_power"] / 1000


def test_every_factor_has_value_unit_source_and_vintage() -> None:
    for name, entry in RAW["factors"].items():
        assert isinstance(entry["value"], (int, float)) and entry["value"] > 0, name
        for field in ("unit", "source", "vintage"):
            assert isinstance(entry[field], str) and entry[field].strip(), (name, field)


def test_factors_are_the_published_epa_figures() -> None:
    # EPA's own units: 1.24e-5 t CO2 per charge, 3.93e-4 t CO2e per mile, 0.060 t per seedling.
    assert F["smartphone_charge_co2"] == pytest.approx(1.24e-5 * 1e6)
    assert F["passenger_car_co2_per_mile"] == pytest.approx(3.93e-4 * 1e6)
    assert F["tree_seedling_co2"] == pytest.approx(0.060 * 1e3)
    assert F["tree_seedling_growing_period"] == 10


def test_loaded_factors_match_the_file() -> None:
    factors = load_factors()
    assert factors.smartphone_charge_energy.value == KWH_PER_CHARGE
    assert factors.car_g_co2e_per_km == pytest.approx(G_PER_KM)
    assert factors.tree_kg_co2_per_minute == pytest.approx(KG_PER_TREE_MINUTE)
    assert factors.led_bulb_power.source == " ".join(
        RAW["factors"]["led_bulb_power"]["source"].split()
    )


@pytest.mark.parametrize(
    ("energy_kwh", "emissions_kg"),
    [
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(0.0123, 0.00456, id="small-step"),
        pytest.param(2.5, 0.9, id="training-run"),
        pytest.param(1200.0, 30.0, id="big-run-clean-grid"),
    ],
)
def test_equivalents_come_from_the_factors(energy_kwh: float, emissions_kg: float) -> None:
    got = equivalents(energy_kwh, emissions_kg)
    assert isinstance(got, Equivalents)
    assert astuple(got) == pytest.approx(
        (
            energy_kwh / KWH_PER_CHARGE,
            emissions_kg * 1000 / G_PER_KM,
            emissions_kg / KG_PER_TREE_MINUTE,
            energy_kwh / LED_KW,
        )
    )


def test_energy_comparisons_follow_energy_and_co2_comparisons_follow_co2() -> None:
    dirty, clean = equivalents(1.0, 0.8), equivalents(1.0, 0.02)
    assert dirty.smartphone_charges == clean.smartphone_charges
    assert dirty.led_bulb_hours == clean.led_bulb_hours
    assert dirty.car_km == pytest.approx(40 * clean.car_km)
    assert dirty.tree_minutes == pytest.approx(40 * clean.tree_minutes)


def test_comparison_has_exactly_the_four_keys() -> None:
    got = emissions_comparison(0.5, 0.2)
    assert (
        tuple(got)
        == COMPARISON_KEYS
        == (
            "smartphone_charges",
            "car_distance",
            "tree_absorption",
            "led_bulb",
        )
    )


@pytest.mark.parametrize(
    ("energy_kwh", "emissions_kg", "key", "expected"),
    [
        pytest.param(2.3 * KWH_PER_CHARGE, 0, "smartphone_charges", "📱 2.3 smartphone charges", id="phones"),
        pytest.param(KWH_PER_CHARGE, 0, "smartphone_charges", "📱 1 smartphone charge", id="one-phone"),
        pytest.param(12345.6 * KWH_PER_CHARGE, 0, "smartphone_charges", "📱 12,300 smartphone charges", id="many-phones"),
        pytest.param(1e-9, 0, "smartphone_charges", "📱 <0.001 smartphone charges", id="tiny-phones"),
        pytest.param(0, 0.450 * KG_PER_KM, "car_distance", "🚗 450 meters of car driving", id="meters"),
        pytest.param(0, 0.0123456 * KG_PER_KM, "car_distance", "🚗 12.3 meters of car driving", id="few-meters"),
        pytest.param(0, 1.0 * KG_PER_KM, "car_distance", "🚗 1 km of car driving", id="one-km"),
        pytest.param(0, 0.9996 * KG_PER_KM, "car_distance", "🚗 1 km of car driving", id="rounds-up-to-km"),
        pytest.param(0, 12.345 * KG_PER_KM, "car_distance", "🚗 12.3 km of car driving", id="km"),
        pytest.param(0, 15.2 * KG_PER_TREE_MINUTE, "tree_absorption", "🌳 15.2 minutes of tree CO2 absorption", id="minutes"),
        pytest.param(0, 0.5 * KG_PER_TREE_MINUTE, "tree_absorption", "🌳 30 seconds of tree CO2 absorption", id="seconds"),
        pytest.param(0, 59.999 * KG_PER_TREE_MINUTE, "tree_absorption", "🌳 1 hour of tree CO2 absorption", id="rounds-up-to-hour"),
        pytest.param(0, 180 * KG_PER_TREE_MINUTE, "tree_absorption", "🌳 3 hours of tree CO2 absorption", id="hours"),
        pytest.param(0, 2.5 * 1440 * KG_PER_TREE_MINUTE, "tree_absorption", "🌳 2.5 days of tree CO2 absorption", id="days"),
        pytest.param(0, F["tree_seedling_co2"] * 1.5, "tree_absorption", "🌳 15 years of tree CO2 absorption", id="years"),
        pytest.param(4.1 * LED_KW, 0, "led_bulb", "💡 4.1 hours of LED bulb usage", id="led-hours"),
        pytest.param(LED_KW / 60, 0, "led_bulb", "💡 1 minute of LED bulb usage", id="led-minute"),
        pytest.param(0, 0, "led_bulb", "💡 0 seconds of LED bulb usage", id="led-zero"),
        pytest.param(0, 0, "car_distance", "🚗 0 meters of car driving", id="car-zero"),
    ],
)  # fmt: skip
def test_comparison_wording_switches_units_and_rounds_to_three_figures(
    energy_kwh: float, emissions_kg: float, key: str, expected: str
) -> None:
    assert emissions_comparison(energy_kwh, emissions_kg)[key] == expected


def test_summary_line() -> None:
    # 12.5 Wh at 0.012 kWh per charge is 1.0416... charges: "1.04".
    assert KWH_PER_CHARGE == 0.012
    assert (
        summary_line(0.0125, 0.00456, 370.4, location="gcp/europe-west1")
        == "carbonpipe: 12.5 Wh, 4.56 g CO2e at 370 g/kWh (gcp/europe-west1) · 📱 1.04 smartphone charges"
    )


@pytest.mark.parametrize(
    ("energy_kwh", "emissions_kg", "intensity", "expected_start"),
    [
        pytest.param(0, 0, 0, "carbonpipe: 0 Wh, 0 g CO2e at 0.0 g/kWh ·", id="zero"),
        pytest.param(3.21, 1.5, 467.3, "carbonpipe: 3.21 kWh, 1.5 kg CO2e at 467 g/kWh ·", id="kwh"),
        pytest.param(4500, 2000, 444, "carbonpipe: 4.5 MWh, 2 t CO2e at 444 g/kWh ·", id="mwh"),
        pytest.param(0.9999, 0.1, 5.67, "carbonpipe: 1 kWh, 100 g CO2e at 5.7 g/kWh ·", id="rounds-up"),
    ],
)  # fmt: skip
def test_summary_line_scales_units(
    energy_kwh: float, emissions_kg: float, intensity: float, expected_start: str
) -> None:
    assert summary_line(energy_kwh, emissions_kg, intensity).startswith(expected_start)


@pytest.mark.parametrize(
    ("args", "error", "argument"),
    [
        pytest.param((-1.0, 0.1), ValueError, "energy_kwh", id="negative-energy"),
        pytest.param((0.1, -0.5), ValueError, "emissions_kg_co2e", id="negative-emissions"),
        pytest.param((math.nan, 0.1), ValueError, "energy_kwh", id="nan-energy"),
        pytest.param((0.1, math.inf), ValueError, "emissions_kg_co2e", id="inf-emissions"),
        pytest.param(("1", 0.1), TypeError, "energy_kwh", id="string-energy"),
        pytest.param((0.1, True), TypeError, "emissions_kg_co2e", id="bool-emissions"),
        pytest.param((0.1, None), TypeError, "emissions_kg_co2e", id="none-emissions"),
    ],
)
def test_bad_amounts_raise_naming_the_argument(
    args: tuple[object, object], error: type[Exception], argument: str
) -> None:
    for function in (equivalents, emissions_comparison):
        with pytest.raises(error, match=argument):
            function(*args)  # type: ignore[arg-type]
    with pytest.raises(error, match=argument):
        summary_line(*args, 100.0)  # type: ignore[arg-type]


def test_summary_line_rejects_a_bad_intensity() -> None:
    with pytest.raises(ValueError, match="intensity_g_per_kwh"):
        summary_line(0.1, 0.01, -3)


# --- validation of the factors file -------------------------------------------------------


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "factors.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _changed(name: str, field: str, value: object) -> dict[str, Any]:
    document = yaml.safe_load(FACTORS_FILE.read_text(encoding="utf-8"))
    if value is None:
        del document["factors"][name][field]
    else:
        document["factors"][name][field] = value
    return document


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        pytest.param("led_bulb_power", "value", -10, id="negative"),
        pytest.param("led_bulb_power", "value", "ten", id="text"),
        pytest.param("passenger_car_co2_per_mile", "unit", "g CO2e per km", id="wrong-unit"),
        pytest.param("tree_seedling_co2", "source", "  ", id="blank-source"),
        pytest.param("smartphone_charge_energy", "vintage", None, id="missing-vintage"),
        pytest.param("smartphone_charge_co2", "comment", "x", id="unknown-field"),
    ],
)
def test_a_bad_factor_is_reported_by_name_and_field(
    tmp_path: Path, name: str, field: str, value: object
) -> None:
    path = _write(tmp_path, _changed(name, field, value))
    with pytest.raises(ValueError, match=rf"factor '{name}', field '{field}'"):
        load_factors(path)


def test_a_missing_factor_is_reported(tmp_path: Path) -> None:
    document = yaml.safe_load(FACTORS_FILE.read_text(encoding="utf-8"))
    del document["factors"]["tree_seedling_growing_period"]
    with pytest.raises(ValueError, match="factor 'tree_seedling_growing_period' is missing"):
        load_factors(_write(tmp_path, document))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(["not", "a", "mapping"], "expected a mapping", id="list"),
        pytest.param({"schema": "other/9", "factors": {}}, "field 'schema'", id="schema"),
        pytest.param({"schema": "carbonpipe.factors/1", "factors": []}, "field 'factors'", id="factors"),
    ],
)  # fmt: skip
def test_a_malformed_factors_file_is_rejected(
    tmp_path: Path, document: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_factors(_write(tmp_path, document))


def test_importing_the_module_loads_no_yaml() -> None:
    code = (
        "import sys; sys.modules.pop('yaml', None);"
        "import carbonpipe.impact as m;"
        "assert m._default_factors.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_summary_line_shows_tiny_steps_in_micro_units() -> None:
    line = summary_line(3e-9, 3.8e-10, 126.0, location="gcp/europe-west1")
    assert line.startswith("carbonpipe: 3 µWh, 0.38 µg CO2e at 126 g/kWh (gcp/europe-west1)")
    assert summary_line(2.5e-6, 3e-7, 126.0).startswith("carbonpipe: 2.5 mWh, 300 µg CO2e")
