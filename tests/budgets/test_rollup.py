"""Per-day rollups and the last-run pointer: every total equals the listing of every charge.

Real stores (a local folder, the in-memory store, moto's S3); charges written by the ledger,
as a late pod or a spool replay writes them, and keys of earlier versions written directly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.charges import last_run_key, late_marker_key, scope_key
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.period import period_window
from carbonpipe.budgets.rollup import _prefixes, listed_usage, period_usage, roll_up
from carbonpipe.record import utc_iso
from carbonpipe.stores.base import Store
from carbonpipe.stores.local import LocalStore
from carbonpipe.stores.memory import MemoryStore
from carbonpipe.units import ng_to_kg
from tests.budgets.test_ledger import _Clock, _record

NOV_25 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
SCOPE = "pipeline:train"
ROLLUPS = f"budgets/{scope_key(SCOPE)}/rollups/"


def _ended(day: date, hour: int = 10) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def _both(store: Store, scope: str, period: str, now: datetime) -> tuple[int, int, int]:
    """(total by rollups, total by listing every charge, charges counted by rollups)."""
    window = period_window(period, now)
    usage = period_usage(store, scope, window, now)
    listed, entries = listed_usage(store, scope, window)
    assert usage.count == len(entries)
    return usage.total_ng, listed, usage.count


# ---------------------------------------------------------------------------------------------
# Rollups equal the charges they cover


charge_lists = st.lists(
    st.tuples(
        st.integers(0, 40),  # days before NOV_25 the step ended
        st.integers(0, 23),  # hour
        st.integers(0, 12),  # record (a small pool: repeats are re-deliveries)
        st.integers(0, 10**9),  # nanograms
        st.sampled_from(["fit", "eval"]),
        st.booleans(),  # charged late (after its day is rolled up) or on time
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(charges=charge_lists, period=st.sampled_from(["month", "quarter", "total"]))
# A total budget whose only charge is of today (found by a full run, 2026-12-05).
@example(charges=[(0, 0, 0, 0, "fit", False)], period="total")
def test_rollups_equal_the_listing_of_every_charge(
    charges: list[tuple[int, int, int, int, str, bool]], period: str
) -> None:
    store = MemoryStore()
    clock = _Clock(NOV_25)
    ledger = BudgetLedger(store, clock=clock)
    on_time = [c for c in charges if not c[5]]
    late = [c for c in charges if c[5]]
    for back, hour, rid, ng, step, _ in on_time:
        day = NOV_25.date() - timedelta(days=back)
        ledger.charge(_record(f"r{rid}", kg=ng / 1e12, ended_at=_ended(day, hour), step=step))
    first = _both(store, SCOPE, period, NOV_25)
    assert first[0] == first[1]
    # A month or a quarter has closed days from its start; a total budget's start is its first
    # charge, so it has none while every charge is of today (back 0: still open, never rolled up).
    if period != "total" or any(back > 0 for back, *_ in on_time):
        assert list(store.list(ROLLUPS)), "the first read wrote the closed days' rollups"
    else:
        assert not list(store.list(ROLLUPS)), "no closed day, no rollup"
    # Every rollup's totals are those of its day's charges.
    for key in store.list(ROLLUPS):
        body = json.loads(store.get(key).data)
        assert (body["total_ng"], body["count"]) == _day_listing(store, body["date"])
    # Late charges (a pod's, a spool's replay) into days already rolled up count once.
    for back, hour, rid, ng, step, _ in late:
        day = NOV_25.date() - timedelta(days=back)
        ledger.charge(_record(f"r{rid}", kg=ng / 1e12, ended_at=_ended(day, hour), step=step))
    again = _both(store, SCOPE, period, NOV_25)
    assert again[0] == again[1]
    assert _both(store, SCOPE, period, NOV_25) == again  # and from the newer rollups


def _day_listing(store: Store, day: str) -> tuple[int, int]:
    base = f"budgets/{scope_key(SCOPE)}/charges/"
    best: dict[str, tuple[str, int]] = {}
    for key in store.list(f"{base}date={day}/"):
        name = key.rsplit("/", 1)[1]
        rid, _, amount = name.rpartition("__")
        ng = (
            int(amount[: -len("ng.json")])
            if amount.endswith("ng.json")
            else int(amount[: -len(".json")]) * 1000
        )
        if rid not in best or key < best[rid][0]:
            best[rid] = (key, ng)
    return sum(ng for _, ng in best.values()), len(best)


def test_the_second_read_lists_no_closed_day(local_store: Store) -> None:
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    for back in range(1, 25):
        day = NOV_25.date() - timedelta(days=back)
        ledger.charge(_record(f"r{back}", kg=back * 1e-6, ended_at=_ended(day)))
    ledger.charge(_record("today", kg=1e-6, ended_at=_ended(NOV_25.date(), 9)))
    window = period_window("month", NOV_25)
    first = period_usage(local_store, SCOPE, window, NOV_25)
    second = period_usage(local_store, SCOPE, window, NOV_25)
    assert (first.listed, first.rolled) == (24, 0)  # Nov 1..24: closed, now rolled up
    assert (second.listed, second.rolled) == (0, 24)
    assert list(second.entries) == ["today"]  # only the open day is listed
    assert first.total_ng == second.total_ng == listed_usage(local_store, SCOPE, window)[0]


def test_old_microgram_keys_and_re_deliveries_count_as_the_listing_does(
    local_store: Store,
) -> None:
    charges = f"budgets/{scope_key(SCOPE)}/charges/date=2026-11-20/step=fit/"
    local_store.put_if_absent(f"{charges}old__1234.json", b"{}")
    local_store.put_if_absent(f"{charges}twice__5000ng.json", b"{}")
    local_store.put_if_absent(f"{charges}twice__7000ng.json", b"{}")  # re-measured
    total, listed, count = _both(local_store, SCOPE, "month", NOV_25)
    assert (total, count) == (listed, 2) == (1_234_000 + 5_000, 2)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_late_charge_into_a_rolled_up_day_counts_once_and_outranks_the_old_rollup(
    backend: str, request: pytest.FixtureRequest
) -> None:
    local_store: Store = request.getfixturevalue(f"{backend}_store")
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    ledger.charge(_record("a", kg=2e-6, ended_at="2026-11-20T10:00:00Z"))
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (2_000_000, 2_000_000)
    # A pod whose charge for the 20th lands days later: a marker first, then the charge.
    late = ledger.charge(_record("b", kg=3e-6, ended_at="2026-11-20T23:59:00Z"))
    [key] = [k for k in late.keys if k.startswith(f"budgets/{scope_key(SCOPE)}/")]
    assert local_store.exists(late_marker_key(key))
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (5_000_000, 5_000_000)
    # The same record charged again (a re-delivery): still once.
    ledger.charge(_record("b", kg=3e-6, ended_at="2026-11-20T23:59:00Z"))
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (5_000_000, 5_000_000)
    days = [k for k in local_store.list(ROLLUPS) if "date=2026-11-20" in k]
    assert len(days) == 2  # the first rollup is kept; the newer one outranks it
    window = period_window("month", NOV_25)
    assert period_usage(local_store, SCOPE, window, NOV_25).listed == 0


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_marker_whose_charge_has_not_landed_counts_only_once_it_lands(
    backend: str, request: pytest.FixtureRequest
) -> None:
    local_store: Store = request.getfixturevalue(f"{backend}_store")
    # A spooled charge: its marker is in the store, the charge waits for a replay.
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    ledger.charge(_record("a", kg=1e-6, ended_at="2026-11-19T10:00:00Z"))
    charge = f"budgets/{scope_key(SCOPE)}/charges/date=2026-11-19/step=fit/b__4000ng.json"
    local_store.put_if_absent(late_marker_key(charge), b"{}")
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (1_000_000, 1_000_000)
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (1_000_000, 1_000_000)
    local_store.put_if_absent(charge, b"{}")  # the replay
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (1_004_000, 1_004_000)


def test_a_charge_written_on_time_is_in_its_day_s_rollup(local_store: Store) -> None:
    clock = _Clock(datetime(2026, 11, 24, 23, 50, tzinfo=timezone.utc))
    ledger = BudgetLedger(local_store, clock=clock)
    budget = Budget(scope=SCOPE, period="month", limit_kg_co2e=1.0)
    # A step that started before midnight, reserved, and was charged on time.
    res = BudgetGate(ledger, budget).reserve(
        "train", "fit", reservation_id="s1", estimate_kg=0.5, ttl_s=6 * 3600
    )
    charge = ledger.charge(_record("s1", kg=0.25, ended_at=utc_iso(clock.now)))
    assert not local_store.exists(late_marker_key(charge.keys[0]))  # its day had not ended
    clock.advance(2 * 3600)  # 01:50 on the 25th: the 24th is closed and rolled up
    status = ledger.status(budget)
    assert (status.used_kg, status.reserved_kg, status.charges) == (0.25, 0.0, 1)
    assert res.expires_at > clock.now  # the reservation lives on, but it is settled


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_late_charges_and_rollups_end_exact(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(f"{backend}_store")
    clock = _Clock(NOV_25)
    ledger = BudgetLedger(store, clock=clock)
    rng = random.Random(7)
    days = [NOV_25.date() - timedelta(days=d) for d in range(0, 6)]
    for i in range(30):
        ledger.charge(
            _record(f"on{i}", kg=rng.randint(1, 10**6) / 1e12, ended_at=_ended(rng.choice(days)))
        )
    window = period_window("month", NOV_25)
    seen: list[int] = []
    errors: list[BaseException] = []

    def charge(w: int) -> None:
        try:
            for i in range(10):
                day = rng.choice(days)
                ledger.charge(_record(f"late{w}-{i}", kg=(w + 1) * 1e-9, ended_at=_ended(day)))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(6):
                seen.append(period_usage(store, SCOPE, window, NOV_25).total_ng)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=charge, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total, listed, _ = _both(store, SCOPE, "month", NOV_25)
    assert total == listed
    assert seen and max(seen) <= listed  # never more than was charged
    assert _both(store, SCOPE, "month", NOV_25)[0] == listed


def test_total_budget_bootstraps_once_then_reads_rollups(memory_store: Store) -> None:
    ledger = BudgetLedger(memory_store, clock=_Clock(NOV_25))
    for back in (400, 90, 3, 0):
        day = NOV_25.date() - timedelta(days=back)
        ledger.charge(_record(f"r{back}", kg=1e-6, ended_at=_ended(day, 8)))
    window = period_window("total", NOV_25)
    first = period_usage(memory_store, SCOPE, window, NOV_25)
    second = period_usage(memory_store, SCOPE, window, NOV_25)
    assert (
        first.total_ng
        == second.total_ng
        == 4_000_000
        == listed_usage(memory_store, SCOPE, window)[0]
    )
    assert second.listed == 0 and second.rolled == 400  # every closed day since the first
    assert (first.first_date, second.first_date) == ("2025-10-21", "2025-10-21")
    report = roll_up(memory_store, SCOPE, window, now=NOV_25, relist=True)
    assert report.listed == 400


@settings(max_examples=200, deadline=None)
@given(
    st.dates(date(2020, 1, 1), date(2040, 1, 1)),
    st.one_of(st.none(), st.integers(0, 900)),
    st.dates(date(2019, 1, 1), date(2045, 1, 1)),
)
def test_open_day_prefixes_cover_exactly_their_days(
    first: date, span: int | None, probe: date
) -> None:
    end = None if span is None else first + timedelta(days=span)
    key = f"date={probe.isoformat()}/step=fit/r__1ng.json"
    hits = sum(key.startswith(p) for p in _prefixes(first, end))
    assert hits == (1 if probe >= first and (end is None or probe < end) else 0)


# ---------------------------------------------------------------------------------------------
# The last-run pointer


def test_the_estimate_reads_the_last_run_pointer_and_catches_what_it_missed(
    local_store: Store,
) -> None:
    clock = _Clock(NOV_25)
    ledger = BudgetLedger(local_store, clock=clock)
    gate = BudgetGate(ledger, Budget(scope=SCOPE, period="month", limit_kg_co2e=1.0))
    ledger.charge(_record("b", kg=0.02, ended_at="2026-11-20T18:00:00Z"))
    ledger.charge(_record("a", kg=0.01, ended_at="2026-11-20T09:00:00Z"))  # ended earlier
    pointer = json.loads(local_store.get(last_run_key("train", "fit")).data)
    assert (pointer["record_id"], pointer["emissions_ng"]) == ("b", 20_000_000_000)
    assert (gate.estimate("train", "fit").kg_co2e, gate.estimate("train", "fit").source) == (
        0.02,
        "last_run",
    )
    # A charge the pointer missed (a replay from a spool writes only the charge).
    key = f"budgets/{scope_key(SCOPE)}/charges/date=2026-11-25/step=fit/c__30000000000ng.json"
    body = {"record_id": "c", "ended_at": "2026-11-25T08:00:00Z", "duration_s": 12.0}
    local_store.put_if_absent(key, json.dumps(body).encode())
    est = gate.estimate("train", "fit")
    assert (est.kg_co2e, est.duration_s) == (0.03, 12.0)
    assert json.loads(local_store.get(last_run_key("train", "fit")).data)["record_id"] == "c"


def test_a_step_without_a_pointer_is_found_by_listing_and_gets_one(local_store: Store) -> None:
    key = f"budgets/{scope_key(SCOPE)}/charges/date=2026-10-02/step=fit/old__5000.json"
    local_store.put_if_absent(key, json.dumps({"ended_at": "2026-10-02T01:00:00Z"}).encode())
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    last = ledger.last_charge("train", "fit")
    assert last is not None and (last.record_id, last.emissions_ng) == ("old", 5_000_000)
    assert local_store.exists(last_run_key("train", "fit"))


# ---------------------------------------------------------------------------------------------
# budget status: the same figures, read from rollups


def test_budget_status_shows_the_same_figures_once_rolled_up(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    now = datetime.now(timezone.utc)
    ledger = BudgetLedger(store)
    for i, back in enumerate((9, 5, 3, 2, 0, 0)):
        day = (now - timedelta(days=back)).date()
        hour = 0 if back == 0 else 12
        ledger.charge(_record(f"s{i}", kg=(i + 1) * 1.5e-6, ended_at=_ended(day, hour)))
    args = ["budget", "status", SCOPE, "--limit-kg", "1", "--period", "total"]
    args += ["--store", str(root), "--json"]

    def status() -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "carbonpipe", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    before = status()  # the first read writes the rollups
    assert list(store.list(ROLLUPS))
    after = status()
    listed, entries = listed_usage(store, SCOPE, period_window("total", now))
    for shown in (before, after):
        assert shown["used_kg"] == ng_to_kg(listed) and shown["charges"] == len(entries)
    same = ("used_kg", "reserved_kg", "remaining_kg", "percent", "charges", "period_start")
    assert {k: before[k] for k in same} == {k: after[k] for k in same}


def test_a_charge_without_a_marker_waits_for_a_relist_of_its_rolled_up_day(
    local_store: Store,
) -> None:
    # An earlier version's pod writes no marker: its late charge is not seen in a rolled-up
    # day until the nightly job lists the closed days again.
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    ledger.charge(_record("a", kg=1e-6, ended_at="2026-11-18T10:00:00Z"))
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (1_000_000, 1_000_000)
    old = f"budgets/{scope_key(SCOPE)}/charges/date=2026-11-18/step=fit/old__2.json"
    local_store.put_if_absent(old, b"{}")
    window = period_window("month", NOV_25)
    assert period_usage(local_store, SCOPE, window, NOV_25).total_ng == 1_000_000  # not yet
    assert listed_usage(local_store, SCOPE, window)[0] == 1_002_000
    report = roll_up(local_store, SCOPE, window, now=NOV_25, relist=True)
    assert report.listed == 24
    assert _both(local_store, SCOPE, "month", NOV_25)[:2] == (1_002_000, 1_002_000)


def test_concurrent_runs_of_a_step_leave_the_pointer_on_the_last_to_end(local_store: Store) -> None:
    ledger = BudgetLedger(local_store, clock=_Clock(NOV_25))
    rng = random.Random(3)
    ends = [NOV_25 - timedelta(minutes=rng.randint(1, 5000)) for _ in range(40)]
    errors: list[BaseException] = []

    def charge(w: int) -> None:
        try:
            for i in range(w, len(ends), 4):
                ledger.charge(_record(f"run{i:02d}", kg=(i + 1) * 1e-9, ended_at=utc_iso(ends[i])))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=charge, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    last = max(range(len(ends)), key=lambda i: (ends[i], f"run{i:02d}"))
    pointer = json.loads(local_store.get(last_run_key("train", "fit")).data)
    assert pointer["record_id"] == f"run{last:02d}"
    found = ledger.last_charge("train", "fit")
    assert found is not None and found.record_id == f"run{last:02d}"
