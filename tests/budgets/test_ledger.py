"""Carbon budgets: exact totals under concurrent writers, gates that never over-commit, periods."""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import random
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from carbonpipe.budgets.budget import Budget, load_budgets
from carbonpipe.budgets.charges import baseline_key, safe_name, scope_key
from carbonpipe.budgets.gate import BudgetGate
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.period import period_window
from carbonpipe.errors import BudgetExceeded, ConfigError
from carbonpipe.record import Record
from carbonpipe.stores.base import Store
from carbonpipe.stores.opener import open_store

if TYPE_CHECKING:
    # Only for the annotation: importing the module in a spawned child would rerun its
    # import-time environment clean-up there.
    from tests.fault_proxy import Flaky

NOV_25 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


class _Clock:
    """A settable UTC clock for the ledger."""

    def __init__(self, now: datetime = NOV_25) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _record(
    record_id: str,
    *,
    ug: int | None = None,
    kg: float | None = None,
    ended_at: str = "2026-11-24T10:00:00Z",
    pipeline: str = "train",
    step: str = "fit",
    team: str = "ml",
    run_id: str = "run-1",
) -> Record:
    emissions = kg if kg is not None else (ug or 0) / 1e9
    return Record(
        record_id=record_id,
        project="p",
        experiment="",
        pipeline=pipeline,
        run_id=run_id,
        step=step,
        team=team,
        attempt=1,
        started_at=ended_at,
        ended_at=ended_at,
        duration_s=1.0,
        status="succeeded",
        energy_kwh={"cpu": 0.0, "gpu": 0.0, "ram": 0.0, "remote": 0.0, "total": 0.0},
        power_w={"cpu": 0.0, "gpu": 0.0, "ram": 0.0},
        pue=1.0,
        intensity_g_per_kwh=100.0,
        emissions_kg_co2e=emissions,
        location={"provider": "", "region": "", "country_iso": "BEL", "detected_by": "argument"},
        intensity_source={"name": "test", "vintage": "2026", "kind": "country"},
        measurement={"method": "estimate"},
    )


@pytest.fixture(params=["local", "memory"])
def ledger_store(request: pytest.FixtureRequest) -> Store:
    """The ledger's single-process rules, on a local folder and on the in-memory store."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


# ---------------------------------------------------------------------------------------------
# Concurrency, on every backend: writers in threads and in spawned processes at once.


def _reopen_spec(store: Store) -> tuple[str, dict[str, Any]]:
    reopen: Callable[[], dict[str, Any]] | None = getattr(store, "reopen_options", None)
    return store.uri, (reopen() if reopen else {})


def _run_threads(work: Sequence[Callable[[], None]], release: Callable[[], object] = bool) -> None:
    """Run each callable in its own thread, all let go at once after ``release()`` returns."""
    go = threading.Event()
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        go.wait(120)
        try:
            fn()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    try:
        release()
    finally:
        go.set()
        for t in threads:
            t.join(120)
    if errors:
        raise errors[0]


def _race(procs: list[Any], barrier: Any, parent_work: Sequence[Callable[[], None]]) -> None:
    """Start the child processes and this process's writer threads, all at the same moment."""
    for proc in procs:
        proc.start()
    try:
        _run_threads(parent_work, release=lambda: barrier.wait(120))
    finally:
        for proc in procs:
            proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


def _charge_all(ledger: BudgetLedger, batch: list[Record]) -> None:
    for rec in batch:
        # A spooled charge would make the totals prove nothing about concurrent writes.
        assert not ledger.charge(rec, run_scope=True).spooled, f"{rec.record_id} was spooled"


def _charge_worker(
    spec: tuple[str, dict[str, Any]], batches: list[list[Record]], barrier: Any
) -> None:
    """A pod: its own store client, several writer threads, started at the parent's signal."""
    ledger = BudgetLedger(open_store(spec[0], **spec[1]))
    work = [functools.partial(_charge_all, ledger, batch) for batch in batches]
    _run_threads(work, release=lambda: barrier.wait(120))


