"""ESG aggregation and report: a hand-computable record set on local, S3 and GCS stores.

The records of ``quarter_records()`` (2026-Q4), with emissions = local kWh x PUE x g/kWh / 1000
plus attributed remote kg:

=====  ===================  ==========  ====  =====================  ====  =====  ======  ======
id     pipeline/step        date        run   cpu/gpu/ram/remote     PUE   g/kWh  kg      note
=====  ===================  ==========  ====  =====================  ====  =====  ======  ======
r1     train/prep           2026-10-05  a     1 / 0 / 0.5 / 0        1.0   400    0.6
r2     train/fit            2026-10-05  a     2 / 6 / 1 / 0          1.1   400    3.96    nvml
r3     train/fit  (try 1)   2026-11-10  b     1 / 2 / 0 / 0          1.0   400    1.2     failed
r4     train/fit  (try 2)   2026-11-10  b     2 / 6 / 1 / 0          1.1   400    3.96    alert
r5     detect/fit           2026-11-20  c     1 / 3 / 0 / 0.5        1.0   20     0.13    remote
r6     detect/eval          2026-12-01  d     0.5 / 0 / 0.5 / 0      1.0   300    0.3     on-prem
=====  ===================  ==========  ====  =====================  ====  =====  ======  ======

train belongs to team ranking (gcp us-central1), detect to team vision (gcp europe-west9, and r6
on the organisation's own machines in Germany, estimated). Two more records fall just outside
the quarter. Totals: 6 attempts, 4 runs, 28 kWh (cpu 7.5, gpu 17, ram 3, remote 0.5),
29.3 kWh facility energy, 10.15 kg CO2e (ranking 9.72, vision 0.43; Scope 2 0.3).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.cli.app import main
from carbonpipe.errors import ConfigError, PreconditionFailed
from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import charts as esg_charts
from carbonpipe.esg import compaction as esg_compaction
from carbonpipe.esg import config as esg_config
from carbonpipe.esg import html as plot
from carbonpipe.esg import nightly as esg_nightly
from carbonpipe.esg import period as esg_period
from carbonpipe.esg import report as esg_report
from carbonpipe.esg import rows as esg_rows
from carbonpipe.impact import equivalents, load_factors
from carbonpipe.intensity.table import regional_recommendations
from carbonpipe.record import Record, make_record_id
from carbonpipe.stores.base import Store

PERIOD = "2026-Q4"
NOW = datetime(2027, 1, 5, tzinfo=timezone.utc)  # every day of the quarter is closed
TOTAL_KG = 10.15


def make_record(
    pipeline: str,
    step: str,
    team: str,
    day: str,
    run: str,
    *,
    cpu: float = 1.0,
    gpu: float = 0.0,
    ram: float = 0.0,
    remote_kwh: float = 0.0,
    remote_kg: float = 0.0,
    pue: float = 1.0,
    intensity: float = 400.0,
    status: str = "succeeded",
    method: str = "rapl",
    provider: str | None = "gcp",
    region: str | None = "us-central1",
    country: str | None = "USA",
    attempt: int = 1,
    alerts: tuple[dict[str, Any], ...] = (),
    hour: int = 11,
    emissions_kg: float | None = None,
) -> Record:
    """A record with chosen numbers; emissions follow the tracker's formula unless given."""
    local = cpu + gpu + ram
    kg = local * pue * intensity / 1000 + remote_kg if emissions_kg is None else emissions_kg
    return Record(
        record_id=make_record_id("acme", pipeline, run, step, attempt),
        project="acme",
        experiment="",
        pipeline=pipeline,
        run_id=run,
        step=step,
        team=team,
        attempt=attempt,
        started_at=f"{day}T{hour - 1:02d}:00:00Z",
        ended_at=f"{day}T{hour:02d}:00:00Z",
        duration_s=3600.0,
        status=status,
        energy_kwh={
            "cpu": cpu,
            "gpu": gpu,
            "ram": ram,
            "remote": remote_kwh,
            "total": local + remote_kwh,
        },
        power_w={"cpu": 65.0, "gpu": 300.0 if gpu else 0.0, "ram": 10.0},
        pue=pue,
        intensity_g_per_kwh=intensity,
        emissions_kg_co2e=kg,
        location={
            "provider": provider,
            "region": region,
            "country_iso": country,
            "detected_by": "argument",
        },
        intensity_source={
            "name": "test grid table",
            "vintage": "2025",
            "kind": "cloud_region" if region else "country",
        },
        measurement={"method": method, "tracking_mode": "process"},
        remote=[{"energy_kwh": remote_kwh, "emissions_kg_co2e": remote_kg}] if remote_kwh else [],
        alerts=list(alerts),
    )


