"""Carbon budgets: a ledger of charges that many pods write at once, and a gate before each step.

A budget caps what one scope (``pipeline:NAME``, ``team:NAME``, or ``run:ID`` for the guide's
per-run budget) may emit in a UTC period (``month``, ``quarter``, ``year`` or ``total``). What
it has used is every charged record of its scope in that period, whether or not a budget existed
when the step ran: the tracker charges every record it writes, each record is charged to every
scope it belongs to, and a budget added mid-month counts the month so far.

Store layout (under the store's root)::

    budgets/<scope>/charges/date=YYYY-MM-DD/step=<step>/<record_id>__<nanograms>ng.json
    budgets/<scope>/late/date=YYYY-MM-DD/step=<step>/<same name>     (a late charge's marker)
    budgets/<scope>/rollups/date=YYYY-MM-DD__<n>n__<ng>ng__<m>m__<p>p.json
    budgets/pipeline=<name>/last-run/step=<step>.json
    budgets/<scope>/<period>=<period-id>/reservations.json
    budgets/<scope>/<period>=<period-id>/alerts/<kind>-<limit micrograms>-<warn ratio>.json
    baselines/<pipeline>/<step>.json

``<scope>`` is ``pipeline=<name>``, ``team=<name>`` or ``run=<id>``; names outside
``[A-Za-z0-9._-]`` (and step and baseline names) are made key-safe by :func:`safe_name`.

Why this shape: a single document updated by compare-and-swap thrashes under tens of writers
(every writer rereads and retries), so charges are append-only objects written create-only. A
charge is idempotent by construction (same record, same key), never contends with another, and
the amount sits in the key, so a period's use is a *listing* of the date prefixes it covers,
one charge per record and day. A gate does not list a whole period, though: each closed day is
read from its rollup, and only the days still open are listed (:mod:`carbonpipe.budgets.rollup`
says how a late charge is still counted exactly once); the step's last run is one pointer read
(:mod:`carbonpipe.budgets.latest`). Only gates contend, on one small reservations document
per budget period, updated by compare-and-swap; a charge never touches it, because a
reservation counts as settled as soon as a charge with its record id is in the store. A reservation never settled (a pod
that died) stops counting at its ``expires_at``; the next gate write prunes it.

Warnings at the warn ratio (and overruns) are logged once per crossing: each ledger remembers
what it logged, and a create-only marker under ``alerts/`` keeps other processes and pods from
logging the same crossing again. A new period, limit or ratio is a new crossing.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.budgets.charges import (
    BUDGETS_PREFIX,
    Charge,
    charge_record,
    check_amount,
    estimate_ng,
    kg_to_ng,
    kg_to_ug,
    parse_scope,
    record_scopes,
    scope_key,
)
from carbonpipe.errors import (
    BudgetError,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
)
from carbonpipe.record import parse_utc, utc_iso
from carbonpipe.stores.base import Store

if TYPE_CHECKING:
    from carbonpipe.budgets.charges import ChargeableRecord
from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.latest import LAST_RUN_LOOKBACK_MONTHS, last_run
from carbonpipe.budgets.period import PeriodWindow, _utc, period_window
from carbonpipe.budgets.rollup import PeriodUsage, listed_usage, period_usage, settled
from carbonpipe.budgets.status import (
    BudgetStatus,
    ChargeEntry,
    GateDecision,
    Reservation,
    _ng_to_kg,
)

# Backoff jitter from the OS, not the global random state (which a user's program, or a
# property-testing library, may be relying on).
_JITTER = random.SystemRandom()

logger = logging.getLogger(__name__)
# Long enough for a typical training step; the tracker passes a longer TTL for longer steps.
DEFAULT_RESERVATION_TTL_S = 6 * 3600.0
__all__ = ["DEFAULT_RESERVATION_TTL_S", "LAST_RUN_LOOKBACK_MONTHS", "BudgetLedger"]

_DOC_SCHEMA = "carbonpipe.reservations/1"
# Full-jitter exponential backoff for reservation compare-and-swap conflicts.
_BACKOFF_BASE_S = 0.005
_BACKOFF_CAP_S = 0.5
_CAS_DEADLINE_S = 60.0


# ---------------------------------------------------------------------------------------------
# The ledger


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _backoff(attempt: int) -> None:
    time.sleep(_JITTER.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)))


class BudgetLedger:
    """Charges, reservations and status of carbon budgets kept in a :class:`Store`.

    Safe to share between threads, and between processes and pods on one store: no update is
    ever lost or doubled (see the module docstring for how).
    """

    def __init__(
        self,
        store: Store,
        *,
        budgets: Iterable[Budget] = (),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.budgets = tuple(budgets)
        self._clock = clock
        self._alerted: set[str] = set()
        self._alerted_lock = threading.Lock()

    def _now(self) -> datetime:
        return _utc(self._clock())

    # -- charges -------------------------------------------------------------------------------

    def charge(self, record: ChargeableRecord, *, run_scope: bool = False) -> Charge:
        """Charge a record to its scopes (pipeline, team if set, run if asked); idempotent."""
        return charge_record(self.store, record, run_scope=run_scope, now=self._now())

    def charges(
        self, scope: str, period: str = "total", *, at: datetime | None = None
    ) -> list[ChargeEntry]:
        """List every charge of ``scope`` in the period containing ``at`` (one per record a day)."""
        return listed_usage(self.store, scope, period_window(period, at or self._now()))[1]

    def usage(self, scope: str, period: str = "total") -> PeriodUsage:
        """The scope's exact use in the current period: closed days from their rollups
        (:mod:`carbonpipe.budgets.rollup`), open days listed."""
        now = self._now()
        return period_usage(self.store, scope, period_window(period, now), now)

    def last_charge(self, pipeline: str, step: str) -> ChargeEntry | None:
        """Return the latest charge of ``pipeline``'s ``step`` in the last year, or None."""
        return last_run(self.store, pipeline, step, self._now())

    # -- reservations --------------------------------------------------------------------------

    def reserve(
        self,
        budget: Budget,
        estimate_kg: float,
        *,
        reservation_id: str,
        ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        estimate_source: str = "given",
        pipeline: str = "",
        step: str = "",
        deadline: float | None = None,
    ) -> Reservation:
        """Hold ``estimate_kg`` of ``budget`` for the step whose record id is ``reservation_id``.

        Raises :class:`BudgetExceeded` if used + active reservations + estimate would pass the
        limit. Re-reserving an active id returns the existing reservation. ``deadline`` (a
        ``time.monotonic()`` instant) ends the compare-and-swap retries early and stops a
        reservation from being written once it has passed (:class:`BudgetError`); without it
        the retries give up after a minute of contention.
        """
        est_ng = kg_to_ng(check_amount("estimate_kg", estimate_kg))
        if not isinstance(reservation_id, str) or not reservation_id:
            raise ValueError(f"reservation_id {reservation_id!r} must be a non-empty string")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
            raise ValueError(f"ttl_s {ttl_s!r} must be a number of seconds > 0")
        started = time.monotonic()
        give_up = started + _CAS_DEADLINE_S if deadline is None else deadline
        attempt = 0
        while True:
            now = self._now()
            window = period_window(budget.period, now)
            key = _reservations_key(budget.scope, window)
            version, active, usage = self._snapshot(budget.scope, window, key, now)
            if reservation_id in active:
                return _reservation_from(active[reservation_id], budget, window, key)
            decision = self._decide(budget, window, usage, active, est_ng, estimate_source)
            self._note_crossings(budget, window, usage.total_ng)
            if not decision.allowed:
                raise decision.to_exception()
            entry = {
                "reservation_id": reservation_id,
                "estimate_ng": est_ng,
                "estimate_ug": round(est_ng / 1000),  # for readers of earlier versions
                "estimate_kg": _ng_to_kg(est_ng),
                "estimate_source": estimate_source,
                "pipeline": pipeline,
                "step": step,
                "created_at": utc_iso(now),
                "expires_at": utc_iso(now + timedelta(seconds=float(ttl_s))),
            }
            if deadline is not None and time.monotonic() > deadline:
                # Whoever set the deadline has stopped waiting: a reservation now would hold a
                # slice for a step that was already refused or let through ungated.
                raise BudgetError(
                    f"could not reserve in {budget.scope} {window.key_part} before the deadline"
                )
            try:
                self._write_reservations(key, budget, window, [*active.values(), entry], version)
            except PreconditionFailed:
                if time.monotonic() > give_up:
                    raise BudgetError(
                        f"could not reserve in {budget.scope} {window.key_part}: the "
                        "reservations document kept changing for "
                        f"{time.monotonic() - started:.3g} s"
                    ) from None
                _backoff(attempt)
                attempt += 1
                continue
            logger.debug(
                "reserved %s kg of %s for %s", entry["estimate_kg"], budget.scope, reservation_id
            )
            return _reservation_from(entry, budget, window, key)

    def release(self, reservation: Reservation) -> bool:
        """Drop a reservation before it expires (a step skipped, or charged under another id)."""
        return self._rewrite(reservation, "release", lambda entry: None)

    def renew(self, reservation: Reservation, ttl_s: float) -> bool:
        """Extend a live step's lease: its reservation now expires ``ttl_s`` from now.

        False when the reservation is gone or has already expired: its slice may be another
        step's by now, so a lapsed lease is never revived (the step runs on, unreserved).
        """
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
            raise ValueError(f"ttl_s {ttl_s!r} must be a number of seconds > 0")
        now = self._now()
        until = utc_iso(now + timedelta(seconds=float(ttl_s)))

        def extend(entry: dict[str, Any]) -> dict[str, Any] | None:
            if parse_utc(entry["expires_at"]) <= now:
                raise _Lapsed
            return {**entry, "expires_at": until}

        try:
            return self._rewrite(reservation, "renew", extend)
        except _Lapsed:
            return False

    def _rewrite(
        self,
        reservation: Reservation,
        what: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> bool:
        """Compare-and-swap ``change`` onto the reservation's entry (``None`` drops it)."""
        deadline = time.monotonic() + _CAS_DEADLINE_S
        attempt = 0
        rid = reservation.reservation_id
        while True:
            doc, version = self._read_reservations(reservation.document_key)
            if version is None or not any(r.get("reservation_id") == rid for r in doc):
                return False
            changed = [r if r.get("reservation_id") != rid else change(r) for r in doc]
            kept = [r for r in changed if r is not None]
            try:
                self.store.replace(
                    reservation.document_key,
                    _reservations_doc(
                        reservation.scope, reservation.period, reservation.period_id, kept
                    ),
                    if_version=version,
                )
                return True
            except PreconditionFailed:
                if time.monotonic() > deadline:
                    raise BudgetError(f"could not {what} {rid}") from None
                _backoff(attempt)
                attempt += 1

    def settle(self, reservation: Reservation, record: ChargeableRecord) -> Charge:
        """Charge the step's record; the charge replaces the reservation."""
        charge = self.charge(record, run_scope=reservation.scope.startswith("run:"))
        # The charge settles the reservation only if it lands under the reservation's id and
        # scope; otherwise drop the reservation now rather than let it hold the slice till TTL.
        if record.record_id != reservation.reservation_id or reservation.scope not in record_scopes(
            record, run=True
        ):
            self.release(reservation)
        return charge

    def _read_reservations(self, key: str) -> tuple[list[dict[str, Any]], str | None]:
        try:
            obj = self.store.get(key)
        except ObjectNotFound:
            return [], None
        try:
            doc = json.loads(obj.data)
            entries = doc["reservations"]
            if not isinstance(entries, list):
                raise TypeError("reservations is not a list")
            return [e for e in entries if _valid_entry(e)], obj.version
        except (ValueError, KeyError, TypeError) as exc:
            # Overwriting it (by version) is the repair; losing a reservation only loosens a gate.
            logger.warning("ignoring unreadable reservations document %s: %s", key, exc)
            return [], obj.version

    def _write_reservations(
        self,
        key: str,
        budget: Budget,
        window: PeriodWindow,
        entries: list[dict[str, Any]],
        version: str | None,
    ) -> None:
        data = _reservations_doc(budget.scope, window.period, window.period_id, entries)
        if version is None:
            self.store.put_if_absent(key, data)
        else:
            self.store.replace(key, data, if_version=version)

    def _snapshot(
        self, scope: str, window: PeriodWindow, key: str, now: datetime
    ) -> tuple[str | None, dict[str, dict[str, Any]], PeriodUsage]:
        # Read reservations before listing charges: a charge landing in between is then seen
        # by the listing, so its reservation counts as settled, never twice and never zero times.
        doc, version = self._read_reservations(key)
        usage = period_usage(self.store, scope, window, now)
        active = {
            e["reservation_id"]: e
            for e in doc
            if parse_utc(e["expires_at"]) > now and not settled(self.store, scope, e, usage)
        }
        return version, active, usage

    # -- status and decisions ------------------------------------------------------------------

    def _budget_for(self, scope: str, period: str | None) -> Budget:
        matches = [b for b in self.budgets if b.scope == scope and period in (None, b.period)]
        if len(matches) != 1:
            known = ", ".join(f"{b.scope} ({b.period})" for b in self.budgets) or "none"
            problem = "has no budget" if not matches else "has budgets for several periods"
            raise ValueError(
                f"scope {scope!r} {problem} in this ledger (known: {known}); "
                "pass the Budget, or period="
            )
        return matches[0]

    def status(self, scope_or_budget: str | Budget, *, period: str | None = None) -> BudgetStatus:
        """Report used, reserved, remaining, burn rate and days left of a budget in its period.

        A scope string names one of the ledger's ``budgets`` (``period`` picks among several).
        """
        if isinstance(scope_or_budget, Budget):
            budget = scope_or_budget
        else:
            parse_scope(scope_or_budget)
            budget = self._budget_for(scope_or_budget, period)
        now = self._now()
        window = period_window(budget.period, now)
        key = _reservations_key(budget.scope, window)
        _, active, usage = self._snapshot(budget.scope, window, key, now)
        used_ng = usage.total_ng
        reserved_ng = sum(estimate_ng(e) for e in active.values())
        limit_ng = kg_to_ng(budget.limit_kg_co2e)
        remaining_kg = _ng_to_kg(limit_ng - used_ng - reserved_ng)
        start = window.start
        if start is None and usage.first_date is not None:
            # A total budget's burn rate runs from the day of its first charge.
            start = datetime.fromisoformat(usage.first_date).replace(tzinfo=timezone.utc)
        burn = 0.0
        if start is not None and used_ng:
            # A floor of an hour keeps the first minutes of a period from showing a wild rate.
            elapsed_days = max((now - start).total_seconds(), 3600.0) / 86400.0
            burn = _ng_to_kg(used_ng) / elapsed_days
        self._note_crossings(budget, window, used_ng)
        return BudgetStatus(
            scope=budget.scope,
            period=window.period,
            period_id=window.period_id,
            period_start=start,
            period_end=window.end,
            limit_kg=_ng_to_kg(limit_ng),
            warn_ratio=budget.warn_ratio,
            used_kg=_ng_to_kg(used_ng),
            reserved_kg=_ng_to_kg(reserved_ng),
            remaining_kg=remaining_kg,
            percent=100.0 * used_ng / limit_ng,
            burn_rate_kg_per_day=burn,
            days_left=max(remaining_kg, 0.0) / burn if burn > 0 else None,
            warning=used_ng >= budget.warn_ratio * limit_ng,
            exceeded=used_ng > limit_ng,
            charges=usage.count,
            reservations=len(active),
            on_exceed=budget.on_exceed,
        )

    def check(
        self, budget: Budget, estimate_kg: float, *, estimate_source: str = "given"
    ) -> GateDecision:
        """Decide whether ``estimate_kg`` fits ``budget`` now, without reserving anything."""
        est_ng = kg_to_ng(check_amount("estimate_kg", estimate_kg))
        now = self._now()
        window = period_window(budget.period, now)
        _, active, usage = self._snapshot(
            budget.scope, window, _reservations_key(budget.scope, window), now
        )
        self._note_crossings(budget, window, usage.total_ng)
        return self._decide(budget, window, usage, active, est_ng, estimate_source)

    @staticmethod
    def _decide(
        budget: Budget,
        window: PeriodWindow,
        usage: PeriodUsage,
        active: Mapping[str, Mapping[str, Any]],
        est_ng: int,
        estimate_source: str,
    ) -> GateDecision:
        limit_ng = kg_to_ng(budget.limit_kg_co2e)
        reserved_ng = sum(estimate_ng(e) for e in active.values())
        remaining_ng = limit_ng - usage.total_ng - reserved_ng
        allowed = est_ng <= remaining_ng
        figures = (
            f"used {_ng_to_kg(usage.total_ng):.6g} kg + reserved {_ng_to_kg(reserved_ng):.6g} kg "
            f"+ estimate {_ng_to_kg(est_ng):.6g} kg ({estimate_source}) "
            f"{'<=' if allowed else '>'} limit {_ng_to_kg(limit_ng):.6g} kg"
        )
        if allowed:
            message = f"budget {budget.scope} {window.key_part}: fits: {figures}"
        else:
            message = (
                f"budget {budget.scope} {window.key_part} would be exceeded: {figures}; "
                f"on_exceed={budget.on_exceed}"
            )
        return GateDecision(
            allowed=allowed,
            action="run" if allowed else budget.on_exceed,
            on_exceed=budget.on_exceed,
            scope=budget.scope,
            period_id=window.period_id,
            used_kg=_ng_to_kg(usage.total_ng),
            reserved_kg=_ng_to_kg(reserved_ng),
            limit_kg=_ng_to_kg(limit_ng),
            estimate_kg=_ng_to_kg(est_ng),
            estimate_source=estimate_source,
            remaining_kg=_ng_to_kg(remaining_ng),
            message=message,
        )

    def _note_crossings(self, budget: Budget, window: PeriodWindow, used_ng: int) -> None:
        # Logged once per crossing: this process remembers what it logged, and a create-only
        # marker in the store keeps other processes and pods from logging the same crossing.
        limit_ng = kg_to_ng(budget.limit_kg_co2e)
        for kind, reached in (
            ("warning", used_ng >= budget.warn_ratio * limit_ng),
            ("exceeded", used_ng > limit_ng),
        ):
            if not reached:
                continue
            marker = (
                f"{BUDGETS_PREFIX}/{scope_key(budget.scope)}/{window.key_part}/alerts/"
                f"{kind}-{kg_to_ug(budget.limit_kg_co2e)}-{budget.warn_ratio:g}.json"
            )
            with self._alerted_lock:
                if marker in self._alerted:
                    continue
                self._alerted.add(marker)
            body = {"scope": budget.scope, "kind": kind, "used_ng": used_ng, "limit_ng": limit_ng}
            try:
                self.store.put_if_absent(
                    marker, json.dumps(body, sort_keys=True, allow_nan=False).encode()
                )
            except PreconditionFailed:
                continue  # someone else logged this crossing
            except StoreError as exc:
                logger.debug("cannot write alert marker %s (%s); logging anyway", marker, exc)
            used_kg, limit_kg = _ng_to_kg(used_ng), _ng_to_kg(limit_ng)
            if kind == "warning":
                logger.warning(
                    "carbon budget %s %s passed %g%% of its limit: %.6g of %.6g kg CO2e used",
                    budget.scope,
                    window.key_part,
                    100 * budget.warn_ratio,
                    used_kg,
                    limit_kg,
                )
            else:
                logger.warning(
                    "carbon budget %s %s exceeded: %.6g of %.6g kg CO2e used",
                    budget.scope,
                    window.key_part,
                    used_kg,
                    limit_kg,
                )


# ---------------------------------------------------------------------------------------------
# Helpers


def _reservations_key(scope: str, window: PeriodWindow) -> str:
    return f"{BUDGETS_PREFIX}/{scope_key(scope)}/{window.key_part}/reservations.json"


def _reservations_doc(
    scope: str, period: str, period_id: str, entries: list[dict[str, Any]]
) -> bytes:
    doc = {
        "schema": _DOC_SCHEMA,
        "scope": scope,
        "period": period,
        "period_id": period_id,
        "reservations": sorted(entries, key=lambda e: str(e["reservation_id"])),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    try:
        parse_utc(entry["expires_at"])
        return isinstance(entry["reservation_id"], str) and estimate_ng(entry) >= 0
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


class _Lapsed(Exception):
    """A lease renewed too late: the reservation had already expired."""


def _reservation_from(
    entry: Mapping[str, Any], budget: Budget, window: PeriodWindow, key: str
) -> Reservation:
    return Reservation(
        reservation_id=entry["reservation_id"],
        scope=budget.scope,
        period=window.period,
        period_id=window.period_id,
        estimate_kg=_ng_to_kg(estimate_ng(entry)),
        estimate_source=str(entry.get("estimate_source", "given")),
        created_at=parse_utc(entry.get("created_at") or entry["expires_at"]),
        expires_at=parse_utc(entry["expires_at"]),
        document_key=key,
    )
