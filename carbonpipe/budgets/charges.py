"""The write side of the budget ledger: its key layout, and charging a record to its scopes.

Every tracked step charges its record here, budget or not (a budget added later counts the
period so far), so this module is on every step's path and stays small: the gate, the
reservations and the status of budgets live in :mod:`carbonpipe.budgets.ledger`, which is imported only
where a budget is. The layout is described there; the charge objects are::

    budgets/<scope>/charges/date=YYYY-MM-DD/step=<step>/<record_id>__<nanograms>ng.json

written create-only, so a charge is idempotent and never contends with another. The amount is
the record's CO2e in exact integer nanograms (:func:`carbonpipe.units.kg_to_ng`); keys of
earlier versions, ``<record_id>__<micrograms>.json``, still count (times 1000).

Two small objects keep the gate's reads short (:mod:`carbonpipe.budgets.rollup`):

* a *late marker*, ``budgets/<scope>/late/date=.../step=.../<same file>``, written before a
  charge whose day has already ended (by the writer's clock), and after a charge that had to
  be spooled: a closed day's rollup is read without listing the day, and the markers are how
  a reader learns that a charge landed in that day after its rollup;
* the step's *last-run pointer*, ``budgets/pipeline=<p>/last-run/step=<step>.json``, moved
  forward by compare-and-swap when a later run of the step is charged, so the gate's
  "last run" estimate is one read instead of a listing of the pipeline's month.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import ObjectNotFound, PreconditionFailed
from carbonpipe.record import parse_utc, utc_iso
from carbonpipe.units import NG_PER_KG, kg_to_ng

# Backoff jitter from the OS, not the global random state (which a user's program, or a
# property-testing library, may be relying on).
_JITTER = random.SystemRandom()

if TYPE_CHECKING:
    from typing import Protocol

    from carbonpipe.stores.base import Store

    class ChargeableRecord(Protocol):
        """What the ledger reads from a record (``carbonpipe.record.Record`` has it all)."""

        @property
        def record_id(self) -> str: ...
        @property
        def pipeline(self) -> str: ...
        @property
        def run_id(self) -> str: ...
        @property
        def step(self) -> str: ...
        @property
        def team(self) -> str: ...
        @property
        def ended_at(self) -> str: ...
        @property
        def emissions_kg_co2e(self) -> float: ...


__all__ = [
    "BASELINES_PREFIX",
    "BUDGETS_PREFIX",
    "NG_PER_KG",
    "SCOPE_KINDS",
    "UG_PER_KG",
    "Charge",
    "advance_last_run",
    "baseline_key",
    "charge_record",
    "check_amount",
    "estimate_ng",
    "kg_to_ng",
    "kg_to_ug",
    "last_run_key",
    "late_marker_key",
    "parse_charge_key",
    "parse_scope",
    "record_scopes",
    "run_order",
    "safe_name",
    "scope_key",
]

SCOPE_KINDS = ("pipeline", "team", "run")
BUDGETS_PREFIX = "budgets"
BASELINES_PREFIX = "baselines"
UG_PER_KG = 1_000_000_000
# /2: amounts in nanograms (key suffix "ng", "emissions_ng"); /1 wrote whole micrograms.
CHARGE_SCHEMA = "carbonpipe.charge/2"
LAST_RUN_SCHEMA = "carbonpipe.last-run/1"
_CHARGE_FILE = re.compile(r"^(?P<rid>.+)__(?P<amount>\d+)(?P<ng>ng)?\.json$")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9._\-]*$")
_RECORD_ID = re.compile(r"^[A-Za-z0-9._\-]+$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._\-]")


def safe_name(name: str) -> str:
    """Return ``name`` usable as one key part, one name to one part.

    A key-safe name is its own part (so existing ledgers keep their keys); any other name is
    its sanitised form plus a hash of its true text (``team/a`` -> ``team_a-<hash>``), so
    names that differ only in characters a key cannot hold never share a scope folder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name {name!r} must be a non-empty string")
    if _SAFE_NAME.fullmatch(name):  # fullmatch: "$" would let a trailing newline through
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{_UNSAFE_CHARS.sub('_', name).lstrip('.')}-{digest}"


def parse_scope(scope: str) -> tuple[str, str]:
    """Split ``pipeline:NAME``, ``team:NAME`` or ``run:ID`` into (kind, name), or raise ValueError."""
    kind, sep, name = scope.partition(":") if isinstance(scope, str) else ("", "", "")
    if not sep or kind not in SCOPE_KINDS or not name.strip():
        raise ValueError(
            f"scope {scope!r} is invalid: use 'pipeline:NAME', 'team:NAME' or 'run:ID' "
            f"(kind one of {', '.join(SCOPE_KINDS)})"
        )
    return kind, name