PROCESSES = 4
THREADS_PER_PROCESS = 3
PARENT_THREADS = 4
WRITERS = PARENT_THREADS + PROCESSES * THREADS_PER_PROCESS  # 16
RECORDS = 96


def test_concurrent_charges_from_threads_and_processes_sum_exactly(store: Store) -> None:
    _charges_sum_exactly(store)


def test_concurrent_charges_sum_exactly_on_s3_serving_requests_concurrently(
    s3_concurrent_store: Store,
) -> None:
    # Each charge is its own create-if-absent object whose key carries the amount, so the total
    # is exact even where the server's conditional writes race (moto without the serialiser).
    _charges_sum_exactly(s3_concurrent_store)


def _charges_sum_exactly(store: Store) -> None:
    records = [_record(f"rec{i:04d}", ug=1_000 + 37 * i) for i in range(RECORDS)]
    expected_ug = sum(1_000 + 37 * i for i in range(RECORDS))
    # Every record is delivered twice, by two different writers (often in two processes).
    batches: list[list[Record]] = [[] for _ in range(WRITERS)]
    for i, rec in enumerate(records):
        batches[i % WRITERS].append(rec)
        batches[(i + 7) % WRITERS].append(rec)
    for w, batch in enumerate(batches):
        random.Random(w).shuffle(batch)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    spec = _reopen_spec(store)
    procs = []
    for p in range(PROCESSES):
        first = PARENT_THREADS + p * THREADS_PER_PROCESS
        mine = batches[first : first + THREADS_PER_PROCESS]
        procs.append(ctx.Process(target=_charge_worker, args=(spec, mine, barrier)))
    ledger = BudgetLedger(store)
    _race(
        procs,
        barrier,
        [functools.partial(_charge_all, ledger, b) for b in batches[:PARENT_THREADS]],
    )

    now = datetime(2026, 11, 25, tzinfo=timezone.utc)
    ledger = BudgetLedger(store, clock=lambda: now)
    for scope in ("pipeline:train", "team:ml", "run:run-1"):
        status = ledger.status(Budget(scope=scope, period="month", limit_kg_co2e=1.0))
        assert status.used_kg == expected_ug / 1e9, scope
        assert status.charges == RECORDS
        keys = list(store.list(f"budgets/{scope_key(scope)}/charges/"))
        assert len(keys) == RECORDS  # one object per record: no duplicate was doubled


def _gate_worker(
    spec: tuple[str, dict[str, Any]],
    budget: Budget,
    ids: list[str],
    barrier: Any,
    results: Any,
) -> None:
    gate = BudgetGate(BudgetLedger(open_store(spec[0], **spec[1]), clock=_Clock()), budget)
    out: list[tuple[str, Any]] = []
    work = [functools.partial(_try_reserve, gate, i, out) for i in ids]
    _run_threads(work, release=lambda: barrier.wait(120))
    for item in out:
        results.put(item)


def _try_reserve(gate: BudgetGate, reservation_id: str, out: list[tuple[str, Any]]) -> None:
    try:
        gate.reserve("train", "fit", reservation_id=reservation_id)
    except BudgetExceeded as exc:
        figures = (exc.scope, exc.used_kg, exc.reserved_kg, exc.limit_kg, exc.estimate_kg)
        out.append(("refused", figures))
        return
    out.append(("granted", reservation_id))


