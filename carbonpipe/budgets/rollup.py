"""Per-day rollups: what a budget has used, without listing every charge of its period.

A period's use was a listing of every charge in it, so a gate's decision grew with the period
(0.3 ms a charge on S3: minutes at a million). Now each *closed* day is read from one small
immutable object, and only the days still open are listed::

    budgets/<scope>/rollups/date=YYYY-MM-DD__<n>n__<ng>ng__<m>m__<p>p.json

``n`` charges (deduplicated) of ``ng`` nanograms in all, rolled up when ``m`` late markers
were listed for that day, ``p`` of whose charges had landed; the body keeps which markers those
were. The totals sit in the key, so a period's closed days are one listing of ``rollups/``
with no reads at all. Rollups are written create-only by whoever reads a closed day without
one (the gate, ``budget status``, :func:`roll_up` from a nightly job); a rollup is never
changed, only outranked by a later one of the same day (more markers, then more of them
landed, then more charges), so two readers racing write at worst two valid rollups.

When is a day closed, and what of a charge that lands in it later?

* A day is *closed* from an hour (:data:`CLOSE_GRACE`) after its UTC midnight. A charge
  written on time was put while its day had not ended on the writer's clock, so it is in the
  store before any reader rolls that day up, given clocks within half an hour of each other
  and a put that completes within the other half.
* Any other charge is *late*, and its writer leaves a late marker (``budgets/<scope>/late/``,
  the charge's own key under ``late/``): *before* the charge when the day had already ended
  on its clock, *after* it when the charge had to be spooled (it lands at a replay, any time).
* A reader lists the period's markers (a short listing: only late charges have them). A day
  whose rollup saw fewer markers than there are now, or saw a marker whose charge had not
  landed and has since, is stale: the reader lists that day once more and writes a newer
  rollup, which every later reader then prefers. So a late charge is counted once, by the
  first rollup written after it landed, and by a listing of its day until then.

A day counts each record once: two keys for one record on one day (a re-measured
re-delivery) count the smaller key, as every reader and the listing of every charge agree.
Charges written by versions before rollups leave no late markers: one of them that lands in
an already rolled-up day is not counted until that day is listed again (:func:`roll_up` with
``relist=True``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.budgets.charges import (
    BUDGETS_PREFIX,
    parse_charge_key,
    safe_name,
    scope_key,
)
from carbonpipe.budgets.period import PeriodWindow, _utc, period_window
from carbonpipe.budgets.status import ChargeEntry
from carbonpipe.errors import ObjectNotFound, PreconditionFailed
from carbonpipe.stores.base import Store
from carbonpipe.stores.redact import redact

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget

logger = logging.getLogger(__name__)

CLOSE_GRACE = timedelta(hours=1)
ROLLUP_SCHEMA = "carbonpipe.rollup/1"
_ROLLUP_FILE = re.compile(
    r"^date=(?P<day>\d{4}-\d{2}-\d{2})__(?P<n>\d+)n__(?P<ng>\d+)ng__(?P<m>\d+)m__(?P<p>\d+)p\.json$"
)

__all__ = [
    "CLOSE_GRACE",
    "DayRollup",
    "PeriodUsage",
    "closed_before",
    "listed_usage",
    "period_usage",
    "RollUpReport",
    "roll_up",
    "roll_up_all",
    "settled",
    "tally_keys",
]


def _wall_now() -> datetime:
    """The real time: a rollup is written only for a day closed by it, whatever a reader's
    clock says."""
    return datetime.now(timezone.utc)


def closed_before(now: datetime) -> date:
    """The first day still open at ``now``: every day before it is closed."""
    return (_utc(now) - CLOSE_GRACE).date()


def _base(scope: str) -> str:
    return f"{BUDGETS_PREFIX}/{scope_key(scope)}/"


@dataclass(frozen=True)
class DayRollup:
    """One closed day's totals, as its rollup key says (``key`` is None if not written)."""

    day: str
    count: int
    total_ng: int
    markers: int
    landed: int
    key: str | None = None

    @property
    def rank(self) -> tuple[int, int, int, int]:
        """Later rollups of a day rank higher: more markers, more landed, more charges."""
        return self.markers, self.landed, self.count, self.total_ng