#: The total book of a scope: its own ledger, of operational + embodied charges, under a name no
#: pipeline, team or run takes by accident (``pipeline:train`` -> ``pipeline:train (total)``).
_BOOK_SUFFIX = " ({basis})"


def book_scope(scope: str, basis: str) -> str:
    """The ledger scope that budgets of ``basis`` on ``scope`` count (``scope`` itself for
    ``operational``, or when it is that book already)."""
    suffix = _BOOK_SUFFIX.format(basis=basis)
    return scope if basis == "operational" or scope.endswith(suffix) else scope + suffix


def total_kg(record: ChargeableRecord) -> float:
    """A record's operational + embodied kg CO2e (its operational figure where it has no
    embodied one)."""
    total = getattr(record, "total_kg_co2e", None)
    if isinstance(total, (int, float)) and not isinstance(total, bool):
        return float(total)
    return record.emissions_kg_co2e + float(getattr(record, "embodied_kg_co2e", None) or 0.0)


def scope_key(scope: str) -> str:
    """Return the key part of a scope: ``pipeline:train`` becomes ``pipeline=train``."""
    kind, name = parse_scope(scope)
    return f"{kind}={safe_name(name)}"


def baseline_key(pipeline: str, step: str) -> str:
    """Return ``baselines/<pipeline>/<step>.json``, where the ESG work writes a step's baseline."""
    return f"{BASELINES_PREFIX}/{safe_name(pipeline)}/{safe_name(step)}.json"


def kg_to_ug(kg: float) -> int:
    """Convert kg CO2e to integer micrograms (the ledger's unit before nanograms)."""
    return round(kg * UG_PER_KG)