def test_concurrent_gates_grant_exactly_the_reservations_that_fit(store: Store) -> None:
    # 1 g limit, 50 mg used, 300 mg per step: exactly 3 of the 8 steps fit.
    budget = Budget(
        scope="pipeline:train",
        period="month",
        limit_g_co2e=1.0,
        default_step_estimate_g=0.3,
        # Eight contenders on one document, a single-threaded emulator (Azurite) and a loaded
        # two-core machine: the gate's 5 s default deadline is not what this test is about.
        gate_timeout_s=60,
    )
    ledger = BudgetLedger(store, clock=_Clock())  # every process's ledger reads the same time
    ledger.charge(_record("prior", ug=50_000, step="prep"))
    gate = BudgetGate(ledger, budget)
    assert gate.estimate("train", "fit").source == "default"

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    spec = _reopen_spec(store)
    procs = [
        ctx.Process(
            target=_gate_worker,
            args=(spec, budget, [f"p{p}-{t}" for t in range(2)], barrier, results),
        )
        for p in range(2)
    ]
    out: list[tuple[str, Any]] = []
    _race(procs, barrier, [functools.partial(_try_reserve, gate, f"t{i}", out) for i in range(4)])
    out.extend(results.get(timeout=10) for _ in range(4))

    granted = [v for kind, v in out if kind == "granted"]
    refused = [v for kind, v in out if kind == "refused"]
    assert len(granted) == 3 and len(refused) == 5
    # Every refusal saw the three winners' reservations: 50 mg + 900 mg + 300 mg > 1 g.
    assert set(refused) == {("pipeline:train", 50_000 / 1e9, 900_000 / 1e9, 0.001, 300_000 / 1e9)}
    status = ledger.status(budget)
    assert (status.reservations, status.reserved_kg) == (3, 900_000 / 1e9)
    assert status.remaining_kg == 50_000 / 1e9


# ---------------------------------------------------------------------------------------------
# Periods (UTC), mid-period budgets, warnings


BOUNDARY_CHARGES = {
    "q3-last-second": ("2026-09-30T23:59:59Z", 1),
    "oct-last-second": ("2026-10-31T23:59:59.999999Z", 10),
    "nov-first-second": ("2026-11-01T00:00:00Z", 100),
    "nov-last-second": ("2026-11-30T23:59:59Z", 1_000),
    "nov-in-utc-but-dec-locally": ("2026-12-01T00:30:00+01:00", 10_000),
    "dec-first-second": ("2026-12-01T00:00:00Z", 100_000),
    "year-before": ("2025-12-31T23:59:59Z", 1_000_000),
    "year-after": ("2027-01-01T00:00:00Z", 10_000_000),
}


@pytest.mark.parametrize(
    ("period", "expected_ug", "start", "end"),
    [
        pytest.param("month", 11_100, "2026-11-01", "2026-12-01", id="month"),
        pytest.param("quarter", 111_110, "2026-10-01", "2027-01-01", id="quarter"),
        pytest.param("year", 111_111, "2026-01-01", "2027-01-01", id="year"),
        pytest.param("total", 11_111_111, "2025-12-31", None, id="total"),
    ],
)
def test_period_sums_only_charges_inside_its_utc_bounds(
    ledger_store: Store, clock: _Clock, period: str, expected_ug: int, start: str, end: str | None
) -> None:
    ledger = BudgetLedger(ledger_store, clock=clock)
    for name, (ended_at, ug) in BOUNDARY_CHARGES.items():
        ledger.charge(_record(name, ug=ug, ended_at=ended_at))
    status = ledger.status(Budget(scope="team:ml", period=period, limit_kg_co2e=1.0))
    assert status.used_kg == expected_ug / 1e9
    assert status.period_start == datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    assert status.period_end == (
        datetime.fromisoformat(end).replace(tzinfo=timezone.utc) if end else None
    )


def test_period_ids_and_prefixes() -> None:
    at = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)
    assert period_window("month", at).date_prefixes == ("date=2026-11-",)
    assert period_window("quarter", at).period_id == "2026-Q4"
    assert period_window("quarter", at).date_prefixes == (
        "date=2026-10-",
        "date=2026-11-",
        "date=2026-12-",
    )
    assert period_window("year", at).date_prefixes == ("date=2026-",)
    assert period_window("total", at).date_prefixes == ("",)
    assert period_window("month", at + timedelta(seconds=1)).period_id == "2026-12"


