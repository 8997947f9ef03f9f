"""Exact sums: records, ledger, compacted parts, ESG aggregation and `carbonpipe report` agree.

Every sum is of exact integers (ng CO2e, nWh; :mod:`carbonpipe.units`), so whatever the records
(tiny or large, few or many, in any order), each total equals the sum of the records' own
fields to within half a nanogram per record, and a group's energy-weighted grid intensity lies
between the lowest and highest intensity of its records.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.esg import aggregation as esg
from carbonpipe.esg import compaction as esg_compaction
from carbonpipe.esg import nightly as esg_nightly
from carbonpipe.esg import report as esg_report
from carbonpipe.esg import rows as esg_rows
from carbonpipe.record import Record
from carbonpipe.report import summarize
from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from carbonpipe.units import format_energy, kg_to_ng, kwh_to_nwh, ng_to_kg, nwh_to_kwh
from tests.esg.test_esg import fill, make_record

if TYPE_CHECKING:
    import pyarrow as pa

PERIOD = "2026-11"
AT = datetime(2026, 11, 30, 23, tzinfo=timezone.utc)  # the ledger's "now": inside the month
NOW = datetime(2027, 1, 5, tzinfo=timezone.utc)  # every day of the month is closed
DAYS = ("2026-11-02", "2026-11-15", "2026-11-30")
TEAMS = ("ranking", "vision", "")
PIPELINES = ("train", "detect", "eval")
REGIONS = (("gcp", "us-central1", "USA"), ("gcp", "europe-west9", "FRA"), (None, None, "DEU"))
CLI = [sys.executable, "-m", "carbonpipe"]

ENERGY = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-13, max_value=1e-6),  # below a nanowatt-hour to a microwatt-hour
    st.floats(min_value=1e-6, max_value=10.0),
    st.floats(min_value=10.0, max_value=5e4),
)


@st.composite
def records(draw: st.DrawFn) -> list[Record]:
    n = draw(st.integers(min_value=1, max_value=24))
    out = []
    for i in range(n):
        provider, region, country = draw(st.sampled_from(REGIONS))
        remote_kwh = draw(ENERGY)
        out.append(
            make_record(
                draw(st.sampled_from(PIPELINES)),
                draw(st.sampled_from(("prep", "fit"))),
                draw(st.sampled_from(TEAMS)),
                draw(st.sampled_from(DAYS)),
                f"run-{i}",
                cpu=draw(ENERGY),
                gpu=draw(ENERGY),
                ram=draw(ENERGY),
                remote_kwh=remote_kwh,
                remote_kg=draw(ENERGY) / 10 if remote_kwh else 0.0,
                pue=draw(st.floats(min_value=1.0, max_value=2.0)),
                intensity=draw(st.floats(min_value=0.0, max_value=1200.0)),
                status=draw(st.sampled_from(("succeeded", "failed"))),
                provider=provider,
                region=region,
                country=country,
            )
        )
    return out


# -- what the records say, computed here from their own fields --------------------------------


def _ng(recs: Iterable[Record]) -> int:
    return sum(kg_to_ng(r.emissions_kg_co2e) for r in recs)


def _nwh(recs: Iterable[Record]) -> int:
    return sum(kwh_to_nwh(r.energy_kwh["total"]) for r in recs)


def _assert_exact(ng: int, nwh: int, recs: list[Record], where: str) -> None:
    assert ng == _ng(recs), where
    assert nwh == _nwh(recs), where
    # ...and within half a nanogram (nanowatt-hour) per record of the floats' exact sum.
    half = Fraction(len(recs), 2)
    assert (
        abs(ng - sum((Fraction(r.emissions_kg_co2e) for r in recs), Fraction(0)) * 10**12) <= half
    ), where
    assert (
        abs(nwh - sum((Fraction(r.energy_kwh["total"]) for r in recs), Fraction(0)) * 10**12)
        <= half
    ), where


def _facility(r: Record) -> Fraction:
    e = r.energy_kwh
    return (Fraction(e["cpu"]) + Fraction(e["gpu"]) + Fraction(e["ram"])) * Fraction(r.pue)


def _assert_intensity(intensity: float | None, recs: list[Record], where: str) -> None:
    weighed = [r for r in recs if _facility(r) > 0]
    if intensity is None:
        # No record with a whole nanowatt-hour of facility energy in the group.
        assert sum((_facility(r) for r in weighed), Fraction(0)) * 10**12 < len(recs) + 1, where
        return
    low = min(r.intensity_g_per_kwh for r in weighed)
    high = max(r.intensity_g_per_kwh for r in weighed)
    assert low <= intensity <= high, (where, low, intensity, high)
    energy = sum((_facility(r) for r in weighed), Fraction(0))
    if energy >= Fraction(1, 1000):  # a watt-hour or more: close to the unrounded weighted mean
        exact = sum((_facility(r) * Fraction(r.intensity_g_per_kwh) for r in weighed), Fraction(0))
        exact /= energy
        assert abs(Fraction(intensity) - exact) <= Fraction(1, 1000), where


def _groups(recs: list[Record], key: Callable[[Record], Any]) -> dict[Any, list[Record]]:
    out: dict[Any, list[Record]] = defaultdict(list)
    for r in recs:
        out[key(r)].append(r)
    return out


def _region(r: Record) -> tuple[str, str]:
    return r.location.get("provider") or "", r.location.get("region") or ""


def _check_aggregate(agg: esg.Aggregate, recs: list[Record]) -> None:
    total = agg.totals()
    _assert_exact(total._s("emissions_ng"), total._s("total_nwh"), recs, "all")
    _assert_intensity(total.intensity_g_per_kwh, recs, "all")
    for dim, key in (
        ("team", lambda r: r.team),
        ("pipeline", lambda r: r.pipeline),
        ("date", lambda r: r.date),
    ):
        found = {k[0]: m for k, m in agg.breakdown(dim)}
        expected = _groups(recs, key)
        assert set(found) == set(expected), dim
        for name, group in expected.items():
            m = found[name]
            _assert_exact(m._s("emissions_ng"), m._s("total_nwh"), group, f"{dim} {name}")
            _assert_intensity(m.intensity_g_per_kwh, group, f"{dim} {name}")
    regions = {k: m for k, m in agg.breakdown("provider", "region")}
    for name, group in _groups(recs, _region).items():
        m = regions[name]
        _assert_exact(m._s("emissions_ng"), m._s("total_nwh"), group, f"region {name}")
        _assert_intensity(m.intensity_g_per_kwh, group, f"region {name}")
    for team, group in _groups(recs, lambda r: r.team).items():
        if team:  # totals() of a scope answer the same as its breakdown row
            m = agg.totals(f"team:{team}")
            assert m._s("emissions_ng") == _ng(group)


def _report_bytes(agg: esg.Aggregate) -> bytes:
    return esg_nightly.report_json(esg_report.build_report(agg)) + esg_nightly.report_csv(agg)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records())
def test_every_total_is_the_exact_sum_of_the_records(recs: list[Record]) -> None:
    with tempfile.TemporaryDirectory(prefix="carbonpipe-exact-") as tmp:
        store = LocalStore(Path(tmp) / "a")
        fill(store, recs)  # records, and their charges in the budget ledger
        agg = esg.aggregate(store, PERIOD)
        assert agg.stats.json_records == len(recs)
        _check_aggregate(agg, recs)
        first = _report_bytes(agg)
        assert _report_bytes(esg.aggregate(store, PERIOD)) == first  # a rerun: the same bytes

        # The report document carries the exact sums beside the kg figures.
        doc = esg_report.build_report(agg)
        assert doc["executive_summary"]["total_emissions_ng"] == _ng(recs)
        assert doc["executive_summary"]["total_energy_nwh"] == _nwh(recs)
        teams = _groups(recs, lambda r: r.team or esg_report.NO_TEAM)
        for row in doc["team_breakdown"]:
            assert row["emissions_ng"] == _ng(teams[row["team"]])

        # The ledger's used: each scope's charges, and the status built on them.
        ledger = BudgetLedger(store, clock=lambda: AT)
        for scope, group in [
            *((f"team:{t}", g) for t, g in _groups(recs, lambda r: r.team).items() if t),
            *((f"pipeline:{p}", g) for p, g in _groups(recs, lambda r: r.pipeline).items()),
        ]:
            assert sum(e.emissions_ng for e in ledger.charges(scope, "month")) == _ng(group)
            status = ledger.status(Budget(scope=scope, period="month", limit_kg_co2e=1e6))
            assert status.used_kg == ng_to_kg(_ng(group)), scope

        # carbonpipe report's read-back.
        summary = summarize(store)
        assert (summary.emissions_ng, summary.energy_nwh) == (_ng(recs), _nwh(recs))
        for p, group in _groups(recs, lambda r: r.pipeline).items():
            assert summary.by_pipeline[p]["emissions_ng"] == _ng(group)

        # Compacted, the same sums; compacted from the records in another order, the same bytes.
        other = LocalStore(Path(tmp) / "b")
        fill(other, list(reversed(recs)))
        for s in (store, other):
            esg_compaction.compact(s, PERIOD, now=NOW)
        again = esg.aggregate(store, PERIOD)
        assert again.stats.compacted_records == len(recs) and again.stats.json_records == 0
        _check_aggregate(again, recs)
        assert _report_bytes(again) == first
        assert _report_bytes(esg.aggregate(other, PERIOD)) == first
        for day in sorted({r.date for r in recs}):
            key = esg_rows.part_key(day)
            assert store.get(key).data == other.get(key).data, day


def test_five_tiny_steps_at_one_intensity_report_that_intensity(local_store: Store) -> None:
    # The demo: five steps of a few micrograms at 126.43 g/kWh summed to 17.05 µg, but
    # the report said 18.0 µg at 134 g/kWh once each record was rounded to whole µg / µWh.
    recs = [
        make_record(
            "demo", f"s{i}", "ml", "2026-11-15", "r", cpu=2.7e-8 + i * 1e-10, intensity=126.43
        )
        for i in range(5)
    ]
    fill(local_store, recs)
    agg = esg.aggregate(local_store, PERIOD)
    t = agg.totals()
    assert t.intensity_g_per_kwh == 126.43
    assert t._s("emissions_ng") == _ng(recs)
    # Within half a nanogram per record (it was 0.95 µg off in whole micrograms).
    assert abs(t.emissions_kg_co2e - sum(r.emissions_kg_co2e for r in recs)) <= 5 * 0.5e-12
    doc = esg_report.build_report(agg)
    assert doc["executive_summary"]["intensity_g_per_kwh"] == 126.43


def test_a_part_compacted_before_the_integer_columns_still_reads_exactly(
    local_store: Store,
) -> None:
    import pyarrow.parquet as pq

    recs = [
        make_record("train", "fit", "ml", "2026-11-15", f"r{i}", cpu=1.3e-7 * (i + 1), gpu=0.5)
        for i in range(6)
    ]
    fill(local_store, recs)
    fresh = esg.aggregate(local_store, PERIOD)
    # What compaction wrote before: the float columns only, timestamps as text, no labels,
    # schema carbonpipe.compact/1.
    table = old_part_table(esg_rows._records_table(recs, "2026-11-15"))
    table = table.drop_columns(list(esg_rows._INT_COLUMNS)).replace_schema_metadata(
        {"schema": "carbonpipe.compact/1", "date": "2026-11-15", "skipped": "[]"}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    local_store.put_if_absent(esg_rows.part_key("2026-11-15"), buf.getvalue())
    old = esg.aggregate(local_store, PERIOD)
    assert old.stats.compacted_records == len(recs) and old.stats.json_records == 0
    assert old.totals() == fresh.totals()
    assert old.breakdown("team", "pipeline") == fresh.breakdown("team", "pipeline")


def old_part_table(table: pa.Table) -> pa.Table:
    """``table`` (a part's rows) as compact/1 and /2 wrote it: timestamps as text, no labels."""
    import pyarrow as pa

    for name in ("started_at", "ended_at"):
        text = [t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in table[name].to_pylist()]
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(text))
    return table.drop_columns(["labels"])