def parse_charge_key(base: str, key: str) -> tuple[str, str, str, int] | None:
    """Split a charge key under ``base`` into (date, step, record id, nanograms), or None.

    Reads both layouts: ``<id>__<ng>ng.json`` and the earlier ``<id>__<ug>.json``.
    """
    parts = key[len(base) :].split("/")
    if len(parts) != 3 or not parts[0].startswith("date=") or not parts[1].startswith("step="):
        return None
    m = _CHARGE_FILE.match(parts[2])
    if m is None:
        return None
    ng = int(m["amount"]) * (1 if m["ng"] else NG_PER_KG // UG_PER_KG)
    return parts[0][len("date=") :], parts[1][len("step=") :], m["rid"], ng


def estimate_ng(entry: Mapping[str, Any]) -> int:
    """A reservation entry's estimate in nanograms (entries of earlier versions: micrograms)."""
    if "estimate_ng" in entry:
        return int(entry["estimate_ng"])
    return int(entry["estimate_ug"]) * (NG_PER_KG // UG_PER_KG)


def check_amount(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


def record_scopes(record: ChargeableRecord, *, run: bool = False) -> list[str]:
    """The scopes a record is charged to: its pipeline, its team if set, and its run if asked.

    The run scope only serves per-run budgets (``carbon_budget_g``), so it costs a write only
    for trackers that have one.
    """
    scopes = [f"pipeline:{record.pipeline}"]
    if record.team:
        scopes.append(f"team:{record.team}")
    if run:
        scopes.append(f"run:{record.run_id}")
    return scopes


@dataclass(frozen=True)
class Charge:
    """What one ``charge()`` did with each scope's entry: written, already there, or spooled."""

    record_id: str
    emissions_kg_co2e: float
    keys: tuple[str, ...]
    written: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    spooled: tuple[str, ...] = ()


def late_marker_key(charge_key: str) -> str:
    """The late marker of a charge: the same key with ``/late/`` for ``/charges/``."""
    head, sep, tail = charge_key.partition("/charges/")
    if not sep:
        raise ValueError(f"{charge_key!r} is not a charge key")
    return f"{head}/late/{tail}"


def last_run_key(pipeline: str, step: str) -> str:
    """``budgets/pipeline=<p>/last-run/step=<step>.json``: the step's last-run pointer."""
    return (
        f"{BUDGETS_PREFIX}/{scope_key(f'pipeline:{pipeline}')}/last-run/step={safe_name(step)}.json"
    )


def run_order(body: Mapping[str, Any]) -> tuple[str, str]:
    """How runs of a step are ordered: by end time, then record id (as the pointer keeps them)."""
    try:
        ended = utc_iso(parse_utc(body["ended_at"]))
    except (KeyError, ValueError, TypeError, AttributeError):
        ended = ""
    return ended, str(body.get("record_id", ""))


def advance_last_run(
    store: Store, key: str, body: Mapping[str, Any], *, attempts: int = 10
) -> bool:
    """Move the step's last-run pointer at ``key`` to ``body`` if it is a later run.

    Compare-and-swap, retried after a short jittered pause (only runs of one step that end
    together contend, and a retry stops at once if a later run got there). Never raises for
    the store: the pointer is only where an estimate starts, and a reader with no pointer
    lists. True when ``body`` is (now) the pointer's run.
    """
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    mine = run_order(body)
    for attempt in range(attempts):
        try:
            try:
                current = store.get(key)
            except ObjectNotFound:
                store.put_if_absent(key, data)
                return True
            try:
                theirs = run_order(json.loads(current.data))
            except ValueError:
                theirs = ("", "")  # unreadable: replace it
            if theirs >= mine:
                return theirs == mine
            store.replace(key, data, if_version=current.version)
            return True
        except PreconditionFailed:  # another run's charge moved it: compare again
            time.sleep(_JITTER.uniform(0, 0.002 * (attempt + 1)))
        except Exception as exc:  # a store down or refusing: the charge itself is safe
            logging.getLogger(__name__).debug("cannot move the last-run pointer %s: %s", key, exc)
            return False
    return False


def charge_record(
    store: Store,
    record: ChargeableRecord,
    *,
    run_scope: bool = False,
    now: datetime | None = None,
    total_scopes: Collection[str] = (),
) -> Charge:
    """Charge a record to its scopes (pipeline, team if set, run if asked); idempotent.

    Each scope's charge goes through the spool: a store that is down gets it on the next replay.
    A charge for a day that has ended by ``now`` (default: the clock) gets a late marker first,
    and a charge that was spooled gets one after; the pipeline's charge moves the step's
    last-run pointer (see the module docstring). Each of the record's scopes in
    ``total_scopes`` (those a budget of basis ``total`` counts) is also charged its
    operational + embodied figure on its total book (:func:`book_scope`).
    """
    rid = record.record_id
    if not isinstance(rid, str) or not _RECORD_ID.match(rid):
        raise ValueError(f"record_id {rid!r} must be letters, digits and ._- only")
    kg = check_amount("emissions_kg_co2e", record.emissions_kg_co2e)
    ng = kg_to_ng(kg)
    day = parse_utc(record.ended_at).date().isoformat()
    late = day < (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date().isoformat()
    outcomes: dict[str, list[str]] = {"written": [], "duplicate": [], "spooled": []}
    keys: list[str] = []
    scopes_pipeline = f"pipeline:{record.pipeline}"
    operational_kg = kg
    books = [(scope, kg) for scope in record_scopes(record, run=run_scope)]
    if total_scopes:
        total = check_amount("total_kg_co2e", total_kg(record))
        books += [(book_scope(s, "total"), total) for s, _ in books if s in total_scopes]
    for scope, kg in books:
        ng = kg_to_ng(kg)
        key = (
            f"{BUDGETS_PREFIX}/{scope_key(scope)}/charges/date={day}/"
            f"step={safe_name(record.step)}/{rid}__{ng}ng.json"
        )
        body = {
            "schema": CHARGE_SCHEMA,
            "scope": scope,
            "record_id": rid,
            "emissions_kg_co2e": kg,
            "emissions_ng": ng,
            "pipeline": record.pipeline,
            "step": record.step,
            "team": record.team,
            "run_id": record.run_id,
            "ended_at": record.ended_at,
        }
        duration = getattr(record, "duration_s", None)  # sizes the step's next reservation
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0:
            body["duration_s"] = float(duration)
        data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        keys.append(key)
        if late:  # before the charge: whoever lists the charge can list its marker
            _deliver(store, late_marker_key(key), data)
        outcome = _deliver(store, key, data)
        outcomes[outcome].append(key)
        if outcome == "spooled" and not late:  # it may land after its day is rolled up
            _deliver(store, late_marker_key(key), data)
        if outcome == "written" and scope == scopes_pipeline:
            advance_last_run(
                store,
                last_run_key(record.pipeline, record.step),
                {**body, "schema": LAST_RUN_SCHEMA, "key": key, "date": day},
            )
    return Charge(
        rid,
        operational_kg,
        tuple(keys),
        written=tuple(outcomes["written"]),
        duplicates=tuple(outcomes["duplicate"]),
        spooled=tuple(outcomes["spooled"]),
    )


def _deliver(store: Store, key: str, data: bytes) -> str:
    from carbonpipe.stores.deliver import deliver

    delivery = deliver(store, key, data)
    if delivery.spooled:
        return "spooled"
    # Not stored and not spooled: the key, which carries the amount, is already there.
    return "written" if delivery.stored else "duplicate"