def test_budget_added_mid_period_counts_the_period_so_far(
    ledger_store: Store, clock: _Clock
) -> None:
    BudgetLedger(ledger_store, clock=clock).charge(
        _record("early", kg=0.6, ended_at="2026-11-02T08:00:00Z")
    )
    budget = Budget(
        scope="team:ml", period="month", limit_kg_co2e=1.0, default_step_estimate_kg=0.5
    )
    ledger = BudgetLedger(ledger_store, budgets=[budget], clock=clock)
    status = ledger.status("team:ml")
    assert (status.used_kg, status.charges, status.remaining_kg) == (0.6, 1, 0.4)
    # 0.6 kg in the 24.5 days of November so far, and 0.4 kg left at that rate.
    assert status.burn_rate_kg_per_day == pytest.approx(0.6 / 24.5)
    assert status.days_left == pytest.approx(0.4 / (0.6 / 24.5))
    with pytest.raises(BudgetExceeded):
        BudgetGate(ledger, budget).reserve("other", "step", reservation_id="r1")


def test_warning_is_logged_once_per_crossing(
    ledger_store: Store, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0, warn_ratio=0.8)
    ledger = BudgetLedger(ledger_store, clock=clock)
    caplog.set_level(logging.WARNING, logger="carbonpipe.budgets.ledger")
    ledger.charge(_record("a", kg=0.7))
    assert not ledger.status(budget).warning
    ledger.charge(_record("b", kg=0.15))
    assert ledger.status(budget).warning
    ledger.charge(_record("c", kg=0.01))
    assert ledger.status(budget).warning
    # Another process (a fresh ledger) sees the store's marker and stays quiet.
    assert BudgetLedger(ledger_store, clock=clock).status(budget).warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "passed 80%" in warnings[0]
    ledger.charge(_record("d", kg=0.2))
    status = ledger.status(budget)
    assert status.exceeded and status.percent == pytest.approx(106.0)
    ledger.status(budget)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "carbon budget pipeline:train month=2026-11 exceeded: 1.06 of 1 kg CO2e used"
    ]
    # A new month is a new crossing.
    clock.now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    ledger.charge(_record("e", kg=0.9, ended_at="2026-12-01T10:00:00Z"))
    ledger.status(budget)
    assert len(caplog.records) == 3 and "month=2026-12" in caplog.records[2].getMessage()


# ---------------------------------------------------------------------------------------------
# Charges, reservations, settlement


def test_charge_is_idempotent_and_charges_every_scope(ledger_store: Store, clock: _Clock) -> None:
    ledger = BudgetLedger(ledger_store, clock=clock)
    first = ledger.charge(_record("r1", ug=123), run_scope=True)
    assert first.written == first.keys and len(first.keys) == 3
    again = ledger.charge(_record("r1", ug=123), run_scope=True)
    assert again.duplicates == first.keys and not again.written
    no_team = ledger.charge(_record("r2", ug=1, team=""))
    # the run scope is charged only for trackers with a per-run budget
    assert [k.split("/")[1] for k in no_team.keys] == ["pipeline=train"]
    entries = ledger.charges("pipeline:train")
    assert [(e.record_id, e.emissions_ug, e.step) for e in entries] == [
        ("r1", 123, "fit"),
        ("r2", 1, "fit"),
    ]


def test_charges_to_a_down_store_are_spooled_and_replayed_once(flaky_store: Flaky) -> None:
    from carbonpipe.stores.spool import replay

    flaky_store.proxy.down()
    spooled = BudgetLedger(flaky_store.store).charge(_record("r1", ug=5_000))
    assert spooled.spooled == spooled.keys and not spooled.written
    flaky_store.proxy.up()
    ledger = BudgetLedger(flaky_store.direct)
    ledger.charge(_record("r2", ug=700))
    report = replay(store=flaky_store.direct)
    # Pipeline and team scopes, each its charge and the charge's late marker (its day is over).
    assert (report.delivered, report.remaining) == (4, 0)
    assert replay(store=flaky_store.direct).delivered == 0
    assert [(e.record_id, e.emissions_ug) for e in ledger.charges("team:ml")] == [
        ("r1", 5_000),
        ("r2", 700),
    ]