REGRESSION = {
    "kind": "carbon_regression",
    "action": "warn",
    "pipeline": "train",
    "step": "fit",
    "emissions_kg_co2e": 3.96,
    "baseline_mean_kg_co2e": 3.0,
    "increase_percent": 32.0,
}


def quarter_records() -> list[Record]:
    """The six records of the module docstring, and two just outside the quarter."""
    fit = {"cpu": 2.0, "gpu": 6.0, "ram": 1.0, "pue": 1.1, "method": "nvml"}
    france = {"intensity": 20.0, "region": "europe-west9", "country": "FRA"}
    return [
        make_record("train", "prep", "ranking", "2026-10-05", "a", cpu=1.0, ram=0.5),
        make_record("train", "fit", "ranking", "2026-10-05", "a", **fit),  # type: ignore[arg-type]
        make_record(
            "train", "fit", "ranking", "2026-11-10", "b", cpu=1.0, gpu=2.0, status="failed"
        ),
        make_record(
            "train",
            "fit",
            "ranking",
            "2026-11-10",
            "b",
            attempt=2,
            alerts=(REGRESSION,),
            **fit,  # type: ignore[arg-type]
        ),
        make_record(
            "detect",
            "fit",
            "vision",
            "2026-11-20",
            "c",
            cpu=1.0,
            gpu=3.0,
            remote_kwh=0.5,
            remote_kg=0.05,
            **france,  # type: ignore[arg-type]
        ),
        make_record(
            "detect",
            "eval",
            "vision",
            "2026-12-01",
            "d",
            cpu=0.5,
            ram=0.5,
            intensity=300.0,
            provider=None,
            region=None,
            country="DEU",
            method="estimate",
        ),
        make_record("train", "fit", "ranking", "2026-09-30", "z", hour=23),
        make_record("train", "fit", "ranking", "2027-01-01", "y", hour=0),
    ]


CONFIG: dict[str, Any] = {
    "esg": {
        "organisation": "Acme AI Division",
        "boundary": {
            "approach": "operational control",
            "description": "Every ML pipeline the AI division runs, on GCP and on its own servers.",
        },
        "team_sizes": {"ranking": 4, "vision": 2},
        "targets": [
            {
                "name": "Cut ML emissions 20% against 2025",
                "baseline_year": "2025",
                "baseline_kg_co2e": 50,
                "reduction_percent": 20,
                "target_year": 2027,
            },
            {"name": "Grid intensity under 400 g/kWh", "max_intensity_g_per_kwh": 400},
        ],
        "market_based": {
            "label": "market-based (GCP us-central1 PPA)",
            "factors": [
                {
                    "provider": "gcp",
                    "region": "us-central1",
                    "intensity_g_per_kwh": 0,
                    "source": "test power purchase agreement",
                    "vintage": "2026",
                }
            ],
        },
    },
    "budgets": [{"scope": "pipeline:train", "period": "month", "limit_kg_co2e": 5}],
}


def fill(store: Store, records: list[Record] | None = None) -> list[Record]:
    """Write records to a store (and charge them to the budget ledger)."""
    records = quarter_records() if records is None else records
    ledger = BudgetLedger(store)
    for r in records:
        store.put_if_absent(r.key, r.to_json())
        ledger.charge(r)
    return records


