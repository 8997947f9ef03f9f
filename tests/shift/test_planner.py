"""plan_start: the cleanest start before the deadline, or now with the reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonpipe.errors import ConfigError, IntensityUnavailable
from carbonpipe.intensity.base import IntensityPoint, IntensitySeries
from carbonpipe.intensity.planner import StartPlan, parse_duration, plan_start, window_mean

T0 = datetime(2026, 12, 5, 0, 0, tzinfo=timezone.utc)


def _series(values: list[float], step_s: float = 3600.0, t0: datetime = T0) -> IntensitySeries:
    step = timedelta(seconds=step_s)
    points = tuple(
        IntensityPoint(t0 + i * step, t0 + (i + 1) * step, v) for i, v in enumerate(values)
    )
    return IntensitySeries(points, "test", "FR", resolution_s=step_s, forecast=True)


def test_waits_for_the_cleanest_window_within_the_deadline() -> None:
    series = _series([400, 300, 100, 100, 500, 50])
    plan = plan_start(series, "FR", now=T0, expected_duration_s=7200, shift_within_s=3 * 3600)
    assert plan.planned_start == T0 + timedelta(hours=2)
    assert plan.wait_s == 7200
    assert (plan.intensity_now, plan.intensity_planned) == (350, 100)
    assert plan.saving_fraction == pytest.approx(1 - 100 / 350)
    assert (plan.source, plan.zone, plan.signal) == ("test", "FR", "average")
    assert "cleaner" in plan.reason
    # The 50 g/kWh hour is past the deadline: never chosen.
    assert plan.planned_start <= plan.deadline


def test_a_window_ending_at_a_boundary_is_a_candidate() -> None:
    # 30-minute run; the clean point is 10:00-11:00: a start at 10:00 and at 10:30 are equal.
    series = _series([300, 100, 300])
    now = T0 + timedelta(minutes=20)
    plan = plan_start(series, "FR", now=now, expected_duration_s=1800, shift_within_s=7200)
    assert plan.planned_start == T0 + timedelta(hours=1)
    assert plan.intensity_planned == 100


def test_a_duration_finer_than_a_microsecond_still_waits() -> None:
    # A last run's duration (0.030831381998723373 s) is not a whole number of microseconds.
    series = _series([400, 400, 50, 50], step_s=1.0)
    plan = plan_start(
        series, "FR", now=T0, expected_duration_s=0.030831381998723373, shift_within_s=3
    )
    assert plan.planned_start == T0 + timedelta(seconds=2) and plan.intensity_planned == 50


def test_starts_now_when_now_is_cleanest_and_on_ties() -> None:
    flat = _series([200] * 10)
    plan = plan_start(flat, "FR", now=T0, expected_duration_s=3600, shift_within_s=6 * 3600)
    assert plan.wait_s == 0 and plan.planned_start == T0 and plan.saving_fraction == 0
    assert "now is the cleanest" in plan.reason


def test_a_run_past_the_end_of_the_forecast_is_no_reason_to_wait() -> None:
    series = _series([300, 300, 10])  # the clean hour is the last: a 2 h run there is unknown
    plan = plan_start(series, "FR", now=T0, expected_duration_s=7200, shift_within_s=3 * 3600)
    assert plan.planned_start == T0 + timedelta(hours=1) or plan.wait_s == 0
    assert plan.intensity_planned is not None and plan.intensity_planned >= 155 - 1e-9


class _Failing:
    name = "electricitymaps"

    def forecast(self, *a: object, **k: object) -> IntensitySeries:
        raise IntensityUnavailable("HTTP 503")


def test_no_forecast_starts_now_and_says_why() -> None:
    plan = plan_start(_Failing(), "FR", now=T0, expected_duration_s=60, shift_within_s=3600)
    assert plan.wait_s == 0 and plan.intensity_now is None
    assert "no forecast from electricitymaps" in plan.reason and "HTTP 503" in plan.reason
    none = plan_start(None, "FR", now=T0, expected_duration_s=60, shift_within_s=3600)
    assert "no time-series intensity source" in none.reason
    later = _series([100], t0=T0 + timedelta(hours=5))
    plan = plan_start(later, "FR", now=T0, expected_duration_s=60, shift_within_s=3600)
    assert plan.wait_s == 0 and "does not cover now" in plan.reason


def test_reads_the_forecast_from_a_file_source(tmp_path: Path) -> None:
    from carbonpipe.intensity.registry import open_source

    path = tmp_path / "f.csv"
    rows = ["timestamp,zone,intensity_g_per_kwh"]
    rows += [
        f"{(T0 + timedelta(seconds=i)).isoformat()},FR,{300 if i < 3 else 50}" for i in range(6)
    ]
    path.write_text("\n".join(rows) + "\n")
    source = open_source(f"file:{path}")
    plan = plan_start(source, "FR", now=T0, expected_duration_s=2, shift_within_s=10)
    assert plan.planned_start == T0 + timedelta(seconds=3)
    assert plan.source == "file"


def test_the_plan_round_trips_through_json() -> None:
    plan = plan_start(_series([3, 2, 1]), "FR", now=T0, expected_duration_s=60, shift_within_s=9e3)
    assert StartPlan.from_dict(plan.to_dict()) == plan


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(0, 2000), min_size=1, max_size=30),
    step_s=st.sampled_from([1.0, 60.0, 900.0, 3600.0]),
    offset=st.floats(0, 0.999),
    duration=st.floats(1, 20),
    within=st.floats(0, 40),
)
def test_never_past_the_deadline_never_dirtier_than_now(
    values: list[float], step_s: float, offset: float, duration: float, within: float
) -> None:
    series = _series(values, step_s)
    now = T0 + timedelta(seconds=offset * step_s)
    plan = plan_start(
        series, "FR", now=now, expected_duration_s=duration * step_s, shift_within_s=within * step_s
    )
    assert now <= plan.planned_start <= now + timedelta(seconds=within * step_s)
    assert plan.intensity_planned is not None and plan.intensity_now is not None
    assert plan.intensity_planned <= plan.intensity_now + 1e-9 * max(plan.intensity_now, 1)
    assert 0 <= plan.saving_fraction <= 1
    # The plan's figure is the series' mean over the planned run.
    end = plan.planned_start + timedelta(seconds=duration * step_s)
    mean, _ = window_mean(series, plan.planned_start, end)
    assert mean == pytest.approx(plan.intensity_planned, rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(0, 2000), min_size=1, max_size=12),
    start_us=st.integers(0, 3 * 10**6),
    length_us=st.integers(1, 12 * 10**6),
)
def test_a_window_mean_is_the_exactly_rounded_weighted_mean(
    values: list[float], start_us: int, length_us: int
) -> None:
    # One-second points; a window with edges anywhere to the microsecond (as a step's real
    # start is). The mean is the exact weighted mean, rounded once: a window wholly within
    # one intensity (the CI failure of stop 22: 400.00000000000006 for a flat 400) is that
    # intensity exactly.
    from fractions import Fraction

    series = _series(values, step_s=1.0)
    start = T0 + timedelta(microseconds=start_us)
    end = start + timedelta(microseconds=length_us)
    mean, covered = window_mean(series, start, end)
    total, seconds = Fraction(0), Fraction(0)
    for p in series.points:
        lo, hi = max(p.start, start), min(p.end, end)
        if hi > lo:
            w = Fraction((hi - lo) // timedelta(microseconds=1), 10**6)
            total, seconds = total + w * Fraction(p.intensity_g_per_kwh), seconds + w
    if seconds == 0:
        assert covered == 0.0 and mean != mean
        return
    assert mean == float(total / seconds) and covered == float(seconds)
    if len({p.intensity_g_per_kwh for p in series.points if p.end > start and p.start < end}) == 1:
        assert mean == next(p.intensity_g_per_kwh for p in series.points if p.end > start)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("6h", 21600),
        ("1d", 86400),
        ("30", 30),
        ("2.5", 2.5),
        (timedelta(hours=2), 7200),
        (45, 45),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, option="--shift-within") == seconds


@pytest.mark.parametrize("text", ["", "h", "6x", "-1h", "nan", "inf", "six hours", True])
def test_bad_durations_name_the_option(text: object) -> None:
    with pytest.raises(ConfigError, match="--shift-within"):
        parse_duration(text, option="--shift-within")
