"""Everyday equivalents of a step's footprint: phone charges, car distance, tree uptake, LED hours.

The factors live in ``data/factors.yaml``, each with its source and vintage. Energy comparisons
(phone charges, LED hours) come from kWh and CO2 comparisons (car, tree) from kg CO2e, so a step
on a clean grid still shows the phone charges its energy would fill, but little driving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from numbers import Real
from pathlib import Path

from carbonpipe.intensity.table import format_g_per_kwh
from carbonpipe.units import ENERGY_UNITS, MASS_UNITS, format_scaled, sig3

FACTORS_FILE = Path(__file__).parent / "data" / "factors.yaml"
FACTORS_SCHEMA = "carbonpipe.factors/1"
COMPARISON_KEYS = ("smartphone_charges", "car_distance", "tree_absorption", "led_bulb")

# Definitions, not measurements: the international mile and the Julian year.
KM_PER_MILE = 1.609344
DAYS_PER_YEAR = 365.25
_SECONDS_PER_DAY = 24 * 60 * 60
_TIME_UNITS = (
    ("second", 1.0),
    ("minute", 60.0),
    ("hour", 3600.0),
    ("day", float(_SECONDS_PER_DAY)),
    ("year", DAYS_PER_YEAR * _SECONDS_PER_DAY),
)
_DISTANCE_UNITS = (("meter", 1.0), ("km", 1000.0))
_WORD_UNITS = frozenset({"second", "minute", "hour", "day", "year", "meter"})


@dataclass(frozen=True)
class Factor:
    """One sourced equivalence factor."""

    name: str
    value: float
    unit: str
    source: str
    vintage: str


@dataclass(frozen=True)
class Factors:
    """The equivalence factors carbonpipe uses, as read from ``factors.yaml``."""

    smartphone_charge_energy: Factor  # kWh per smartphone charge
    smartphone_charge_co2: Factor  # g CO2 per smartphone charge (reference only)
    passenger_car_co2_per_mile: Factor  # g CO2e per mile
    tree_seedling_co2: Factor  # kg CO2 per seedling over its growing period
    tree_seedling_growing_period: Factor  # years
    led_bulb_power: Factor  # W

    @property
    def car_g_co2e_per_km(self) -> float:
        """Grams of CO2e per kilometre driven."""
        return self.passenger_car_co2_per_mile.value / KM_PER_MILE

    @property
    def tree_kg_co2_per_minute(self) -> float:
        """Kilograms of CO2 one tree seedling takes up per minute, averaged over its period."""
        minutes = self.tree_seedling_growing_period.value * DAYS_PER_YEAR * _SECONDS_PER_DAY / 60
        return self.tree_seedling_co2.value / minutes


_EXPECTED_UNITS = {
    "smartphone_charge_energy": "kWh per smartphone charge",
    "smartphone_charge_co2": "g CO2 per smartphone charge",
    "passenger_car_co2_per_mile": "g CO2e per mile",
    "tree_seedling_co2": "kg CO2 per tree seedling over its growing period",
    "tree_seedling_growing_period": "years",
    "led_bulb_power": "W",
}
_FACTOR_FIELDS = ("value", "unit", "source", "vintage")


@dataclass(frozen=True)
class Equivalents:
    """A footprint in everyday units: energy-based (phone, LED) and CO2-based (car, tree)."""

    smartphone_charges: float
    car_km: float
    tree_minutes: float
    led_bulb_hours: float


def load_factors(path: str | Path | None = None) -> Factors:
    """Read and validate a factors file; the packaged one (cached) when ``path`` is None."""
    if path is None:
        return _default_factors()
    return _parse_factors(Path(path))


def equivalents(energy_kwh: float, emissions_kg_co2e: float) -> Equivalents:
    """Convert energy and emissions into phone charges, car km, tree minutes and LED hours."""
    energy = _check_amount("energy_kwh", energy_kwh)
    emissions = _check_amount("emissions_kg_co2e", emissions_kg_co2e)
    f = load_factors()
    return Equivalents(
        smartphone_charges=energy / f.smartphone_charge_energy.value,
        car_km=emissions * 1000 / f.car_g_co2e_per_km,
        tree_minutes=emissions / f.tree_kg_co2_per_minute,
        led_bulb_hours=energy * 1000 / f.led_bulb_power.value,
    )


def emissions_comparison(energy_kwh: float, emissions_kg_co2e: float) -> dict[str, str]:
    """Return the four comparisons as display strings, keyed by :data:`COMPARISON_KEYS`."""
    eq = equivalents(energy_kwh, emissions_kg_co2e)
    return {
        "smartphone_charges": f"📱 {_format_count(eq.smartphone_charges, 'smartphone charge')}",
        "car_distance": f"🚗 {_format_scaled(eq.car_km * 1000, _DISTANCE_UNITS)} of car driving",
        "tree_absorption": (
            f"🌳 {_format_scaled(eq.tree_minutes * 60, _TIME_UNITS)} of tree CO2 absorption"
        ),
        "led_bulb": f"💡 {_format_scaled(eq.led_bulb_hours * 3600, _TIME_UNITS)} of LED bulb usage",
    }


def summary_line(
    energy_kwh: float,
    emissions_kg_co2e: float,
    intensity_g_per_kwh: float,
    *,
    location: str | None = None,
) -> str:
    """Return one line for CLI and task logs: energy, CO2e, intensity, location, phone charges."""
    energy = _check_amount("energy_kwh", energy_kwh)
    emissions = _check_amount("emissions_kg_co2e", emissions_kg_co2e)
    intensity = _check_amount("intensity_g_per_kwh", intensity_g_per_kwh)
    if location is not None and not isinstance(location, str):
        raise TypeError(f"location must be a str or None, got {type(location).__name__}")
    where = f" ({location})" if location else ""
    phones = emissions_comparison(energy, emissions)["smartphone_charges"]
    return (
        f"carbonpipe: {format_energy(energy)}, {format_mass(emissions)} CO2e "
        f"at {format_g_per_kwh(intensity)} g/kWh{where} · {phones}"
    )


def format_energy(energy_kwh: float) -> str:
    """Energy with a readable unit, µWh to GWh, three significant figures."""
    return _format_scaled(_check_amount("energy_kwh", energy_kwh) * 1000, ENERGY_UNITS)


def format_mass(mass_kg: float) -> str:
    """A mass of CO2e with a readable unit, µg to t, three significant figures."""
    return _format_scaled(_check_amount("mass_kg", mass_kg) * 1000, MASS_UNITS)


def _check_amount(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _format_count(value: float, noun: str) -> str:
    text = sig3(value)
    return f"{text} {noun if text == '1' else noun + 's'}"


def _format_scaled(base: float, units: tuple[tuple[str, float], ...]) -> str:
    return format_scaled(base, units, words=_WORD_UNITS)


@lru_cache(maxsize=1)
def _default_factors() -> Factors:
    return _parse_factors(FACTORS_FILE)


def _parse_factors(path: Path) -> Factors:
    import yaml  # deferred: importing carbonpipe.impact must stay cheap

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read factors file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping with 'schema' and 'factors'")
    if document.get("schema") != FACTORS_SCHEMA:
        raise ValueError(
            f"{path}, field 'schema': must be {FACTORS_SCHEMA!r}, got {document.get('schema')!r}"
        )
    table = document.get("factors")
    if not isinstance(table, dict):
        raise ValueError(f"{path}, field 'factors': must be a mapping of factor name to factor")
    unknown = sorted(set(table) - set(_EXPECTED_UNITS))
    if unknown:
        raise ValueError(f"{path}: unknown factor(s) {unknown}; known: {sorted(_EXPECTED_UNITS)}")
    parsed = {}
    for name, unit in _EXPECTED_UNITS.items():
        if name not in table:
            raise ValueError(f"{path}: factor {name!r} is missing")
        parsed[name] = _parse_factor(path, name, table[name], unit)
    return Factors(**{f.name: parsed[f.name] for f in fields(Factors)})


def _parse_factor(path: Path, name: str, entry: object, unit: str) -> Factor:
    def bad(field: str, problem: str) -> ValueError:
        return ValueError(f"{path}, factor {name!r}, field {field!r}: {problem}")

    if not isinstance(entry, dict):
        raise bad("*", f"must be a mapping with {', '.join(_FACTOR_FIELDS)}")
    for field in _FACTOR_FIELDS:
        if field not in entry:
            raise bad(field, "is missing")
    extra = sorted(set(entry) - set(_FACTOR_FIELDS))
    if extra:
        raise bad(extra[0], f"is not a factor field ({', '.join(_FACTOR_FIELDS)})")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise bad("value", f"must be a number, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise bad("value", f"must be a finite positive number, got {value!r}")
    if entry["unit"] != unit:
        raise bad("unit", f"must be {unit!r}, got {entry['unit']!r}")
    for field in ("source", "vintage"):
        text = entry[field]
        if not isinstance(text, str) or not text.strip():
            raise bad(field, f"must be non-empty text, got {text!r}")
    return Factor(
        name, float(value), unit, " ".join(entry["source"].split()), entry["vintage"].strip()
    )