@dataclass(frozen=True)
class PeriodUsage:
    """A period's use: exact totals, and the open days' charges listed one by one."""

    total_ng: int
    count: int
    first_date: str | None
    entries: dict[str, ChargeEntry]  # the open days' charges, by record id
    first_open: str  # days before it came from rollups
    late: dict[str, list[str]]  # the period's late markers by record id (keys under late/)
    rolled: int = 0  # closed days read from a rollup
    listed: int = 0  # closed days listed (and rolled up) by this read
    unwritten: int = 0  # of those, the days whose rollup could not be written


def tally_keys(scope: str, base: str, keys: Iterable[str]) -> dict[str, dict[str, ChargeEntry]]:
    """Group charge keys under ``base`` by day, one entry per record and day (smaller key)."""
    days: dict[str, dict[str, ChargeEntry]] = {}
    for key in keys:
        parsed = parse_charge_key(base, key)
        if parsed is None:
            continue
        day, step, rid, ng = parsed
        entries = days.setdefault(day, {})
        current = entries.get(rid)
        if current is None or key < current.key:
            entries[rid] = ChargeEntry(scope, rid, ng, day, step, key)
    return days


def listed_usage(store: Store, scope: str, window: PeriodWindow) -> tuple[int, list[ChargeEntry]]:
    """The period's use by listing every charge in it: the reference rollups must equal."""
    base = _base(scope) + "charges/"
    keys = (k for prefix in window.date_prefixes for k in store.list(base + prefix))
    entries = [e for day in tally_keys(scope, base, keys).values() for e in day.values()]
    return sum(e.emissions_ng for e in entries), sorted(entries, key=lambda e: e.key)


# ---------------------------------------------------------------------------------------------
# Rolling up one day


def _rollup_key(scope: str, r: DayRollup) -> str:
    return (
        f"{_base(scope)}rollups/date={r.day}__{r.count}n__{r.total_ng}ng__"
        f"{r.markers}m__{r.landed}p.json"
    )


def _roll_day(
    store: Store,
    scope: str,
    day: str,
    entries: dict[str, ChargeEntry],
    keys: set[str],
    markers: Iterable[str],
) -> DayRollup:
    """Write the rollup of ``day`` from its listed charges (``keys``: every key listed) and the
    day's markers (their names under ``late/date=<day>/``), listed before or after.

    Either order is exact: a marker counts as landed only if the listing has its charge, so a
    charge the listing missed is behind a marker the rollup saw unlanded (and a reader checks
    it) or behind one it did not see (and a reader finds more markers than it saw).
    """
    charge_base = f"{_base(scope)}charges/date={day}/"
    landed = {rel: (charge_base + rel) in keys for rel in markers}
    rollup = DayRollup(
        day,
        len(entries),
        sum(e.emissions_ng for e in entries.values()),
        len(landed),
        sum(landed.values()),
    )
    if day >= closed_before(_wall_now()).isoformat():
        # Closed on the caller's clock only (a report "as of" its period's end, mid-period):
        # the totals hold for this read, but an immutable rollup of a day still open would
        # hide the charges written on time after it (they leave no late marker).
        return rollup
    key = _rollup_key(scope, rollup)
    body = {
        "schema": ROLLUP_SCHEMA,
        "scope": scope,
        "date": day,
        "count": rollup.count,
        "total_ng": rollup.total_ng,
        "markers": dict(sorted(landed.items())),
    }
    try:
        store.put_if_absent(
            key, json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        )
    except PreconditionFailed:
        pass  # the same rollup, written by another reader
    except Exception as exc:  # read-only credentials, a store going down: the totals still hold
        logger.debug("cannot write the rollup %s: %s", key, exc)
        return rollup
    return replace(rollup, key=key)


def _list_days(
    store: Store, scope: str, days: list[date], markers: dict[str, list[str]]
) -> dict[str, DayRollup]:
    """List the charges of ``days`` (closed days without a usable rollup) and roll each up.

    Consecutive days are listed together, by the fewest prefixes that cover exactly them."""
    base = _base(scope) + "charges/"
    rolled: dict[str, DayRollup] = {}
    wanted = {d.isoformat() for d in days}
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] + timedelta(days=1) == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    for run in runs:
        # Prefix by prefix (ten days, a month at most), so a listing is never held whole.
        for prefix in _prefixes(run[0], run[-1] + timedelta(days=1)):
            keys = list(store.list(base + prefix))
            tallies = tally_keys(scope, base, keys)
            by_day: dict[str, set[str]] = {}
            for key in keys:
                by_day.setdefault(key[len(base) + 5 : len(base) + 15], set()).add(key)
            for text in sorted(by_day):
                if text in wanted:
                    rolled[text] = _roll_day(
                        store,
                        scope,
                        text,
                        tallies.get(text, {}),
                        by_day[text],
                        markers.get(text, ()),
                    )
        for day in run:  # the days with no charge at all
            text = day.isoformat()
            if text not in rolled:
                rolled[text] = _roll_day(store, scope, text, {}, set(), markers.get(text, ()))
    return rolled


