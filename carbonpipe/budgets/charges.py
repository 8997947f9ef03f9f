"""The write side of the budget ledger: its key layout, and charging a record to its scopes.

Every tracked step charges its record here, budget or not (a budget added later counts the
period so far), so this module is on every step's path and stays small: the gate, the
reservations and the status of budgets live in :mod:`carbonpipe.budgets.ledger`, which is imported only
where a budget is. The layout is described there; the charge objects are::

    budgets/<scope>/charges/date=YYYY-MM-DD/step=<step>/<record_id>__<nanograms>ng.json

written create-only, so a charge is idempotent and never contends with another. The amount is
the record's CO2e in exact integer nanograms (:func:`carbonpipe.units.kg_to_ng`); keys of
earlier versions, ``<record_id>__<micrograms>.json``, still count (times 1000).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from carbonpipe.record import parse_utc
from carbonpipe.units import NG_PER_KG, kg_to_ng

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
    "baseline_key",
    "charge_record",
    "check_amount",
    "estimate_ng",
    "kg_to_ng",
    "kg_to_ug",
    "parse_charge_key",
    "parse_scope",
    "record_scopes",
    "safe_name",
    "scope_key",
]

SCOPE_KINDS = ("pipeline", "team", "run")
BUDGETS_PREFIX = "budgets"
BASELINES_PREFIX = "baselines"
UG_PER_KG = 1_000_000_000
# /2: amounts in nanograms (key suffix "ng", "emissions_ng"); /1 wrote whole micrograms.
CHARGE_SCHEMA = "carbonpipe.charge/2"
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


def charge_record(store: Store, record: ChargeableRecord, *, run_scope: bool = False) -> Charge:
    """Charge a record to its scopes (pipeline, team if set, run if asked); idempotent.

    Each scope's charge goes through the spool: a store that is down gets it on the next replay.
    """
    rid = record.record_id
    if not isinstance(rid, str) or not _RECORD_ID.match(rid):
        raise ValueError(f"record_id {rid!r} must be letters, digits and ._- only")
    kg = check_amount("emissions_kg_co2e", record.emissions_kg_co2e)
    ng = kg_to_ng(kg)
    day = parse_utc(record.ended_at).date().isoformat()
    outcomes: dict[str, list[str]] = {"written": [], "duplicate": [], "spooled": []}
    keys: list[str] = []
    for scope in record_scopes(record, run=run_scope):
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
        outcomes[_deliver(store, key, data)].append(key)
    return Charge(
        rid,
        kg,
        tuple(keys),
        written=tuple(outcomes["written"]),
        duplicates=tuple(outcomes["duplicate"]),
        spooled=tuple(outcomes["spooled"]),
    )


def _deliver(store: Store, key: str, data: bytes) -> str:
    from carbonpipe.stores.spool import deliver

    delivery = deliver(store, key, data)
    if delivery.spooled:
        return "spooled"
    # Not stored and not spooled: the key, which carries the amount, is already there.
    return "written" if delivery.stored else "duplicate"
