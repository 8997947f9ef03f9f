"""A step's last run, for the gate's estimate: one read of its pointer, not a month's listing.

The pipeline's charge of each run moves ``budgets/pipeline=<p>/last-run/step=<step>.json``
forward by compare-and-swap (:func:`carbonpipe.budgets.charges.advance_last_run`). A later
run the pointer missed (spooled and replayed, or charged by an earlier version) on a day after
the pointer's, in the last week, is found by listing the step's own folder of those days; a
step with no pointer yet is found as before, month by month back a year, and gets its pointer.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from carbonpipe.budgets.charges import (
    BUDGETS_PREFIX,
    LAST_RUN_SCHEMA,
    advance_last_run,
    last_run_key,
    parse_charge_key,
    safe_name,
    scope_key,
)
from carbonpipe.budgets.period import _add_months
from carbonpipe.budgets.status import ChargeEntry
from carbonpipe.errors import ObjectNotFound
from carbonpipe.record import parse_utc, utc_iso
from carbonpipe.stores.base import Store

# How far back the gate looks for a step's last run before falling back to the default.
LAST_RUN_LOOKBACK_MONTHS = 12
# The most days before today whose step folder is listed for a run the pointer missed.
RECENT_DAYS = 7

__all__ = ["LAST_RUN_LOOKBACK_MONTHS", "last_run"]


def _entry(scope: str, base: str, key: str) -> ChargeEntry | None:
    parsed = parse_charge_key(base, key)
    if parsed is None:
        return None
    day, step, rid, ng = parsed
    return ChargeEntry(scope=scope, record_id=rid, emissions_ng=ng, date=day, step=step, key=key)


def with_ended_at(store: Store, entry: ChargeEntry) -> ChargeEntry:
    """The entry with its body's ``ended_at`` and ``duration_s`` (unchanged if unreadable)."""
    try:
        body = json.loads(store.get(entry.key).data)
        ended: str | None = utc_iso(parse_utc(body["ended_at"]))
    except (ObjectNotFound, ValueError, KeyError, TypeError, AttributeError):
        return entry  # unreadable body: the entry still counts, it just sorts first
    duration = body.get("duration_s")
    ok = isinstance(duration, (int, float)) and not isinstance(duration, bool)
    return replace(entry, ended_at=ended, duration_s=float(duration) if ok else None)


def ended_order(entry: ChargeEntry) -> tuple[str, str]:
    """Runs of a step in the order they ended (then by record id)."""
    return entry.ended_at or "", entry.record_id


def _from_pointer(store: Store, scope: str, base: str, key: str) -> ChargeEntry | None:
    try:
        body = json.loads(store.get(key).data)
        entry = _entry(scope, base, str(body["key"]))
        if entry is None:
            return None
        ended = utc_iso(parse_utc(body["ended_at"]))
        duration = body.get("duration_s")
        ok = isinstance(duration, (int, float)) and not isinstance(duration, bool)
        return replace(entry, ended_at=ended, duration_s=float(duration) if ok else None)
    except (ObjectNotFound, ValueError, KeyError, TypeError, AttributeError):
        return None


def _listed_latest(store: Store, scope: str, base: str, prefixes: list[str]) -> ChargeEntry | None:
    """The run that ended last among the charges under ``prefixes`` (one step's)."""
    latest: list[ChargeEntry] = []
    for prefix, step_part in prefixes_with_step(prefixes):
        for key in store.list(base + prefix):
            if step_part and step_part not in key:
                continue
            entry = _entry(scope, base, key)
            if entry is None:
                continue
            if latest and entry.date > latest[0].date:
                latest = []
            if not latest or entry.date == latest[0].date:
                latest.append(entry)
    if not latest:
        return None
    # Several runs on the last day: only their bodies know which ended last.
    return max((with_ended_at(store, e) for e in latest), key=ended_order)


def prefixes_with_step(prefixes: list[str]) -> list[tuple[str, str]]:
    """Split ``prefix|step-part`` pairs (the step part filters a whole month's listing)."""
    return [(p.partition("|")[0], p.partition("|")[2]) for p in prefixes]


def _remember(store: Store, pointer: str, entry: ChargeEntry, step: str) -> None:
    try:
        body = json.loads(store.get(entry.key).data)
    except (ObjectNotFound, ValueError):
        return
    if isinstance(body, dict):
        body = {**body, "schema": LAST_RUN_SCHEMA, "key": entry.key, "date": entry.date}
        advance_last_run(store, pointer, body)


def last_run(store: Store, pipeline: str, step: str, now: datetime) -> ChargeEntry | None:
    """Return the latest charge of ``pipeline``'s ``step`` in the last year, or None."""
    scope = f"pipeline:{pipeline}"
    base = f"{BUDGETS_PREFIX}/{scope_key(scope)}/charges/"
    folder = f"step={safe_name(step)}/"
    pointer = last_run_key(pipeline, step)
    found = _from_pointer(store, scope, base, pointer)
    if found is not None:
        today = now.astimezone(timezone.utc).date()
        # Only days after the pointer's: a run it missed on its own day is not looked for
        # (that would read the body of every run of that day), and it is only an estimate.
        after = datetime.fromisoformat(found.date).date() + timedelta(days=1)
        start = max(after, today - timedelta(RECENT_DAYS))
        days = [start + timedelta(days=i) for i in range((today - start).days + 2)]
        recent = _listed_latest(store, scope, base, [f"date={d}/{folder}" for d in days])
        if recent is None or ended_order(recent) <= ended_order(found):
            return found
        _remember(store, pointer, recent, step)
        return recent
    this_month = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    for back in range(LAST_RUN_LOOKBACK_MONTHS):
        start_month = _add_months(this_month, -back)
        latest = _listed_latest(store, scope, base, [f"date={start_month:%Y-%m}-|/{folder}"])
        if latest is not None:
            _remember(store, pointer, latest, step)
            return latest
    return None