def _landed_since(store: Store, scope: str, rollup: DayRollup) -> bool:
    """Whether a marker the rollup saw without its charge has its charge now (or unreadable)."""
    if rollup.key is None:
        return True
    try:
        markers = json.loads(store.get(rollup.key).data)["markers"]
        pending = [rel for rel, landed in markers.items() if not landed]
    except (ObjectNotFound, ValueError, KeyError, TypeError, AttributeError):
        return True  # relist the day: that is always exact
    charge_base = f"{_base(scope)}charges/date={rollup.day}/"
    return any(store.exists(charge_base + rel) for rel in pending)


# ---------------------------------------------------------------------------------------------
# A period's use


def _days(first: date, end: date) -> Iterator[date]:
    day = first
    while day < end:
        yield day
        day += timedelta(days=1)


def _prefixes(first: date, end: date | None) -> list[str]:
    """``date=`` prefixes whose listings cover exactly the days ``[first, end)`` (``end``
    None: every later day), whole tens of days, months and years at once where they fit."""
    out: list[str] = []
    day: date | None = first
    while day is not None and (end is None or day < end):
        block = _year_block(day, end) if (day.month, day.day) == (1, 1) else None
        if block is not None:
            out.append(block[0])
            day = block[1]
            continue
        next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        if day.day == 1 and (end is None or next_month <= end):
            out.append(f"date={day:%Y-%m}-")
            day = next_month
            continue
        tens = day.day // 10
        if day.day == max(tens * 10, 1):
            last = (next_month - timedelta(days=1)).day
            upto = day.replace(day=tens * 10 + 10) if tens * 10 + 10 <= last else next_month
            if end is None or upto <= end:
                out.append(f"date={day:%Y-%m}-{tens}")
                day = upto
                continue
        out.append(f"date={day:%Y-%m-%d}/")
        day += timedelta(days=1)
    return out


def _year_block(day: date, end: date | None) -> tuple[str, date | None] | None:
    """The largest aligned run of years (1000, 100, 10 or 1) from ``day`` (a 1 January)
    inside ``[day, end)``, as (prefix, the day after it), or None."""
    for digits in (3, 2, 1, 0):
        span = 10**digits
        upto = day.year + span
        if day.year % span:
            continue
        if end is None or (upto <= 9999 and date(upto, 1, 1) <= end):
            prefix = f"date={day.year:04d}"[: 9 - digits] + ("-" if digits == 0 else "")
            return prefix, (date(upto, 1, 1) if upto <= 9999 else None)
    return None


def _best_rollups(store: Store, scope: str, window: PeriodWindow) -> dict[str, DayRollup]:
    base = f"{_base(scope)}rollups/"
    best: dict[str, DayRollup] = {}
    for prefix in window.date_prefixes:
        for key in store.list(base + prefix):
            m = _ROLLUP_FILE.match(key[len(base) :])
            if m is None:
                continue
            found = DayRollup(m["day"], int(m["n"]), int(m["ng"]), int(m["m"]), int(m["p"]), key)
            if m["day"] not in best or found.rank > best[m["day"]].rank:
                best[m["day"]] = found
    return best


