"""Energy profiles and their time-resolved pricing, by hand and as properties."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.errors import IntensityUnavailable
from carbonpipe.intensity.base import IntensityPoint, IntensitySeries
from carbonpipe.intensity.timed import fetch_history, price_profile, record_profile
from carbonpipe.measure.profile import MAX_POINTS, from_samples, thin
from carbonpipe.units import kwh_to_nwh

T0 = datetime(2026, 1, 5, 14, 0, tzinfo=timezone.utc)


def _series(values: list[float], step_s: float = 1.0, signal: str = "average") -> IntensitySeries:
    points = tuple(
        IntensityPoint(
            T0 + timedelta(seconds=i * step_s), T0 + timedelta(seconds=(i + 1) * step_s), v
        )
        for i, v in enumerate(values)
    )
    return IntensitySeries(points, "file", "BE", signal=signal, resolution_s=step_s)


def test_a_step_spanning_an_intensity_change_is_the_sum_of_its_intervals() -> None:
    # Two 1 s intervals of 1 Wh and 3 Wh; 100 g/kWh in the first second, 400 in the second.
    profile = {"unit": "nWh", "points": [[0.0, 10**9], [1.0, 3 * 10**9]]}
    priced = price_profile(profile, T0, 2.0, _series([100, 400]), pue=1.5)
    # 1 Wh x 1.5 x 100 g/kWh = 0.15 g; 3 Wh x 1.5 x 400 g/kWh = 1.8 g.
    assert priced.emissions_ng == 150_000_000 + 1_800_000_000
    assert priced.intensity_g_per_kwh == pytest.approx(1950 / 4 / 1.5 * 1000 / 1000)
    assert priced.points_used == 2
    # An interval straddling the change takes the time-weighted mean: 0.5 s at 100, 0.5 at 400.
    straddle = {"unit": "nWh", "points": [[0.0, 0], [0.5, 2 * 10**9]]}
    priced = price_profile(straddle, T0, 1.5, _series([100, 400]), pue=1.0)
    assert priced.emissions_ng == 2 * 250 * 10**6


def test_marginal_signals_and_uncovered_intervals_are_refused() -> None:
    profile = {"unit": "nWh", "points": [[0.0, 10**9]]}
    with pytest.raises(IntensityUnavailable, match="marginal"):
        price_profile(profile, T0, 1.0, _series([100], signal="marginal"), pue=1.0)
    far = {"unit": "nWh", "points": [[0.0, 10**9]]}
    with pytest.raises(IntensityUnavailable, match="no BE point"):
        price_profile(far, T0 + timedelta(hours=1), 1.0, _series([100]), pue=1.0)
    # Within one resolution step of the series, the nearest point is used.
    near = price_profile(far, T0 + timedelta(seconds=1.5), 0.5, _series([100]), pue=1.0)
    assert near.emissions_ng == 100 * 10**6


def test_fetch_history_never_waits_past_its_deadline() -> None:
    import threading

    release = threading.Event()

    class Slow:
        name = "slow"

        def history(self, *args: object, **kwargs: object) -> IntensitySeries:
            release.wait(10)
            return _series([1])

    started = datetime.now(timezone.utc)
    with pytest.raises(IntensityUnavailable, match="within 0.2 s"):
        fetch_history(Slow(), "BE", T0, T0, timeout_s=0.2)
    assert (datetime.now(timezone.utc) - started).total_seconds() < 2
    release.set()


_PROFILES = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=100, allow_nan=False),
        st.floats(min_value=0, max_value=1e-3, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(profile=_PROFILES, total=st.floats(min_value=0, max_value=10.0, allow_nan=False))
def test_record_profile_sums_exactly_to_the_local_energy(profile, total) -> None:
    block = record_profile(profile, 100.0, total)
    offsets = [p[0] for p in block["points"]]
    assert offsets == sorted(set(offsets)) and offsets[0] == 0.0
    assert all(isinstance(n, int) and n >= 0 for _, n in block["points"])
    assert sum(n for _, n in block["points"]) == kwh_to_nwh(total)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=600),
    total=st.floats(min_value=1e-9, max_value=10, allow_nan=False),
)
def test_profiles_from_cumulative_samples_keep_the_total_and_the_bound(steps, total) -> None:
    samples, clock, level = [], 100.0, 0.0
    for i, step in enumerate(steps):
        level += step
        samples.append((clock + i * 0.5, level))
    duration = len(steps) * 0.5 + 0.1
    profile = from_samples(samples, 100.0, duration, total)
    assert 1 <= len(profile) <= MAX_POINTS
    assert sum(kwh for _, kwh in profile) == pytest.approx(total, rel=1e-9)
    assert all(kwh >= 0 for _, kwh in profile) and profile[0][0] == 0.0
    assert all(a[0] < b[0] for a, b in zip(profile, profile[1:], strict=False))


def test_thinning_keeps_the_last_sample() -> None:
    samples = [(float(i), float(i)) for i in range(2000)]
    while len(samples) > 1024:
        thin(samples)
    assert len(samples) <= 1024 and samples[-1] == (1999.0, 1999.0) and samples[0] == (0.0, 0.0)


def test_a_marginal_series_never_prices_the_location_based_figure() -> None:
    from carbonpipe.intensity.table import lookup_intensity
    from carbonpipe.measure.base import Measurement
    from carbonpipe.pricing import build_record

    m = Measurement(
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2),
        duration_s=2.0,
        cpu_energy_kwh=0.002,
        gpu_energy_kwh=0.0,
        ram_energy_kwh=0.0,
        cpu_power_w=1.0,
        gpu_power_w=0.0,
        ram_power_w=0.0,
        method="rapl",
        tracking_mode="machine",
        share="machine",
        codecarbon_version=None,
        cpu_model=None,
        gpu_model=None,
        energy_profile=((0.0, 0.001), (1.0, 0.001)),
    )
    identity = {
        "record_id": "r" * 16,
        "project": "p",
        "experiment": "",
        "pipeline": "x",
        "run_id": "r",
        "step": "s",
        "team": "",
        "attempt": 1,
        "labels": {},
    }
    table = lookup_intensity("gcp", "europe-west1", None)
    kwargs = {
        "location": {
            "provider": "gcp",
            "region": "europe-west1",
            "country_iso": None,
            "detected_by": "argument",
        },
        "intensity": table,
        "pue": 1.0,
        "tracking_mode": "machine",
    }
    marginal = build_record(
        identity, "succeeded", m, series=_series([900, 900], signal="marginal"), **kwargs
    )
    assert marginal.intensity_source["kind"] == table.kind
    assert marginal.intensity_g_per_kwh == table.intensity_g_per_kwh
    assert any("marginal" in e and "priced with the table" in e for e in marginal.tracking_errors)
    average = build_record(identity, "succeeded", m, series=_series([100, 300]), **kwargs)
    assert average.intensity_source["kind"] == "timeseries"
    assert kwh_to_nwh(0.001) == 10**9 and average.emissions_kg_co2e == pytest.approx(0.4e-3)
    assert average.energy_profile == {"unit": "nWh", "points": [[0.0, 10**9], [1.0, 10**9]]}


def _reference_ng(
    block: dict, started: datetime, duration_s: float, series: IntensitySeries, pue: float
) -> int:
    """The module's formula written plainly with fractions, over fully covered intervals."""
    from fractions import Fraction

    rows = block["points"]
    total = 0
    for i, (offset, nwh) in enumerate(rows):
        end_offset = rows[i + 1][0] if i + 1 < len(rows) else max(duration_s, offset)
        begin = started + timedelta(milliseconds=round(offset * 1000))
        end = started + timedelta(milliseconds=round(end_offset * 1000))
        if end <= begin:
            end = begin + timedelta(microseconds=1)
        weighted, covered = Fraction(0), 0
        for p in series.points:
            lo, hi = max(p.start, begin), min(p.end, end)
            if hi > lo:
                us = (hi - lo) // timedelta(microseconds=1)
                weighted += Fraction(p.intensity_g_per_kwh) * us
                covered += us
        value = Fraction(nwh) * Fraction(pue) * (weighted / covered) / 1000
        q, r = divmod(value.numerator, value.denominator)
        total += q + (
            1 if 2 * r > value.denominator or (2 * r == value.denominator and q & 1) else 0
        )
    return total


@given(
    values=st.lists(
        st.floats(min_value=0, max_value=2000, allow_nan=False), min_size=6, max_size=8
    ),
    profile=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3599, allow_nan=False),
            st.floats(min_value=0, max_value=1e-3, allow_nan=False),
        ),
        max_size=20,
    ),
    pue=st.floats(min_value=1.0, max_value=2.0, allow_nan=False),
)
def test_pricing_with_a_series_is_the_exact_sum_over_the_intervals(values, profile, pue) -> None:
    """Whatever the series and the profile: the integer nanograms of the plain formula."""
    series = _series(values, step_s=600.0)  # 10-minute points from T0, covering the hour
    duration = 3600.0
    block = record_profile(profile or [(0.0, 1e-4)], duration, sum(k for _, k in profile) or 1e-4)
    priced = price_profile(block, T0, duration, series, pue=pue)
    assert priced.emissions_ng == _reference_ng(block, T0, duration, series, pue)
