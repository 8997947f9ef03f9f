"""Time-resolved pricing: each interval of a step's energy at the intensity of its own time.

A record keeps its step's energy profile (``energy_profile``: ``{"unit": "nWh", "points":
[[start offset s, nWh], ...]}``, each interval lasting until the next one starts, the last until
``duration_s``; integers summing exactly to the local energy). With a time-series source
configured (``CARBONPIPE_INTENSITY_SOURCE`` / carbon.yaml ``intensity: {source: ...}``), the step
is priced interval by interval::

    emissions_ng = sum_i round(nWh_i x PUE x I_i / 1000)

where ``I_i`` is the time-weighted mean of the series' points over interval ``i`` (computed with
exact fractions; an interval no point overlaps takes the nearest point within one resolution
step). The record's ``intensity_g_per_kwh`` is then the energy-weighted effective value,
``1000 x emissions_ng / (nWh x PUE)``, and ``intensity_source`` says ``kind: "timeseries"``, the
source, zone, signal, resolution and how many points were used.

Only an *average* signal prices the location-based figure (GHG Protocol scope 2
location-based, SCI): a marginal series (WattTime's MOER) is not used for it; the step falls
back to the table and ``tracking_errors`` says why. Any failure (no zone, the source timed out,
points missing) falls back the same way: the record's ``intensity_source.kind`` is then the
table's (``cloud_region``, ``country``, ``world``) and ``carbonpipe reprice`` can revise it later.

May import: ``intensity.*``, ``units``, ``errors`` and the standard library.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from carbonpipe.errors import IntensityUnavailable
from carbonpipe.intensity.base import IntensitySeries, overlap_mean
from carbonpipe.units import div_half_even, record_profile

__all__ = [
    "FETCH_TIMEOUT_S",
    "SOURCE_ENV",
    "ZONE_ENV",
    "TimedPrice",
    "apply_series",
    "fetch_history",
    "price_profile",
    "record_profile",
    "resolve_zone",
    "series_source_dict",
    "step_series",
    "warm",
]

SOURCE_ENV = "CARBONPIPE_INTENSITY_SOURCE"
ZONE_ENV = "CARBONPIPE_INTENSITY_ZONE"
FETCH_TIMEOUT_S = 5.0
TIMESERIES = "timeseries"
_MS = 1000


@dataclass(frozen=True)
class TimedPrice:
    """A profile priced with a series."""

    emissions_ng: int
    intensity_g_per_kwh: float
    points_used: int


def price_profile(
    energy_profile: Mapping[str, Any],
    started_at: datetime,
    duration_s: float,
    series: IntensitySeries,
    pue: float,
) -> TimedPrice:
    """``sum_i round(nWh_i x pue x I_i / 1000)`` ng over the profile's intervals (see module).

    Raises ``IntensityUnavailable`` when the series is marginal or leaves an interval uncovered.
    """
    if series.signal != "average":
        raise IntensityUnavailable(
            f"{series.source_name} gave a {series.signal} signal for {series.zone}: only an "
            "average intensity prices the location-based figure"
        )
    points = list(series.points)
    if not points:
        raise IntensityUnavailable(f"{series.source_name} gave no points for {series.zone}")
    starts = [p.start for p in points]
    # The sums below are exact in integers (intensity.base.overlap_mean), as with
    # fractions.Fraction but without its per-step gcd.
    rows = [(float(o), int(n)) for o, n in energy_profile["points"]]
    pue_n, pue_d = float(pue).as_integer_ratio()
    total_ng = 0
    total_nwh = 0
    used: set[int] = set()
    means: list[tuple[int, int, int]] = []  # (numerator, denominator, length us) per interval
    for i, (offset, nwh) in enumerate(rows):
        end_offset = rows[i + 1][0] if i + 1 < len(rows) else max(duration_s, offset)
        begin = started_at + timedelta(milliseconds=round(offset * _MS))
        end = started_at + timedelta(milliseconds=round(end_offset * _MS))
        mean = _window_mean(points, starts, begin, end, series.resolution_s)
        if mean is None:
            raise IntensityUnavailable(
                f"{series.source_name} has no {series.zone} point near {begin.isoformat()}"
            )
        num, den, length_us, which = mean
        used.update(which)
        total_ng += div_half_even(nwh * pue_n * num, pue_d * den * 1000)
        total_nwh += nwh
        means.append((num, den, length_us))
    if total_nwh > 0 and pue > 0:
        effective = float(Fraction(total_ng * 1000 * pue_d, total_nwh * pue_n))
    else:  # no energy to weigh by: the time-weighted mean
        weighted = sum((Fraction(n, d) * t for n, d, t in means), Fraction(0))
        length = sum(t for _, _, t in means)
        effective = float(weighted / length) if length else float(points[0].intensity_g_per_kwh)
    return TimedPrice(total_ng, effective, len(used))


def _window_mean(
    points: list[Any],
    starts: list[datetime],
    begin: datetime,
    end: datetime,
    resolution_s: float,
) -> tuple[int, int, int, list[int]] | None:
    """Exact time-weighted mean over ``[begin, end)`` (microseconds) as ``(numerator,
    denominator, length us, points used)``; the nearest point within one resolution step when
    none overlaps; None when none is that near."""
    length_us = _us(end - begin)
    if length_us <= 0:  # an empty interval: the point at its instant
        end = begin + timedelta(microseconds=1)
        length_us = 1
    first = max(bisect.bisect_right(starts, begin) - 1, 0)
    found = overlap_mean(points, begin, end, first)
    if found is not None:
        total, common, covered, which = found
        return total, common * covered, length_us, which

    def gap_us(j: int) -> int:
        return max(_us(points[j].start - end), _us(begin - points[j].end), 0)

    nearest = min(range(len(points)), key=gap_us)
    if gap_us(nearest) / 1e6 <= max(resolution_s, 0.0):
        n, d = float(points[nearest].intensity_g_per_kwh).as_integer_ratio()
        return n, d, length_us, [nearest]
    return None


def _us(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds


def fetch_history(
    source: Any, zone: str, start: datetime, end: datetime, *, timeout_s: float
) -> IntensitySeries:
    """``source.history(...)`` bounded by ``timeout_s``: never waits longer.

    Raises ``IntensityUnavailable`` for a timeout or any failure of the source.
    """
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["series"] = source.history(zone, start, end, timeout_s=timeout_s)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=call, name="carbonpipe-intensity", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        message = f"{getattr(source, 'name', 'the source')} gave no history within {timeout_s:g} s"
        # Noted now, not when the abandoned call ends: a step stopping right after this one
        # must not wait the whole deadline again (the call may end a moment later, or never).
        note = getattr(source, "note_failure", None)
        if callable(note):
            note(message)
        raise IntensityUnavailable(message)
    error = box.get("error")
    if isinstance(error, IntensityUnavailable):
        raise error
    if error is not None:
        raise IntensityUnavailable(f"{type(error).__name__}: {error}") from None
    series = box.get("series")
    if not isinstance(series, IntensitySeries):
        raise IntensityUnavailable("the source answered something that is not a series")
    return series


def resolve_zone(
    source_name: str,
    provider: str | None,
    region: str | None,
    country_iso: str | None,
    zone: str | None,
) -> str | None:
    """The configured zone, else the cloud region's Electricity Maps zone (``zones.zone_for``)."""
    if zone:
        return zone
    if importlib.util.find_spec("carbonpipe.intensity.zones") is None:
        return None
    from carbonpipe.intensity import zones

    found = zones.zone_for(provider, region, country_iso, source=source_name)
    return str(found) if found else None


