"""carbonpipe.units: exact integer conversions, and figures shown with three significant digits."""

from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonpipe.units import (
    DISTANCE_UNITS,
    ENERGY_UNITS,
    MASS_UNITS,
    exact_scale,
    format_distance,
    format_energy,
    format_mass,
    kg_to_ng,
    kwh_to_nwh,
    ng_to_kg,
    nwh_to_kwh,
)

AMOUNTS = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
# int64 nanograms hold 9.2e6 kg; amounts anywhere from sub-nanogram to kilotonnes.
ANY_FLOAT = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@given(ANY_FLOAT)
def test_kg_to_ng_is_the_exactly_rounded_value(kg: float) -> None:
    exact = Fraction(kg) * 10**12  # the float's own binary value, no rounding yet
    ng = kg_to_ng(kg)
    assert ng == round(exact)  # Python rounds a Fraction half to even
    assert abs(ng - exact) <= Fraction(1, 2)
    assert kwh_to_nwh(kg) == ng  # the same scale for energy


@given(ANY_FLOAT, st.integers(min_value=-(10**15), max_value=10**15), st.integers(1, 10**6))
def test_exact_scale_matches_fraction_arithmetic(value: float, factor: int, divisor: int) -> None:
    assert exact_scale(value, factor, divisor) == round(Fraction(value) * factor / divisor)


@given(st.lists(AMOUNTS, max_size=200), st.randoms(use_true_random=False))
def test_integer_sums_do_not_depend_on_order(values: list[float], rnd: object) -> None:
    forward = sum(kg_to_ng(v) for v in values)
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert sum(kg_to_ng(v) for v in shuffled) == forward
    # Within half a nanogram per record of the exact sum of the floats themselves.
    assert abs(forward - sum((Fraction(v) for v in values), Fraction(0)) * 10**12) <= Fraction(
        len(values), 2
    )


@given(st.integers(min_value=0, max_value=2**52))
def test_small_enough_integers_round_trip_through_kg(ng: int) -> None:
    assert kg_to_ng(ng_to_kg(ng)) == ng
    assert kwh_to_nwh(nwh_to_kwh(ng)) == ng


def test_conversions_are_the_same_in_another_process() -> None:
    values = [0.1, 1e-12, 5e-13, 1.5e-12, 2.5e-12, 17.05e-9, 1e6, 123.456789]
    code = f"from carbonpipe.units import kg_to_ng;print([kg_to_ng(v) for v in {values!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([kg_to_ng(v) for v in values])
    # 2.5e-12 kg is a hair above 2.5 ng as a float: it rounds to 3, not by a float product.
    assert [kg_to_ng(v) for v in values][:5] == [
        100_000_000_000,
        1,
        round(Fraction(5e-13) * 10**12),
        round(Fraction(1.5e-12) * 10**12),
        round(Fraction(2.5e-12) * 10**12),
    ]


def test_conversions_refuse_what_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="nan"):
        kg_to_ng(float("nan"))
    with pytest.raises(ValueError, match="inf"):
        kwh_to_nwh(float("inf"))


# -- readable figures ---------------------------------------------------------------------------

_SHOWN = re.compile(r"^(-?)([0-9][0-9,]*(?:\.[0-9]+)?) (\S+)$")


def _parse(text: str, units: tuple[tuple[str, float], ...]) -> tuple[float, float]:
    m = _SHOWN.match(text)
    assert m, text
    size = dict(units)[m[3]]
    return float(m[2].replace(",", "")), size


@pytest.mark.parametrize(
    ("fmt", "units", "base"),
    [
        pytest.param(format_mass, MASS_UNITS, 1000.0, id="mass"),
        pytest.param(format_energy, ENERGY_UNITS, 1000.0, id="energy"),
        pytest.param(format_distance, DISTANCE_UNITS, 1000.0, id="distance"),
    ],
)
@given(exponent=st.floats(min_value=-8.9, max_value=8.9))
def test_figures_keep_three_significant_digits_in_a_unit_between_1_and_1000(
    fmt: object, units: tuple[tuple[str, float], ...], base: float, exponent: float
) -> None:
    # From the smallest unit to a thousand of the largest, for any magnitude in between.
    smallest, largest = units[0][1], units[-1][1]
    amount = 10**exponent
    base_amount = amount * base  # kg -> g, kWh -> Wh, km -> m
    if not smallest <= base_amount < largest * 1000:
        return
    text = fmt(amount)  # type: ignore[operator]
    shown, size = _parse(text, units)
    assert 1 <= shown < 1000 or (size == largest and shown >= 1000), text
    # Three significant digits: within half a unit in the third digit.
    assert abs(shown * size - base_amount) <= 0.005 * base_amount, text


@pytest.mark.parametrize(
    ("kg", "text"),
    [
        pytest.param(0.0, "0 g", id="zero"),
        pytest.param(1.80e-8, "18 µg", id="the-issue's-0.0000180-g"),
        pytest.param(17.05e-9, "17.1 µg", id="demo-total"),
        pytest.param(0.00042, "420 mg", id="milligrams"),
        pytest.param(0.9996, "1 kg", id="rounds-up-a-unit"),
        pytest.param(12345.0, "12.3 t", id="tonnes"),
        pytest.param(-0.5, "-500 g", id="negative"),
    ],
)
def test_masses_pick_their_unit(kg: float, text: str) -> None:
    assert format_mass(kg) == text


def test_energy_and_distance_pick_their_unit() -> None:
    assert format_energy(2.7e-8) == "27 µWh"
    assert format_energy(28.0) == "28 kWh"
    assert format_energy(3_500.0) == "3.5 MWh"
    assert format_distance(1.06e-7) == "0.106 mm"  # not "0 km"
    assert format_distance(0.25) == "250 m"
    assert format_distance(12.345) == "12.3 km"
