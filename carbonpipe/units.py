"""Exact integer units for sums, and the readable units carbonpipe shows figures in.

Records carry floats (kg CO2e, kWh). Every sum carbonpipe keeps (the budget ledger, the
compacted parts, the ESG aggregation, ``carbonpipe report``) adds integers instead, at a
resolution that cannot matter: nanograms of CO2e and nanowatt-hours (an int64 holds
9.2 Mt CO2e, or 9.2 TWh). The conversion is exact: the float's own binary value times
10**12, rounded half to even, with no floating-point step in between, so the same record
gives the same integer on every machine, in every order, in every process.

Figures shown to people pick the unit that keeps three significant digits (µg, mg, g, kg, t;
µWh to GWh; mm, m, km) instead of ``0.0000180 g`` or ``0 km``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DISTANCE_UNITS",
    "ENERGY_UNITS",
    "MASS_UNITS",
    "NG_PER_KG",
    "NWH_PER_KWH",
    "exact_scale",
    "format_distance",
    "format_energy",
    "format_mass",
    "div_half_even",
    "dyadic",
    "format_scaled",
    "kg_to_ng",
    "kwh_to_nwh",
    "ng_to_kg",
    "nwh_to_kwh",
    "record_profile",
    "split_exact",
    "sig3",
]

NG_PER_KG = 10**12
NWH_PER_KWH = 10**12

# Ladders of (unit, size in the base unit): grams, watt-hours, metres.
MASS_UNITS = (("µg", 1e-6), ("mg", 1e-3), ("g", 1.0), ("kg", 1e3), ("t", 1e6))
ENERGY_UNITS = (
    ("µWh", 1e-6),
    ("mWh", 1e-3),
    ("Wh", 1.0),
    ("kWh", 1e3),
    ("MWh", 1e6),
    ("GWh", 1e9),
)
DISTANCE_UNITS = (("mm", 1e-3), ("m", 1.0), ("km", 1e3))
_SMALLEST_SHOWN = 0.001


def exact_scale(value: float | int, factor: int, divisor: int = 1) -> int:
    """Return ``value * factor / divisor`` rounded half to even, computed exactly.

    ``value`` is a finite float (or int); ``factor`` and ``divisor`` (> 0) are ints. The
    float's exact binary fraction ``n / d`` is multiplied out in integers, with no
    floating-point step, so the result is the correctly rounded integer.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot convert {value!r} to an integer amount")
    n, d = value.as_integer_ratio()
    return div_half_even(n * factor, d * divisor)