def test_scope_names_are_made_key_safe_and_stay_distinct() -> None:
    assert scope_key("pipeline:train") == "pipeline=train"
    odd = scope_key("team:ml research/é")
    assert odd.startswith("team=ml_research__-") and odd != scope_key("team:ml research/e")
    assert safe_name("..") != ".." and "/" not in safe_name("a/b")


def test_reservation_expires_after_its_ttl(ledger_store: Store, clock: _Clock) -> None:
    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0)
    ledger = BudgetLedger(ledger_store, clock=clock)
    gate = BudgetGate(ledger, budget)
    held = gate.reserve("train", "fit", reservation_id="crashed-pod", estimate_kg=0.8, ttl_s=60)
    assert held.expires_at == clock.now + timedelta(seconds=60)
    assert gate.reserve("train", "fit", reservation_id="crashed-pod", estimate_kg=0.8) == held
    assert not gate.check("train", "fit", estimate_kg=0.3).allowed
    clock.advance(61)
    assert ledger.status(budget).reserved_kg == 0.0
    gate.reserve("train", "fit", reservation_id="next", estimate_kg=0.3)
    doc = json.loads(ledger_store.get(held.document_key).data)
    assert [r["reservation_id"] for r in doc["reservations"]] == ["next"]  # pruned on write


def test_settle_replaces_the_reservation_with_the_charge(
    ledger_store: Store, clock: _Clock
) -> None:
    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0)
    ledger = BudgetLedger(ledger_store, clock=clock)
    gate = BudgetGate(ledger, budget)
    res = gate.reserve("train", "fit", reservation_id="r1", estimate_kg=0.5)
    before = ledger.status(budget)
    assert (before.used_kg, before.reserved_kg, before.remaining_kg) == (0.0, 0.5, 0.5)
    gate.settle(res, _record("r1", kg=0.25))
    after = ledger.status(budget)
    assert (after.used_kg, after.reserved_kg, after.remaining_kg, after.reservations) == (
        0.25,
        0.0,
        0.75,
        0,
    )
    # A step charged under another id releases its reservation explicitly.
    other = gate.reserve("train", "fit", reservation_id="r2", estimate_kg=0.5)
    gate.settle(other, _record("r2-retry", kg=0.1))
    assert (ledger.status(budget).reserved_kg, ledger.status(budget).used_kg) == (0.0, 0.35)


def test_check_decides_without_reserving(ledger_store: Store, clock: _Clock) -> None:
    budget = Budget(scope="pipeline:train", period="month", limit_kg_co2e=1.0, on_exceed="skip")
    ledger = BudgetLedger(ledger_store, clock=clock)
    gate = BudgetGate(ledger, budget)
    ledger.charge(_record("r0", kg=0.9))
    ok = gate.check("train", "fit", estimate_kg=0.1)
    assert (ok.allowed, ok.action, ok.remaining_kg) == (True, "run", pytest.approx(0.1))
    no = gate.check("train", "fit", estimate_kg=0.2)
    assert (no.allowed, no.action) == (False, "skip")
    assert ledger.status(budget).reservations == 0


def test_on_exceed_skip_is_carried_in_the_exception(ledger_store: Store, clock: _Clock) -> None:
    budget = Budget(scope="team:ml", period="year", limit_g_co2e=100, on_exceed="skip")
    ledger = BudgetLedger(ledger_store, clock=clock)
    ledger.charge(_record("r0", kg=0.09))
    with pytest.raises(BudgetExceeded, match="on_exceed=skip") as info:
        BudgetGate(ledger, budget).reserve("train", "fit", reservation_id="r1", estimate_kg=0.02)
    exc = info.value
    assert (
        exc.scope,
        exc.on_exceed,
        exc.used_kg,
        exc.reserved_kg,
        exc.limit_kg,
        exc.estimate_kg,
    ) == (
        "team:ml",
        "skip",
        0.09,
        0.0,
        0.1,
        0.02,
    )