def step_series(
    location: Mapping[str, Any],
    started_at: datetime,
    ended_at: datetime,
    *,
    spec: str | None = None,
    options: Mapping[str, Any] | None = None,
    zone: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> tuple[IntensitySeries | None, str | None]:
    """The configured source's history over a step, or ``(None, why)``; never raises.

    ``spec``/``zone`` default to ``CARBONPIPE_INTENSITY_SOURCE``/``CARBONPIPE_INTENSITY_ZONE``.
    ``(None, None)``: no time-series source configured (the table prices the step).
    """
    env = os.environ if env is None else env
    spec = (spec or env.get(SOURCE_ENV) or "").strip()
    if not spec:
        return None, None
    try:
        from carbonpipe.intensity.cache import open_cached_source
        from carbonpipe.intensity.registry import check_source_name

        name, _ = check_source_name(spec)
        if name == "table":
            return None, None
        # Behind the disk cache: a step's stop asks the source once per window, and not at
        # all for a while after it failed.
        source = open_cached_source(spec, options, env)
        wanted = resolve_zone(
            name,
            location.get("provider"),
            location.get("region"),
            location.get("country_iso"),
            zone or env.get(ZONE_ENV) or (options or {}).get("zone"),
        )
        if not wanted:
            return None, (
                f"intensity source {name}: no grid zone for this location; set "
                f"{ZONE_ENV} (an Electricity Maps zone such as BE or US-CAL-CISO)"
            )
        start = _aware(started_at)
        end = max(_aware(ended_at), start + timedelta(milliseconds=1))
        return fetch_history(source, wanted, start, end, timeout_s=timeout_s), None
    except Exception as exc:
        return None, f"intensity source {spec[:80]!r} failed: {exc}"


def series_source_dict(series: IntensitySeries, points_used: int) -> dict[str, Any]:
    """The record's ``intensity_source`` block for a step priced with ``series``."""
    return {
        "name": series.source_name,
        "vintage": series.vintage,
        "kind": TIMESERIES,
        "zone": series.zone,
        "signal": series.signal,
        "resolution_s": float(series.resolution_s),
        "points_used": int(points_used),
    }


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def apply_series(record: Any, series: IntensitySeries, *, pue: float) -> tuple[Any, list[str]]:
    """``record`` (a :class:`~carbonpipe.record.Record` with its ``energy_profile``) priced
    interval by interval with ``series`` when the series covers every interval; else as it is,
    with a note for ``tracking_errors`` saying why. Never raises for a bad series."""
    from dataclasses import replace

    from carbonpipe.record import parse_utc
    from carbonpipe.units import ng_to_kg

    block = record.energy_profile
    try:
        priced = price_profile(block, parse_utc(record.started_at), record.duration_s, series, pue)
    except IntensityUnavailable as exc:
        return record, [f"time-resolved pricing not used ({exc}); priced with the table"]
    remote_kg = sum(float(r.get("emissions_kg_co2e") or 0.0) for r in record.remote)
    return (
        replace(
            record,
            intensity_g_per_kwh=priced.intensity_g_per_kwh,
            emissions_kg_co2e=ng_to_kg(priced.emissions_ng) + remote_kg,
            intensity_source=series_source_dict(series, priced.points_used),
        ),
        [],
    )


def warm(spec: str | None, options: Mapping[str, Any] | None = None) -> None:
    """Do now what pricing with ``spec`` will need, off the step's stop path: a ``file:PATH``
    source is parsed (once per process); a network source's modules (its HTTP client, the disk
    cache) are loaded, about 20 ms in a fresh process, without asking it anything.

    For callers that wait while the step runs elsewhere (``carbonpipe run``). Never raises:
    a fault is found again, and reported, when the step is priced.
    """
    from contextlib import suppress

    with suppress(Exception):
        from carbonpipe.intensity.cache import open_cached_source
        from carbonpipe.intensity.registry import check_source_name

        if not spec:
            return
        kind = check_source_name(spec)[0]
        if kind == "table":
            return
        source = open_cached_source(spec, options)
        if source is not None and kind == "file":
            source.source.validate()