# -- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "start", "end"),
    [
        pytest.param("2026-11", "month", date(2026, 11, 1), date(2026, 11, 30), id="month"),
        pytest.param("2026-Q4", "quarter", date(2026, 10, 1), date(2026, 12, 31), id="quarter"),
        pytest.param("2026-q1", "quarter", date(2026, 1, 1), date(2026, 3, 31), id="quarter-lower"),
        pytest.param("2026", "year", date(2026, 1, 1), date(2026, 12, 31), id="year"),
        pytest.param("2024-02", "month", date(2024, 2, 1), date(2024, 2, 29), id="leap-february"),
        pytest.param(
            "2026-11-03_2026-11-20", "range", date(2026, 11, 3), date(2026, 11, 20), id="range"
        ),
    ],
)
def test_periods_parse_to_inclusive_utc_dates(text: str, kind: str, start: date, end: date) -> None:
    p = esg_period.parse_period(text)
    assert (p.kind, p.start, p.end) == (kind, start, end)
    assert p.n_days == (end - start).days + 1 == len(p.days())


def test_period_from_start_and_end_is_labelled_by_its_dates() -> None:
    p = esg_period.parse_period(None, start=date(2026, 11, 3), end=date(2026, 11, 5))
    assert p.label == "2026-11-03_2026-11-05" and p.months() == ["2026-11"]


@pytest.mark.parametrize("bad", ["2026-13", "2026-Q5", "november", "2026-11-31_2026-12-01"])
def test_bad_periods_name_the_accepted_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="2026-Q4|day is out of range"):
        esg_period.parse_period(bad)


def test_end_before_start_is_refused() -> None:
    with pytest.raises(ValueError, match="before start"):
        esg_period.parse_period(None, start=date(2026, 11, 5), end=date(2026, 11, 1))


# -- aggregation -----------------------------------------------------------------------------


def test_aggregate_sums_the_quarter_exactly_on_every_store(store: Store) -> None:
    fill(store)
    agg = esg.aggregate(store, PERIOD)
    t = agg.totals()
    assert t.records == 6 and t.runs == 4
    assert t.emissions_kg_co2e == TOTAL_KG  # exact: integer micrograms, whatever the order
    assert t.energy_dict() == {"cpu": 7.5, "gpu": 17.0, "ram": 3.0, "remote": 0.5, "total": 28.0}
    assert t.facility_energy_kwh == 29.3
    assert t.intensity_g_per_kwh == pytest.approx(10_100 / 29.3)  # local kg / facility kWh
    assert t.failed_attempt_share == round(1 / 6, 6)
    assert t.estimated_energy_share == round(1 / 28, 6)
    teams = {k[0]: m.emissions_kg_co2e for k, m in agg.breakdown("team")}
    assert teams == {"ranking": 9.72, "vision": 0.43}
    steps = {k: m.records for k, m in agg.breakdown("pipeline", "step")}
    assert steps == {
        ("detect", "eval"): 1,
        ("detect", "fit"): 1,
        ("train", "fit"): 3,
        ("train", "prep"): 1,
    }
    days = {k[0]: m.emissions_kg_co2e for k, m in agg.breakdown("date")}
    assert days == {"2026-10-05": 4.56, "2026-11-10": 5.16, "2026-11-20": 0.13, "2026-12-01": 0.3}
    regions = {k: m.emissions_kg_co2e for k, m in agg.breakdown("provider", "region")}
    assert regions == {("", ""): 0.3, ("gcp", "europe-west9"): 0.13, ("gcp", "us-central1"): 9.72}
    assert [a["record_id"] for a in agg.alerts] == [quarter_records()[3].record_id]
    assert agg.stats.json_records == 6 and agg.stats.compacted_records == 0

    compacted = esg_compaction.compact(store, PERIOD, now=NOW)
    assert sum(c.written for c in compacted) == 4 and sum(c.added for c in compacted) == 6
    again = esg.aggregate(store, PERIOD)
    assert again.stats.compacted_records == 6 and again.stats.json_records == 0
    assert again.totals() == t
    assert again.breakdown("team", "pipeline", "step") == agg.breakdown("team", "pipeline", "step")