def div_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (``denominator`` > 0) rounded half to even, exactly."""
    q, r = divmod(numerator, denominator)  # denominator > 0, so r >= 0 and q is the floor
    twice = 2 * r
    if twice > denominator or (twice == denominator and q & 1):
        q += 1
    return q


def dyadic(values: Sequence[float]) -> tuple[list[int], int]:
    """The floats ``values`` (finite, at least one) as integer numerators over one common
    denominator, exactly: each float is ``n / 2**k``, so the largest ``2**k`` is a multiple
    of every other."""
    ratios = [float(v).as_integer_ratio() for v in values]
    common = max(d for _, d in ratios)
    return [n * (common // d) for n, d in ratios], common


def kg_to_ng(kg: float) -> int:
    """kg CO2e to integer nanograms, exactly (round half to even)."""
    return exact_scale(kg, NG_PER_KG)


def kwh_to_nwh(kwh: float) -> int:
    """kWh to integer nanowatt-hours, exactly (round half to even)."""
    return exact_scale(kwh, NWH_PER_KWH)


def ng_to_kg(ng: int) -> float:
    """Integer nanograms to kg, the float nearest the exact quotient."""
    return ng / NG_PER_KG


def nwh_to_kwh(nwh: int) -> float:
    """Integer nanowatt-hours to kWh, the float nearest the exact quotient."""
    return nwh / NWH_PER_KWH


def split_exact(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` (finite, >= 0, not all 0):
    integers summing exactly to ``total``, by largest remainders over the weights' exact
    binary values (ties to the first), with no floating-point step."""
    scaled, _ = dyadic(weights)
    whole = sum(scaled)
    parts = [divmod(w * total, whole) for w in scaled]
    shares = [q for q, _ in parts]
    order = sorted(range(len(parts)), key=lambda i: (-parts[i][1], i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def record_profile(
    profile: Sequence[Sequence[float]], duration_s: float, local_kwh: float
) -> dict[str, Any]:
    """A record's ``energy_profile`` of ``profile`` (``(start offset s, kWh)`` intervals).

    Offsets are rounded to the millisecond; energies become integer nWh summing exactly to
    ``local_kwh`` in nWh (:func:`split_exact`). No profile: one interval at offset 0.
    """
    total = exact_scale(local_kwh, NWH_PER_KWH) if math.isfinite(local_kwh) and local_kwh > 0 else 0
    limit = max(round(duration_s * 1000), 0) if math.isfinite(duration_s) else 0
    merged: dict[int, float] = {}
    for item in profile:
        offset, kwh = float(item[0]), float(item[1])
        if not (math.isfinite(offset) and math.isfinite(kwh)):
            continue
        ms = min(max(round(offset * 1000), 0), limit)
        if ms == limit and limit > 0:
            ms = max(limit - 1, 0)  # an interval starting at the very end: fold it back
        merged[ms] = merged.get(ms, 0.0) + max(kwh, 0.0)
    if 0 not in merged:
        merged[0] = 0.0
    offsets = sorted(merged)
    weights = [merged[ms] for ms in offsets]
    if not any(weights):
        weights = [1.0] + [0.0] * (len(weights) - 1)
    shares = split_exact(total, weights)
    return {
        "unit": "nWh",
        "points": [[ms / 1000, n] for ms, n in zip(offsets, shares, strict=True)],
    }


# ---------------------------------------------------------------------------------------------
# Readable figures


def sig3(value: float) -> str:
    """Three significant figures, no exponent, no trailing zeros, thousands separated."""
    if value == 0:
        return "0"
    if value < _SMALLEST_SHOWN:
        return f"<{_SMALLEST_SHOWN:g}"
    decimals = 2 - math.floor(math.log10(value))
    rounded = round(value, decimals)
    if math.floor(math.log10(rounded)) != math.floor(math.log10(value)):
        decimals -= 1  # 9.996 rounds up to 10.0: one fewer decimal keeps three figures
        rounded = round(value, decimals)
    if decimals > 0:
        return f"{rounded:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{rounded:,.0f}"


def _shown_value(text: str) -> float:
    return 0.0 if text.startswith("<") else float(text.replace(",", ""))


def format_scaled(
    base: float, units: tuple[tuple[str, float], ...], *, words: frozenset[str] = frozenset()
) -> str:
    """Express ``base`` (a non-negative amount in the ladder's size-1 unit) in the largest unit
    it reaches after rounding; ``words`` are units spelt as words, which take a plural ``s``."""
    # Nothing at all reads best in the base unit (0 Wh, 0 g); tiny amounts go down the ladder.
    index = next(i for i, (_, size) in enumerate(units) if size == 1.0) if base == 0 else 0
    for i, (_, size) in enumerate(units):
        if base and base >= size:
            index = i
    text = sig3(base / units[index][1])
    if index + 1 < len(units) and _shown_value(text) * units[index][1] >= units[index + 1][1]:
        index += 1
        text = sig3(base / units[index][1])
    unit = units[index][0]
    return f"{text} {unit + 's' if unit in words and text != '1' else unit}"


def _signed(value: float, units: tuple[tuple[str, float], ...]) -> str:
    if not math.isfinite(value):
        raise ValueError(f"cannot show {value!r}")
    text = format_scaled(abs(value), units)
    return f"-{text}" if value < 0 and not text.startswith("0 ") else text


def format_mass(kg: float) -> str:
    """A mass given in kg, in µg, mg, g, kg or t with three significant figures."""
    return _signed(kg * 1000, MASS_UNITS)


def format_energy(kwh: float) -> str:
    """An energy given in kWh, in µWh, mWh, Wh, kWh, MWh or GWh with three significant figures."""
    return _signed(kwh * 1000, ENERGY_UNITS)


def format_distance(km: float) -> str:
    """A distance given in km, in mm, m or km with three significant figures."""
    return _signed(km * 1000, DISTANCE_UNITS)
