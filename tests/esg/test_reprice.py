"""carbonpipe reprice: table-priced records revised with a file source; the ESG report uses them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

from carbonpipe import open_store
from carbonpipe.esg.aggregation import aggregate
from carbonpipe.esg.report import build_report
from carbonpipe.intensity.table import lookup_intensity
from carbonpipe.measure.base import Measurement
from carbonpipe.pricing import build_record
from carbonpipe.record import Record, make_record_id, parse_utc
from carbonpipe.units import kg_to_ng

CLI = [sys.executable, "-m", "carbonpipe"]
DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)
HOURLY = {10: 100, 11: 400, 12: 250}  # g/kWh from each hour's start, zone BE


def _measurement(start: datetime, seconds: float, profile: tuple[tuple[float, float], ...]):
    total = sum(kwh for _, kwh in profile)
    return Measurement(
        started_at=start,
        ended_at=start + timedelta(seconds=seconds),
        duration_s=seconds,
        cpu_energy_kwh=total * 0.75,
        gpu_energy_kwh=0.0,
        ram_energy_kwh=total * 0.25,
        cpu_power_w=1.0,
        gpu_power_w=0.0,
        ram_power_w=1.0,
        method="rapl",
        tracking_mode="machine",
        share="machine",
        codecarbon_version="3.3",
        cpu_model=None,
        gpu_model=None,
        energy_profile=profile,
    )


def _record(step: str, m: Measurement, *, pue: float = 1.2) -> Record:
    identity = {
        "record_id": make_record_id("p", "train", "r1", step, 1),
        "project": "p",
        "experiment": "",
        "pipeline": "train",
        "run_id": "r1",
        "step": step,
        "team": "ml",
        "attempt": 1,
        "labels": {},
    }
    location = {
        "provider": "gcp",
        "region": "europe-west1",
        "country_iso": "BEL",
        "detected_by": "argument",
    }
    return build_record(
        identity,
        "succeeded",
        m,
        location=location,
        intensity=lookup_intensity("gcp", "europe-west1", None),
        pue=pue,
        tracking_mode="machine",
    )


def _hand_ng(rec: Record) -> int:
    """sum_i round(nWh_i x PUE x I_i / 1000) with I_i the hourly file's time-weighted mean."""
    started = parse_utc(rec.started_at)
    points = rec.energy_profile["points"] if rec.energy_profile else None
    if points is None:
        e = rec.energy_kwh
        from carbonpipe.units import kwh_to_nwh

        points = [[0.0, kwh_to_nwh(e["cpu"] + e["gpu"] + e["ram"])]]
    total = 0
    for i, (offset, nwh) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else rec.duration_s
        a = started + timedelta(milliseconds=round(offset * 1000))
        b = started + timedelta(milliseconds=round(end * 1000))
        weighted = Fraction(0)
        t = a
        while t < b:  # walk the hours
            hour_end = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            stop = min(hour_end, b)
            weighted += HOURLY[t.hour] * Fraction((stop - t) // timedelta(microseconds=1))
            t = stop
        mean = weighted / ((b - a) // timedelta(microseconds=1))
        total += round(nwh * Fraction(rec.pue) * mean / 1000)
    return total


def test_reprice_revises_table_priced_records_and_the_esg_report_uses_them(
    tmp_path: Path,
) -> None:
    grid = tmp_path / "grid.csv"
    with grid.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "zone", "intensity_g_per_kwh"])
        for hour, value in HOURLY.items():
            writer.writerow([DAY.replace(hour=hour).isoformat(), "BE", value])
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    # A step across the 11:00 change (1 Wh at 100 g/kWh, then 3 Wh at 400 g/kWh) ...
    across = _record(
        "across",
        _measurement(DAY.replace(hour=10, minute=30), 3600, ((0.0, 0.001), (1800.0, 0.003))),
    )
    # ... a step recorded before energy profiles existed (one interval over its window) ...
    old = _record("old", _measurement(DAY.replace(hour=11, minute=45), 1800, ((0.0, 0.002),)))
    old_data = json.loads(old.to_json())
    del old_data["energy_profile"]
    # ... and one already priced with a time series: not eligible.
    timed = _record("timed", _measurement(DAY.replace(hour=12), 60, ((0.0, 0.001),)))
    timed = replace(
        timed,
        intensity_source={
            "name": "file",
            "vintage": "x",
            "kind": "timeseries",
            "zone": "BE",
            "signal": "average",
            "resolution_s": 3600.0,
            "points_used": 1,
        },
    )
    for rec, raw in (
        (across, across.to_json()),
        (old, json.dumps(old_data).encode()),
        (timed, timed.to_json()),
    ):
        store.put_if_absent(rec.key, raw)
    records = [across, Record.from_dict(old_data), timed]
    before = aggregate(store, "2026-11").totals()._s("emissions_ng")
    assert before == sum(kg_to_ng(r.emissions_kg_co2e) for r in records)

    def reprice(*zone: str) -> dict:
        out = subprocess.run(
            [
                *CLI,
                "reprice",
                "--store",
                str(store_dir),
                "--period",
                "2026-11",
                "--source",
                f"file:{grid}",
                *zone,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = reprice("--zone", "BE")
    assert (first["records"], first["eligible"], first["written"], first["already_revised"]) == (
        3,
        2,
        2,
        0,
    )
    expected = _hand_ng(records[0]) + _hand_ng(records[1]) + kg_to_ng(timed.emissions_kg_co2e)
    assert _hand_ng(records[0]) == round(Fraction(10**9) * Fraction(1.2) * 100 / 1000) + round(
        Fraction(3 * 10**9) * Fraction(1.2) * 400 / 1000
    )
    agg = aggregate(store, "2026-11")
    assert agg.totals()._s("emissions_ng") == expected != before
    report = build_report(agg)
    assert report["revisions"]["revised_records"] == 2
    [source] = report["revisions"]["sources"]
    assert (source["source"], source["records"]) == ("file:BE", 2)
    assert "revised" in {s["kind"] for s in report["intensity_sources"]}
    from carbonpipe.esg.charts import report_charts
    from carbonpipe.esg.html import report_html

    html = report_html(report, report_charts(report))
    assert "2 figures revised after the fact with a time series" in html and "file:BE" in html
    # The records themselves are untouched; a rerun writes nothing and changes nothing.
    assert Record.from_json(store.get(across.key).data) == across
    # Without --zone each record's cloud region names it (gcp/europe-west1: BE): the same key.
    second = reprice()
    assert (second["written"], second["already_revised"]) == (0, 2)
    assert aggregate(store, "2026-11").totals()._s("emissions_ng") == expected
    assert len(list(store.list("revisions/v1/"))) == 2