def test_record_arriving_after_compaction_is_counted_once(local_store: Store) -> None:
    fill(local_store)
    esg_compaction.compact(local_store, PERIOD, now=NOW)
    late = make_record("train", "fit", "ranking", "2026-10-05", "late", cpu=0.5)
    local_store.put_if_absent(late.key, late.to_json())
    agg = esg.aggregate(local_store, PERIOD)
    assert agg.totals().records == 7 and agg.stats.json_records == 1
    assert agg.totals().emissions_kg_co2e == TOTAL_KG + 0.2
    [again] = [c for c in esg_compaction.compact(local_store, PERIOD, now=NOW) if c.written]
    assert (again.day, again.added, again.records) == ("2026-10-05", 1, 3)
    after = esg.aggregate(local_store, PERIOD)
    assert after.stats.json_records == 0 and after.totals() == agg.totals()


def test_only_closed_days_are_compacted() -> None:
    period = esg_period.parse_period("2026-11")
    now = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
    closed = esg_compaction.closed_days(period, now=now)
    assert closed[-1] == date(2026, 11, 22)  # the 22nd ended 30 h ago, the 23rd only 6 h ago


def test_invalid_record_is_skipped_and_remembered_by_compaction(
    local_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    fill(local_store)
    local_store.put_if_absent(
        "records/v1/date=2026-10-05/pipeline=train/bad.json", b'{"schema": 1}'
    )
    agg = esg.aggregate(local_store, PERIOD)
    assert agg.totals().records == 6 and agg.stats.invalid_records == 1
    assert "skipping invalid record" in caplog.text
    esg_compaction.compact(local_store, PERIOD, now=NOW)
    caplog.clear()
    after = esg.aggregate(local_store, PERIOD)
    assert after.stats.invalid_records == 0 and "bad.json" not in caplog.text


def test_unreadable_part_falls_back_to_the_json_records(
    local_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    fill(local_store)
    esg_compaction.compact(local_store, PERIOD, now=NOW)
    local_store.put_artifact(esg_rows.part_key("2026-10-05"), b"not parquet", content_type="x/y")
    agg = esg.aggregate(local_store, PERIOD)
    assert agg.totals().emissions_kg_co2e == TOTAL_KG and agg.stats.json_records == 2
    assert "ignoring unreadable compacted part" in caplog.text


def test_compaction_that_loses_a_race_keeps_the_winners_part(
    local_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(local_store)
    esg_compaction.compact_day(local_store, "2026-10-05")
    extra = make_record("train", "fit", "ranking", "2026-10-05", "race")
    local_store.put_if_absent(extra.key, extra.to_json())

    def lose(*args: Any, **kwargs: Any) -> str:
        raise PreconditionFailed("changed meanwhile")

    monkeypatch.setattr(local_store, "replace", lose)
    result = esg_compaction.compact_day(local_store, "2026-10-05")
    assert not result.written
    monkeypatch.undo()
    assert esg.aggregate(local_store, "2026-10").totals().records == 3  # part 2 + JSON 1


def test_pipeline_filter_reads_only_that_pipeline(local_store: Store) -> None:
    fill(local_store)
    esg_compaction.compact(local_store, PERIOD, now=NOW)
    agg = esg.aggregate(local_store, PERIOD, pipeline="detect")
    assert agg.totals().records == 2 and agg.totals().emissions_kg_co2e == 0.43


def test_empty_period_gives_a_zero_report_that_still_renders(local_store: Store) -> None:
    agg = esg.aggregate(local_store, "2026-02")
    report = esg_report.build_report(agg, esg_config.load_esg_config({}))
    assert report["executive_summary"]["total_emissions_kg_co2e"] == 0.0
    assert report["team_breakdown"] == [] and len(report["daily"]) == 28
    html = plot.report_html(report, esg_charts.report_charts(report))
    assert html.count("data:image/png;base64,") == 3


# -- the report ------------------------------------------------------------------------------


@pytest.fixture
def nightly(local_store: Store, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    fill(local_store)
    out = tmp_path / "out"
    result = esg_nightly.run_nightly(local_store, PERIOD, out_dir=str(out), config=CONFIG, now=NOW)
    return result, out


def test_run_nightly_returns_uris_and_headline_figures(
    nightly: tuple[dict[str, Any], Path], local_store: Store
) -> None:
    result, out = nightly
    names = {"report.json", "report.csv", "report.html", *esg_charts.CHART_NAMES}
    assert set(result["artifacts"]) == names
    for name, uri in result["artifacts"].items():
        assert uri == local_store.url_for(f"esg/2026-Q4/{name}")
        assert Path(uri).read_bytes() == (out / name).read_bytes()
        assert result["local"][name] == str(out / name)
    assert result["totals"] == {
        "generated_for": "2026-Q4",
        "total_emissions_kg_co2e": TOTAL_KG,
        "total_energy_kwh": 28.0,
        "step_attempts": 6,
        "runs": 4,
        "estimated_energy_share": round(1 / 28, 6),
        "regressions": 1,
        "budgets_exceeded": ["pipeline:train"],
    }
    assert result["regression_action"] == "warn"
    assert result["compaction"] == {"days_compacted": 4, "records_added": 6}
    json.dumps(result)  # what KFP and Airflow pass on must be JSON


def test_report_json_carries_every_documented_section(nightly: tuple[dict[str, Any], Path]) -> None:
    _, out = nightly
    r = json.loads((out / "report.json").read_text())
    assert r["schema"] == "carbonpipe.esg_report/1" and r["generated_for"] == "2026-Q4"
    assert r["reporting_period"] == {
        "label": "2026-Q4",
        "kind": "quarter",
        "start": "2026-10-01",
        "end": "2026-12-31",
        "days": 92,
        "timezone": "UTC",
    }
    assert r["organisation"]["name"] == "Acme AI Division"
    assert r["organisation"]["boundary"]["approach"] == "operational control"

    # GHG scope: cloud compute is Scope 3 Category 1, own electricity Scope 2, with sources.
    scopes = {c["scope"]: c for c in r["ghg_scope"]["classification"]}
    assert scopes["scope_3_category_1"]["emissions_kg_co2e"] == 9.85
    assert scopes["scope_2"]["emissions_kg_co2e"] == 0.3
    assert "cloud" in scopes["scope_3_category_1"]["applies_to"]
    for s in r["ghg_scope"]["statements"].values():
        assert s["source"] and s["vintage"] and s["statement"]
    assert "Scope 3" in r["ghg_scope"]["statements"]["scope_3_category_1"]["statement"]

    e = r["emissions"]
    assert e["location_based_kg_co2e"] == TOTAL_KG and e["location_based_t_co2e"] == 0.01015
    assert e["by_scope_kg_co2e"] == {"scope_2": 0.3, "scope_3_category_1": 9.85}
    market = e["market_based"]
    assert market["label"] == "market-based (GCP us-central1 PPA)"
    assert market["kg_co2e"] == 0.43  # us-central1 at 0 g/kWh; the rest stays location-based
    assert market["covered_energy_share"] == round(24.3 / 29.3, 6)
    assert market["factors"][0]["source"] == "test power purchase agreement"

    assert r["energy_kwh"] == {
        "cpu": 7.5,
        "gpu": 17.0,
        "ram": 3.0,
        "remote": 0.5,
        "total": 28.0,
        "facility_incl_pue": 29.3,
    }
    assert r["activity"] == {
        "step_attempts": 6,
        "runs": 4,
        "failed_attempts": 1,
        "failed_attempt_share": round(1 / 6, 6),
        "duration_h": 6.0,
    }
    m = r["measurement"]
    assert {x["method"]: x["records"] for x in m["by_method"]} == {
        "estimate": 1,
        "nvml": 2,
        "rapl": 3,
    }
    assert m["estimated_share_of_energy"] == round(1 / 28, 6)
    assert m["measured_share_of_energy"] == round(1 - 1 / 28, 6)
    assert m["estimated_share_of_records"] == round(1 / 6, 6)
    assert m["estimated_share_of_emissions"] == round(0.3 / TOTAL_KG, 6)

    sources = {(s["provider"], s["region"], s["country_iso"]): s for s in r["intensity_sources"]}
    assert sources[("gcp", "us-central1", "USA")]["intensity_g_per_kwh"] == 400.0
    assert sources[(None, None, "DEU")]["kind"] == "country"
    assert all(s["name"] == "test grid table" and s["vintage"] == "2025" for s in sources.values())


def test_executive_summary_teams_and_breakdowns(nightly: tuple[dict[str, Any], Path]) -> None:
    _, out = nightly
    r = json.loads((out / "report.json").read_text())
    s = r["executive_summary"]
    eq = equivalents(28.0, TOTAL_KG)
    assert s["total_emissions_t_co2e"] == 0.01015 and s["total_energy_kwh"] == 28.0
    assert s["per_team_kg_co2e"] == {"ranking": 9.72, "vision": 0.43}
    assert s["developers"] == 6 and s["emissions_per_developer_kg_co2e"] == pytest.approx(
        TOTAL_KG / 6
    )
    assert s["equivalents"]["car_km"] == float(f"{eq.car_km:.6g}")
    assert s["equivalents"]["tree_seedlings_grown_10_years"] == float(
        f"{TOTAL_KG / load_factors().tree_seedling_co2.value:.6g}"
    )
    assert all(f["source"] and f["vintage"] for f in s["equivalents"]["factors"])
    assert s["budget_utilisation_max_percent"] == pytest.approx(103.2)
    assert s["budgets_exceeded"] == ["pipeline:train"] and s["regressions"] == 1

    ranking, vision = r["team_breakdown"]
    assert (ranking["team"], ranking["emissions_kg_co2e"], ranking["runs"]) == ("ranking", 9.72, 2)
    assert ranking["emissions_per_developer_kg_co2e"] == pytest.approx(9.72 / 4)
    assert ranking["share_of_emissions"] == round(9.72 / TOTAL_KG, 6)
    assert ranking["pipelines"] == ["train"] and ranking["failed_attempts"] == 1
    assert (vision["team"], vision["developers"], vision["records"]) == ("vision", 2, 2)

    train = r["pipeline_breakdown"][0]
    assert train["pipeline"] == "train" and train["teams"] == ["ranking"]
    assert [(st["step"], st["emissions_kg_co2e"]) for st in train["steps"]] == [
        ("fit", 9.12),
        ("prep", 0.6),
    ]
    assert [x["region"] for x in r["region_breakdown"]] == ["us-central1", None, "europe-west9"]
    assert r["region_breakdown"][1]["scope"] == "scope_2"

    daily = {d["date"]: d["emissions_kg_co2e"] for d in r["daily"]}
    assert len(daily) == 92 and daily["2026-11-10"] == 5.16 and daily["2026-10-01"] == 0.0
    assert [(x["month"], x["emissions_kg_co2e"]) for x in r["monthly"]] == [
        ("2026-10", 4.56),
        ("2026-11", 5.29),
        ("2026-12", 0.3),
    ]


def test_budgets_targets_impact_recommendations_regressions(
    nightly: tuple[dict[str, Any], Path],
) -> None:
    _, out = nightly
    r = json.loads((out / "report.json").read_text())
    budgets = [
        (b["period_id"], b["used_kg_co2e"], b["percent"], b["warning"], b["exceeded"])
        for b in r["budgets"]
    ]
    assert budgets == [
        ("2026-10", 4.56, 91.2, True, False),
        ("2026-11", 5.16, 103.2, True, True),
        ("2026-12", 0.0, 0.0, False, False),
    ]

    reduction, intensity = r["targets"]
    assert reduction["annualised_kg_co2e"] == pytest.approx(TOTAL_KG * 365 / 92)
    assert reduction["target_kg_co2e_per_year"] == 40.0
    assert reduction["progress_percent"] == pytest.approx(
        (50 - TOTAL_KG * 365 / 92) / 10 * 100, abs=0.01
    )
    assert reduction["achieved"] is False
    assert intensity["achieved"] is True and intensity[
        "current_intensity_g_per_kwh"
    ] == pytest.approx(344.7099)

    impact = r["optimisation_impact"]
    top = impact["workloads"][0]
    assert (top["pipeline"], top["step"], top["emissions_kg_co2e"]) == ("train", "fit", 9.12)
    [rec] = [
        x
        for x in regional_recommendations("gcp", "us-central1", country_iso="USA", limit=1)
        if x.kind == "region"
    ]
    assert top["recommended_region"] == rec.region
    assert rec.intensity_g_per_kwh is not None
    assert top["saving_kg_co2e"] == pytest.approx(
        22.8 * (400 - rec.intensity_g_per_kwh) / 1000, abs=1e-9
    )
    assert impact["total_saving_kg_co2e"] == pytest.approx(
        sum(w["saving_kg_co2e"] for w in impact["workloads"])
    )

    recs = r["recommendations"]
    assert recs and all(x["priority"] in ("High", "Medium", "Low") for x in recs)
    by_category = {x["category"]: x for x in recs}
    assert by_category["Reliability"]["estimated_saving_kg_co2e"] == 1.2
    assert by_category["Regression"]["estimated_saving_kg_co2e"] == pytest.approx(0.96)
    region = [
        x for x in recs if x["category"] == "Region" and x["from_location"] == "gcp:us-central1"
    ]
    assert region[0]["workloads"] == ["train/fit", "train/prep"]
    assert region[0]["estimated_saving_percent"] == pytest.approx(
        100 * region[0]["estimated_saving_kg_co2e"] / TOTAL_KG, abs=0.01
    )

    [alert] = r["regressions"]
    assert alert["kind"] == "carbon_regression" and alert["date"] == "2026-11-10"
    assert alert["team"] == "ranking" and alert["baseline_mean_kg_co2e"] == 3.0
    assert "2026-Q4" in r["generated_for"] and not re.search(r"\d{2}:\d{2}:\d{2}", json.dumps(r))


def test_csv_has_one_row_per_team_pipeline_month(nightly: tuple[dict[str, Any], Path]) -> None:
    _, out = nightly
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert list(rows[0]) == list(esg_nightly.CSV_COLUMNS)
    got = [
        (
            x["month"],
            x["team"],
            x["pipeline"],
            x["step_attempts"],
            x["runs"],
            x["failed_attempts"],
            x["emissions_kg_co2e"],
            x["energy_total_kwh"],
        )
        for x in rows
    ]
    assert got == [
        ("2026-10", "ranking", "train", "2", "1", "0", "4.56", "10.5"),
        ("2026-11", "ranking", "train", "2", "1", "1", "5.16", "12.0"),
        ("2026-11", "vision", "detect", "1", "1", "0", "0.13", "4.5"),
        ("2026-12", "vision", "detect", "1", "1", "0", "0.3", "1.0"),
    ]
    assert {x["generated_for"] for x in rows} == {"2026-Q4"}
    assert rows[3]["estimated_energy_share"] == "1.0" and rows[2]["intensity_g_per_kwh"] == "20.0"


def test_html_is_self_contained_with_figures_charts_budgets_and_recommendations(
    nightly: tuple[dict[str, Any], Path],
) -> None:
    _, out = nightly
    page = (out / "report.html").read_text()
    assert "<title>Carbon report 2026-Q4 - Acme AI Division</title>" in page
    assert "10.2 kg CO2e" in page and "28 kWh" in page and "6 / 4" in page
    assert "430 g CO2e" in page and "market-based (GCP us-central1 PPA)" in page
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    for alt, data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000, alt
    assert base64.b64encode((out / "daily_emissions.png").read_bytes()).decode() == images[0][1]
    assert 'style="width:91.2%;background:#f9a825"' in page  # October: warning
    assert 'style="width:100.0%;background:#c62828"' in page  # November: exceeded
    assert "Move train/fit, train/prep from gcp:us-central1" in page
    assert "Scope 3, Category 1" in page and "Corporate Value Chain (Scope 3)" in page
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing fetched from elsewhere
    assert datetime.now(timezone.utc).date().isoformat() not in page


def test_a_second_run_of_the_night_writes_identical_bytes(store: Store, tmp_path: Path) -> None:
    fill(store)
    first = esg_nightly.run_nightly(
        store, PERIOD, out_dir=str(tmp_path / "a"), config=CONFIG, now=NOW
    )
    second = esg_nightly.run_nightly(
        store, PERIOD, out_dir=str(tmp_path / "b"), config=CONFIG, now=NOW
    )
    assert first["read"]["json_records"] == 0 and second["compaction"]["days_compacted"] == 0
    for name in first["artifacts"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert store.get(f"esg/2026-Q4/{name}").data == (tmp_path / "a" / name).read_bytes()


def test_json_path_and_compacted_path_give_the_same_report(
    local_store: Store, tmp_path: Path
) -> None:
    fill(local_store)
    esg_nightly.run_nightly(
        local_store, PERIOD, out_dir=str(tmp_path / "json"), config=CONFIG, compact_first=False
    )
    esg_nightly.run_nightly(
        local_store, PERIOD, out_dir=str(tmp_path / "parts"), config=CONFIG, now=NOW
    )
    for name in ("report.json", "report.csv", "report.html"):
        assert (tmp_path / "json" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()


def test_market_based_figure_only_when_configured(local_store: Store) -> None:
    fill(local_store)
    report = esg_report.build_report(
        esg.aggregate(local_store, PERIOD), esg_config.load_esg_config({})
    )
    assert report["emissions"]["market_based"] is None
    assert report["budgets"] == [] and report["targets"] == []
    assert report["executive_summary"]["developers"] is None


def test_own_machines_can_be_declared_scope_3(local_store: Store) -> None:
    fill(local_store)
    cfg = esg_config.load_esg_config({"esg": {"own_compute_scope": "scope_3_category_1"}})
    report = esg_report.build_report(esg.aggregate(local_store, PERIOD), cfg)
    assert report["emissions"]["by_scope_kg_co2e"] == {
        "scope_2": 0.0,
        "scope_3_category_1": TOTAL_KG,
    }


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param({"colour": "green"}, r"unknown key\(s\) \['colour'\]", id="unknown-key"),
        pytest.param(
            {"targets": [{"name": "x", "reduction_percent": 10}]},
            "baseline_kg_co2e: required",
            id="target",
        ),
        pytest.param({"team_sizes": {"a": 0}}, "team_sizes", id="team-size"),
        pytest.param(
            {"market_based": {"factors": [{"provider": "gcp", "intensity_g_per_kwh": 0}]}},
            r"factors\[0\]\.source: required",
            id="market-source",
        ),
        pytest.param({"own_compute_scope": "scope_1"}, "own_compute_scope", id="scope"),
    ],
)
def test_bad_esg_config_names_the_field(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        esg_config.load_esg_config({"esg": section})


def test_config_is_read_from_carbon_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "carbon.yaml"
    path.write_text("esg:\n  organisation: From File\n  team_sizes: {ranking: 3}\n")
    monkeypatch.setenv("CARBONPIPE_CONFIG", str(path))
    cfg = esg_config.load_esg_config()
    assert cfg.organisation == "From File" and cfg.team_sizes == {"ranking": 3}


# -- the command -----------------------------------------------------------------------------


def test_cli_esg_writes_artifacts_and_prints_totals(
    local_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(local_store)
    out = tmp_path / "cli"
    code = main(
        [
            "esg",
            "--store",
            local_store.uri,
            "--period",
            PERIOD,
            "--out",
            str(out),
            "--json",
            "--progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["totals"]["total_emissions_kg_co2e"] == TOTAL_KG
    assert sorted(p.name for p in out.iterdir()) == sorted(data["artifacts"])
    assert "[" + "#" * 30 + "] 92/92 days, 6 records" in captured.err


def test_cli_esg_takes_start_and_end(
    local_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(local_store)
    code = main(
        [
            "esg",
            "--store",
            local_store.uri,
            "--start",
            "2026-11-01",
            "--end",
            "2026-11-15",
            "--no-compact",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "ESG report 2026-11-01_2026-11-15" in text and "5.16 kg CO2e" in text
    assert local_store.exists("esg/2026-11-01_2026-11-15/report.json")


def test_cli_esg_rejects_a_bad_period(
    local_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["esg", "--store", local_store.uri, "--period", "Q4"]) == 2
    assert "2026-Q4" in capsys.readouterr().err


# -- the page in a real browser --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(
    nightly: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    _, out = nightly
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,1400",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and int.from_bytes(data[16:20], "big") == 1100