# -- the commands a user runs ------------------------------------------------------------------


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBONPIPE_STORE")}
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=180, env=env, **kw)


def test_report_esg_and_budget_status_agree_on_fifty_records(tmp_path: Path) -> None:
    rnd = random.Random(15)
    recs = [
        make_record(
            rnd.choice(PIPELINES),
            "fit",
            rnd.choice(("ranking", "vision")),
            rnd.choice(DAYS),
            f"run-{i}",
            cpu=rnd.uniform(1e-8, 5e-8),  # demo-sized: micrograms, microwatt-hours
            gpu=rnd.choice((0.0, rnd.uniform(1e-9, 1e-7))),
            pue=rnd.uniform(1.0, 1.5),
            intensity=rnd.choice((126.43, 20.0, 380.5)),
        )
        for i in range(50)
    ]
    store = LocalStore(tmp_path / "store")
    fill(store, recs)

    out = _run(["report", "--store", str(tmp_path / "store"), "--json"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["records"], data["emissions_ng"], data["energy_nwh"]) == (
        50,
        _ng(recs),
        _nwh(recs),
    )
    assert data["emissions_kg_co2e"] == ng_to_kg(_ng(recs))
    for p, group in _groups(recs, lambda r: r.pipeline).items():
        assert data["by_pipeline"][p]["emissions_ng"] == _ng(group)
    text = _run(["report", "--store", str(tmp_path / "store")]).stdout
    shown = f"emissions:  {_mass(_ng(recs))} CO2e"
    assert shown in text and " µg CO2e" in text and "0.0000" not in text

    out = _run(
        [
            "esg",
            "--store",
            str(tmp_path / "store"),
            "--period",
            PERIOD,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert out.returncode == 0, out.stderr
    assert f"emissions:  {_mass(_ng(recs))} CO2e (location-based)" in out.stdout
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    s = doc["executive_summary"]
    assert (s["total_emissions_ng"], s["total_energy_nwh"]) == (_ng(recs), _nwh(recs))
    teams = _groups(recs, lambda r: r.team)
    assert {t["team"]: t["emissions_ng"] for t in doc["team_breakdown"]} == {
        t: _ng(g) for t, g in teams.items()
    }
    weighed = [r.intensity_g_per_kwh for r in recs]
    assert min(weighed) <= s["intensity_g_per_kwh"] <= max(weighed)
    page = (tmp_path / "out" / "report.html").read_text()
    assert f">{_mass(_ng(recs))} CO2e<" in page  # the headline tile, in µg
    assert f">{format_energy(nwh_to_kwh(_nwh(recs)))}<" in page and "0.0000" not in page
    assert format_energy(nwh_to_kwh(_nwh(recs))).endswith(" mWh")

    for team, group in teams.items():
        out = _run(
            [
                "budget",
                "status",
                f"team:{team}",
                "--limit-kg",
                "1",
                "--period",
                "total",
                "--store",
                str(tmp_path / "store"),
                "--json",
            ]
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["used_kg"] == ng_to_kg(_ng(group))
        text = _run(
            [
                "budget",
                "status",
                f"team:{team}",
                "--limit-kg",
                "1",
                "--period",
                "total",
                "--store",
                str(tmp_path / "store"),
            ]
        ).stdout
        # The same unit as `carbonpipe report` shows for the same amount.
        assert f": {_mass(_ng(group))} used + 0 g reserved of 1 kg CO2e" in text


def _mass(ng: int) -> str:
    from carbonpipe.units import format_mass

    return format_mass(ng_to_kg(ng))


@pytest.mark.parametrize("n", [48])
def test_many_steps_on_one_day_sum_to_the_records_in_the_ledger(local_store: Store, n: int) -> None:
    # The 48 steps whose ledger total differed from the records by more than 1 µg.
    rnd = random.Random(48)
    recs = [
        make_record(
            "train",
            f"s{i}",
            "ml",
            "2026-11-15",
            "r",
            cpu=rnd.uniform(1e-9, 1e-6),
            intensity=rnd.uniform(10, 900),
        )
        for i in range(n)
    ]
    fill(local_store, recs)
    ledger = BudgetLedger(local_store, clock=lambda: AT)
    used = sum(e.emissions_ng for e in ledger.charges("pipeline:train", "month"))
    assert used == _ng(recs)
    assert (
        abs(used - sum((Fraction(r.emissions_kg_co2e) for r in recs), Fraction(0)) * 10**12)
        <= n / 2
    )