def test_estimate_prefers_baseline_then_last_run_then_default(
    ledger_store: Store, clock: _Clock
) -> None:
    budget = Budget(
        scope="pipeline:train", period="month", limit_kg_co2e=1.0, default_step_estimate_g=5
    )
    ledger = BudgetLedger(ledger_store, clock=clock)
    gate = BudgetGate(ledger, budget)
    assert (gate.estimate("train", "fit").source, gate.estimate("train", "fit").kg_co2e) == (
        "default",
        0.005,
    )
    # Last run: the latest by end time, even across a month and with two runs on its last day.
    ledger.charge(_record("z-old-month", kg=0.3, ended_at="2026-10-30T10:00:00Z"))
    assert gate.estimate("train", "fit").kg_co2e == 0.3
    ledger.charge(_record("b-late", kg=0.02, ended_at="2026-11-20T18:00:00Z"))
    ledger.charge(_record("a-early", kg=0.01, ended_at="2026-11-20T09:00:00Z"))
    ledger.charge(_record("other-step", kg=0.9, step="eval", ended_at="2026-11-24T09:00:00Z"))
    assert (gate.estimate("train", "fit").source, gate.estimate("train", "fit").kg_co2e) == (
        "last_run",
        0.02,
    )
    key = baseline_key("train", "fit")
    ledger_store.put_artifact(key, b'{"mean_kg_co2e": "lots"}', content_type="application/json")
    assert gate.estimate("train", "fit").source == "last_run"  # an unusable baseline is skipped
    ledger_store.put_artifact(
        key, json.dumps({"mean_kg_co2e": 0.04}).encode(), content_type="application/json"
    )
    assert (gate.estimate("train", "fit").source, gate.estimate("train", "fit").kg_co2e) == (
        "baseline",
        0.04,
    )
    res = gate.reserve("train", "fit", reservation_id="r1")
    assert (res.estimate_kg, res.estimate_source) == (0.04, "baseline")


def test_status_by_scope_needs_a_known_budget(ledger_store: Store) -> None:
    ledger = BudgetLedger(ledger_store)
    with pytest.raises(ValueError, match="has no budget"):
        ledger.status("pipeline:train")


# ---------------------------------------------------------------------------------------------
# Budgets in code and in carbon.yaml


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"scope": "project:x"}, "Budget scope: 'project:x' is invalid", id="scope-kind"
        ),
        pytest.param(
            {"scope": "pipeline:"}, "use 'pipeline:NAME', 'team:NAME' or 'run:ID'", id="scope-empty"
        ),
        pytest.param(
            {"period": "weekly"},
            "period: 'weekly' is not one of month, quarter, year, total",
            id="period",
        ),
        pytest.param(
            {"limit_kg_co2e": 0}, "limit_kg_co2e: must be a finite number > 0", id="limit-zero"
        ),
        pytest.param({"limit_kg_co2e": None}, "limit_kg_co2e: must be a number", id="limit-none"),
        pytest.param(
            {"limit_g_co2e": 5}, "give limit_kg_co2e or limit_g_co2e, not both", id="limit-both"
        ),
        pytest.param(
            {"warn_ratio": 1.5}, "warn_ratio: must be a finite number > 0 and <= 1", id="warn"
        ),
        pytest.param(
            {"on_exceed": "warn"}, "on_exceed: 'warn' is not one of fail, skip", id="on-exceed"
        ),
        pytest.param(
            {"default_step_estimate_kg": -1}, "default_step_estimate_kg: must be", id="estimate"
        ),
    ],
)
def test_budget_rejects_bad_arguments_naming_them(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"scope": "pipeline:train", "period": "month", "limit_kg_co2e": 1.0}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Budget(**{**args, **kwargs})


def test_budget_converts_grams_to_kg() -> None:
    budget = Budget(scope="team:ml", period="total", limit_g_co2e=250, default_step_estimate_g=2)
    assert (budget.limit_kg_co2e, budget.default_step_estimate_kg) == (0.25, 0.002)
    assert budget == Budget(
        scope="team:ml", period="total", limit_kg_co2e=0.25, default_step_estimate_kg=0.002
    )