def _markers(
    store: Store, scope: str, window: PeriodWindow
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The period's late markers: their names under ``late/date=<day>/`` by day, and their
    keys under ``late/`` by record id."""
    base = f"{_base(scope)}late/"
    by_day: dict[str, list[str]] = {}
    by_record: dict[str, list[str]] = {}
    for prefix in window.date_prefixes:
        for key in store.list(base + prefix):
            parsed = parse_charge_key(base, key)
            if parsed is None:
                continue
            rel = key[len(base) :]
            by_day.setdefault(parsed[0], []).append(rel.split("/", 1)[1])
            by_record.setdefault(parsed[2], []).append(rel)
    return by_day, by_record


def _bootstrap(
    store: Store, scope: str, first_open: str, markers: dict[str, list[str]]
) -> dict[str, DayRollup]:
    """A total budget's first read: one listing of every charge, rolling up each closed day as
    the listing (in key order, so day by day) passes it."""
    base = _base(scope) + "charges/"
    rolled: dict[str, DayRollup] = {}
    day_keys: list[str] = []
    current = ""

    def finish() -> None:
        if current and current < first_open:
            keys = set(day_keys)
            entries = tally_keys(scope, base, keys).get(current, {})
            rolled[current] = _roll_day(
                store, scope, current, entries, keys, markers.get(current, ())
            )

    for key in store.list(base):
        day = key[len(base) :].split("/", 1)[0][5:]
        if day != current:
            finish()
            current, day_keys = day, []
        day_keys.append(key)
    finish()
    return rolled


def period_usage(store: Store, scope: str, window: PeriodWindow, now: datetime) -> PeriodUsage:
    """The period's exact use: closed days from their rollups (writing those missing or
    stale), the open days listed charge by charge."""
    first_open = closed_before(now)
    rollups = _best_rollups(store, scope, window)
    markers, late = _markers(store, scope, window)
    booted: dict[str, DayRollup] = {}  # a total budget's first read: listed all at once
    if window.start is not None and window.end is not None:
        first = window.start.date()
        closed_end = min(first_open, window.end.date())
    else:
        if not rollups:
            booted = _bootstrap(store, scope, first_open.isoformat(), markers)
            rollups = dict(booted)
        known = [d for d in (*rollups, *markers) if d < first_open.isoformat()]
        first = date.fromisoformat(min(known)) if known else first_open
        closed_end = first_open
    closed = list(_days(first, closed_end))
    stale = [
        day
        for day in closed
        if (r := rollups.get(day.isoformat())) is None
        or r.markers != len(markers.get(r.day, ()))
        or (r.landed < r.markers and _landed_since(store, scope, r))
    ]
    fresh = {**booted, **_list_days(store, scope, stale, markers)}
    rollups.update(fresh)
    total = count = 0
    first_date: str | None = None
    for day in closed:
        r = rollups[day.isoformat()]
        total += r.total_ng
        count += r.count
        if r.count and first_date is None:
            first_date = r.day
    # The open days, listed: the current day, the grace hour's, any dated ahead of the clock.
    base = _base(scope) + "charges/"
    lo = max(first_open, window.start.date()) if window.start is not None else first_open
    hi = window.end.date() if window.end is not None else None
    keys = (k for prefix in _prefixes(lo, hi) for k in store.list(base + prefix))
    entries: dict[str, ChargeEntry] = {}
    for day_text, day_entries in sorted(tally_keys(scope, base, keys).items()):
        for e in day_entries.values():
            total += e.emissions_ng
            count += 1
            entries.setdefault(e.record_id, e)
            if first_date is None:
                first_date = day_text
    return PeriodUsage(
        total,
        count,
        first_date,
        entries,
        first_open.isoformat(),
        late,
        rolled=len(closed) - len(fresh),
        listed=len(fresh),
        unwritten=sum(1 for r in fresh.values() if r.key is None),
    )


def settled(store: Store, scope: str, entry: dict[str, Any], usage: PeriodUsage) -> bool:
    """Whether a reservation's record is charged in the period (then it no longer counts).

    A charge on an open day is in ``usage.entries``. One on a closed day, which is read from
    its rollup, is either late (its marker names it: is the charge there yet?) or was written
    on time, on a day the reservation lived through (a step that ran over a midnight): those
    days' folders of its step are listed for it.
    """
    rid = str(entry["reservation_id"])
    if rid in usage.entries:
        return True
    base = _base(scope)
    if any(store.exists(f"{base}charges/{rel}") for rel in usage.late.get(rid, ())):
        return True
    return _charged_since(store, scope, entry, usage.first_open)


def _charged_since(store: Store, scope: str, entry: dict[str, Any], first_open: str) -> bool:
    created = str(entry.get("created_at") or "")[:10]
    if not created or created >= first_open:
        return False
    rid = str(entry["reservation_id"])
    step = entry.get("step")
    base = _base(scope) + "charges/"
    try:
        start = date.fromisoformat(created)
    except ValueError:
        return False
    for day in _days(start, date.fromisoformat(first_open)):
        prefix = f"{base}date={day}/"
        if isinstance(step, str) and step:
            prefix += f"step={safe_name(step)}/{rid}__"
        for key in store.list(prefix):
            parsed = parse_charge_key(base, key)
            if parsed is not None and parsed[2] == rid:
                return True
    return False


@dataclass
class RollUpReport:
    """What :func:`roll_up` did: closed days read from a rollup already (``rolled``) and
    closed days listed, and rolled up, by this call (``listed``)."""

    scope: str
    rolled: int = 0
    listed: int = 0
    days: list[str] = field(default_factory=list)
    period: str = ""
    first_open: str = ""  # the first day still open: not rolled up yet
    elapsed_s: float = 0.0
    unwritten: int = 0  # listed days whose rollup could not be written (a read-only store)
    error: str | None = None  # roll_up_all: why this scope could not be rolled up

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "period": self.period,
            "days_rolled": self.rolled,
            "days_listed": self.listed,
            "days_unwritten": self.unwritten,
            "first_open": self.first_open,
            "elapsed_s": round(self.elapsed_s, 3),
            "error": self.error,
        }


def roll_up(
    store: Store,
    scope: str,
    window: PeriodWindow,
    *,
    now: datetime | None = None,
    relist: bool = False,
) -> RollUpReport:
    """Write the rollups of the period's closed days (a nightly job's call); ``relist`` lists
    every closed day again (for charges written by versions without late markers)."""
    now = now or datetime.now(timezone.utc)
    report = RollUpReport(scope, period=window.period, first_open=closed_before(now).isoformat())
    if relist:
        first_open = closed_before(now)
        if window.start is None:
            usage = period_usage(store, scope, window, now)
            start = date.fromisoformat(usage.first_date) if usage.first_date else first_open
        else:
            start = window.start.date()
        end = min(first_open, window.end.date()) if window.end is not None else first_open
        days = list(_days(start, end))
        fresh = _list_days(store, scope, days, _markers(store, scope, window)[0])
        report.listed = len(days)
        report.unwritten = sum(1 for r in fresh.values() if r.key is None)
        report.days = [d.isoformat() for d in days]
        return report
    usage = period_usage(store, scope, window, now)
    report.rolled, report.listed, report.unwritten = usage.rolled, usage.listed, usage.unwritten
    return report


def roll_up_all(
    store: Store,
    budgets: Iterable[Budget | tuple[str, str]],
    *,
    now: datetime | None = None,
    relist: bool = False,
    stored: bool = False,
) -> list[RollUpReport]:
    """Roll up the closed days of each budget's current period, on the book it counts (its
    :meth:`~carbonpipe.budgets.budget.Budget.on_book` scope; a ``(scope, period)`` pair is
    rolled up as it is): the nightly ESG job's call, and ``carbonpipe budget rollup``'s.
    ``stored`` adds the store's definitions of pipeline and team budgets (those given in
    code), as ``budget status`` lists them. Each (book, period) is rolled up once.

    A scope that fails (a store error, a store going down midway) gets its ``error`` and the
    others are still rolled up: a rollup only saves a later reader work, so no caller has to
    stop for one. Only reading the definitions (``stored``) raises the store's error.
    """
    given = list(budgets)
    pairs = [b for b in given if isinstance(b, tuple)]
    chosen = [b for b in given if not isinstance(b, tuple)]
    if stored:  # carbon.yaml's budget wins where both define a scope's period
        from carbonpipe.budgets.definitions import LISTED_KINDS, read_definitions, union_budgets

        defined = read_definitions(store, kinds=LISTED_KINDS)
        chosen = [c.budget for c in union_budgets(chosen, defined)]
    targets = pairs + [(b.on_book().scope, b.period) for b in chosen]
    now = _utc(now or datetime.now(timezone.utc))
    reports: list[RollUpReport] = []
    for scope, period in dict.fromkeys(targets):  # once each, in order
        start = time.perf_counter()
        try:
            report = roll_up(store, scope, period_window(period, now), now=now, relist=relist)
        except Exception as exc:  # noqa: BLE001 - reported per scope, never raised
            error = redact(f"{type(exc).__name__}: {exc}")
            report = RollUpReport(scope, period=period, error=error)
            logger.warning("cannot roll up %s [%s]: %s", scope, period, error)
        report.elapsed_s = time.perf_counter() - start
        reports.append(report)
    return reports