def test_load_budgets_reads_carbon_yaml(tmp_path: Path) -> None:
    path = tmp_path / "carbon.yaml"
    path.write_text(
        "store: ./carbon-artifacts\n"
        "budgets:\n"
        "  - {scope: 'pipeline:train', period: month, limit_kg_co2e: 50, on_exceed: skip}\n"
        "  - scope: team:ml\n"
        "    period: quarter\n"
        "    limit_g_co2e: 1500\n"
        "    warn_ratio: 0.9\n"
        "    default_step_estimate_g: 20\n"
    )
    assert load_budgets(path) == [
        Budget(scope="pipeline:train", period="month", limit_kg_co2e=50, on_exceed="skip"),
        Budget(
            scope="team:ml",
            period="quarter",
            limit_kg_co2e=1.5,
            warn_ratio=0.9,
            default_step_estimate_kg=0.02,
        ),
    ]
    assert load_budgets({"store": "x"}) == []


_OK = {"scope": "pipeline:a", "period": "month", "limit_kg_co2e": 1}


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        pytest.param(
            [_OK, {**_OK, "scope": "team:b", "period": "weekly"}],
            "budgets[1].period: 'weekly' is not one of month, quarter, year, total",
            id="period",
        ),
        pytest.param(
            [{**_OK, "scope": "org:x"}], "budgets[0].scope: 'org:x' is invalid", id="scope"
        ),
        pytest.param(
            [{"period": "month", "limit_kg_co2e": 1}],
            "budgets[0].scope: required",
            id="scope-missing",
        ),
        pytest.param(
            [{"scope": "team:a", "period": "month"}],
            "budgets[0].limit_kg_co2e: required (or limit_g_co2e)",
            id="limit-missing",
        ),
        pytest.param(
            [{**_OK, "limit_g_co2e": 3}],
            "budgets[0].limit_g_co2e: give limit_kg_co2e or limit_g_co2e, not both",
            id="limit-both",
        ),
        pytest.param(
            [{**_OK, "limit_kg_co2e": "50kg"}],
            "budgets[0].limit_kg_co2e: must be a number, got str '50kg'",
            id="limit-string",
        ),
        pytest.param(
            [{**_OK, "limit_kg_co2e": None}],
            "budgets[0].limit_kg_co2e: must be a number, got NoneType None",
            id="limit-null",
        ),
        pytest.param(
            [{"scope": "team:a", "period": "month", "limit_g_co2e": -3}],
            "budgets[0].limit_g_co2e: must be a finite number > 0, got -3",
            id="limit-negative-grams",
        ),
        pytest.param(
            [{**_OK, "warn_ratio": 0}],
            "budgets[0].warn_ratio: must be a finite number > 0",
            id="warn",
        ),
        pytest.param(
            [{**_OK, "on_exceed": "warn"}],
            "budgets[0].on_exceed: 'warn' is not one of fail, skip",
            id="on-exceed",
        ),
        pytest.param(
            [{**_OK, "default_step_estimate_g": True}],
            "budgets[0].default_step_estimate_g: must be a number, got bool True",
            id="estimate-bool",
        ),
        pytest.param(
            [{**_OK, "limit": 3}],
            "budgets[0].limit: unknown field; accepted: scope, period",
            id="unknown",
        ),
        pytest.param([_OK, "team:x"], "budgets[1]: must be a mapping, got str", id="not-mapping"),
        pytest.param(
            {"scope": "team:x"}, "budgets: must be a list of budgets, got dict", id="not-list"
        ),
        pytest.param(
            [_OK, {**_OK, "limit_kg_co2e": 2}], "budgets[1]: duplicates budgets[0]", id="duplicate"
        ),
    ],
)
def test_load_budgets_names_the_bad_field(budgets: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_budgets({"budgets": budgets})
    assert str(info.value).startswith(message)


def test_load_budgets_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_budgets(tmp_path / "missing.yaml")
    bad = tmp_path / "carbon.yaml"
    bad.write_text("budgets: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_budgets(bad)
