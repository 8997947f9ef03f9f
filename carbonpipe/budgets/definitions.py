"""Budget definitions in the store: what a budget said when a step used it, and what it said before.

A budget given in code (the tracker, ``carbonpipe run --budget-*``, the KFP gate, the Airflow
operators) lives in no configuration file; the gate writes its definition to the store the
first time a process uses it, so ``carbonpipe budget status`` and the ESG report know it::

    budgets/definitions/<scope>/<period>.json               the current definition
    budgets/definitions/<scope>/<period>/<revision>.json    each definition it replaced

``<scope>`` is the ledger's scope key (``pipeline=train``, as in ``budgets/<scope>/charges/``).
The definitions sit under one prefix of their own, so one listing finds every budget without
listing every charge. The current definition is created if absent; a different one replaces
it by compare-and-swap after the old one is copied (create-if-absent) to its revision in the
history, so two processes with different definitions each leave theirs, and neither is lost.
The same definition is read once per store and process, and never written again.

Recording a definition is bookkeeping, not the ledger: :func:`remember_definition` never
raises, waits at most its timeout, and a failure is logged and the step goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.charges import BUDGETS_PREFIX, scope_key
from carbonpipe.errors import ObjectNotFound, PreconditionFailed
from carbonpipe.stores.redact import redact

# Backoff jitter from the OS, not the global random state (which a user's program, or a
# property-testing library, may be relying on).
_JITTER = random.SystemRandom()

if TYPE_CHECKING:
    from carbonpipe.stores.base import Store, StoredObject

__all__ = [
    "DEFINITIONS_PREFIX",
    "DEFINITION_SCHEMA",
    "LISTED_KINDS",
    "SourcedBudget",
    "StoredDefinition",
    "budget_fields",
    "definition_history",
    "definition_key",
    "history_key",
    "read_definitions",
    "remember_definition",
    "union_budgets",
    "write_definition",
]

logger = logging.getLogger(__name__)

DEFINITION_SCHEMA = "carbonpipe.budget_definition/1"
DEFINITIONS_PREFIX = f"{BUDGETS_PREFIX}/definitions"
#: Compare-and-swap attempts before a contended definition is given up (and logged).
MAX_ATTEMPTS = 10
#: The scope kinds that listings of every budget show (a ``run:`` budget is one run's guard).
LISTED_KINDS = ("pipeline", "team")
CONFIG_SOURCE = "carbon.yaml"
STORE_SOURCE = "store"


# ---------------------------------------------------------------------------------------------
# The document


def budget_fields(budget: Budget) -> dict[str, Any]:
    """The budget's fields, as ``Budget(**fields)`` takes them back."""
    return {f.name: getattr(budget, f.name) for f in fields(budget)}


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def definition_key(scope: str, period: str) -> str:
    """``budgets/definitions/<scope>/<period>.json``: the current definition."""
    return f"{DEFINITIONS_PREFIX}/{scope_key(scope)}/{period}.json"


def history_key(scope: str, period: str, revision: int) -> str:
    """``budgets/definitions/<scope>/<period>/<revision>.json``: a definition that was replaced."""
    return f"{DEFINITIONS_PREFIX}/{scope_key(scope)}/{period}/{revision:08d}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _document(budget: Budget, revision: int, pipeline: str, step: str) -> bytes:
    return _canonical(
        {
            "schema": DEFINITION_SCHEMA,
            "budget": budget_fields(budget),
            "revision": revision,
            "recorded_at": _now(),
            "recorded_by": {"pipeline": pipeline, "step": step},
        }
    )


@dataclass(frozen=True)
class StoredDefinition:
    """A budget definition read from the store."""

    budget: Budget
    revision: int
    recorded_at: str
    key: str
    pipeline: str = ""
    step: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": budget_fields(self.budget),
            "revision": self.revision,
            "recorded_at": self.recorded_at,
            "key": self.key,
            "recorded_by": {"pipeline": self.pipeline, "step": self.step},
        }


def _parse(key: str, data: bytes) -> StoredDefinition:
    """Read a definition document; raise ValueError (or KeyError, TypeError) if it is not one."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("schema") != DEFINITION_SCHEMA:
        raise ValueError(f"not a {DEFINITION_SCHEMA} document")
    revision = doc["revision"]
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise ValueError(f"revision {revision!r} is not an integer >= 1")
    by = doc.get("recorded_by") or {}
    return StoredDefinition(
        budget=Budget(**doc["budget"]),
        revision=revision,
        recorded_at=str(doc.get("recorded_at", "")),
        key=key,
        pipeline=str(by.get("pipeline", "")),
        step=str(by.get("step", "")),
    )


# ---------------------------------------------------------------------------------------------
# Writing


def _backoff(attempt: int) -> None:
    time.sleep(_JITTER.uniform(0, min(0.5, 0.01 * 2**attempt)))  # noqa: S311 - jitter, not crypto


def _last_revision(store: Store, scope: str, period: str) -> int:
    """The highest revision in the history (for a current document too damaged to say)."""
    base = history_key(scope, period, 0).rsplit("/", 1)[0] + "/"
    last = 0
    for key in store.list(base):
        stem = key[len(base) :].removesuffix(".json")
        if stem.isdigit():
            last = max(last, int(stem))
    return last


def _archive(store: Store, key: str, data: bytes) -> None:
    """Keep a replaced definition; one already kept (by a racing writer) is the same bytes."""
    with contextlib.suppress(PreconditionFailed):
        store.put_if_absent(key, data)


def write_definition(
    store: Store,
    budget: Budget,
    *,
    pipeline: str = "",
    step: str = "",
    deadline: float | None = None,
) -> str:
    """Make ``budget`` the store's current definition of its scope and period.

    Returns ``"created"``, ``"unchanged"`` (nothing written) or ``"replaced"`` (the old one
    kept in the history). Store errors propagate; so does :class:`PreconditionFailed` after
    :data:`MAX_ATTEMPTS` lost compare-and-swaps or once the ``time.monotonic()`` deadline passed.
    """
    key = definition_key(budget.scope, budget.period)
    want = json.loads(_canonical(budget_fields(budget)))
    for attempt in range(MAX_ATTEMPTS):
        if attempt and deadline is not None and time.monotonic() >= deadline:
            break
        try:
            current: StoredObject = store.get(key)
        except ObjectNotFound:
            try:
                store.put_if_absent(key, _document(budget, 1, pipeline, step))
                return "created"
            except PreconditionFailed:
                continue  # another process created it first: compare with theirs
        try:
            held = _parse(key, current.data)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("budget definition %s is unreadable (%s); replacing it", key, exc)
            revision = _last_revision(store, budget.scope, budget.period) + 1
        else:
            if json.loads(_canonical(budget_fields(held.budget))) == want:
                return "unchanged"
            revision = held.revision
        _archive(store, history_key(budget.scope, budget.period, revision), current.data)
        try:
            store.replace(
                key, _document(budget, revision + 1, pipeline, step), if_version=current.version
            )
            return "replaced"
        except (PreconditionFailed, ObjectNotFound):
            _backoff(attempt)  # another definition won: keep it (archived above) and try again
    raise PreconditionFailed(f"{store.url_for(key)}: gave up after {MAX_ATTEMPTS} contended writes")


# Per store object: key -> the canonical budget this process last found or wrote there.
_confirmed: weakref.WeakKeyDictionary[Store, dict[str, bytes]] = weakref.WeakKeyDictionary()
_confirmed_lock = threading.Lock()


def _cache_for(store: Store) -> dict[str, bytes] | None:
    with _confirmed_lock:
        try:
            return _confirmed.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced is simply not cached
            return None


def remember_definition(
    store: Store,
    budget: Budget,
    *,
    pipeline: str = "",
    step: str = "",
    timeout_s: float = 5.0,
) -> str | None:
    """:func:`write_definition`, at most once per store object and definition, never raising.

    Waits at most ``timeout_s`` (the store call itself keeps its own deadline and circuit
    breaker); returns what :func:`write_definition` did, ``"known"`` when this process already
    confirmed this definition, or ``None`` when it failed or ran out of time (logged).
    """
    try:
        key = definition_key(budget.scope, budget.period)
        want = _canonical(budget_fields(budget))
    except Exception as exc:  # a budget we cannot serialise is no reason to stop a step
        logger.warning("carbonpipe: budget %s: definition not recorded: %s", budget.scope, exc)
        return None
    cache = _cache_for(store)
    if cache is not None and cache.get(key) == want:
        return "known"
    outcome: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s

    def work() -> None:
        try:
            outcome["done"] = write_definition(
                store, budget, pipeline=pipeline, step=step, deadline=deadline
            )
        except BaseException as exc:  # reported by the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="carbonpipe-budget-definition", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "done" in outcome:
        if cache is not None:
            cache[key] = want
        if outcome["done"] != "unchanged":
            logger.info("carbonpipe: budget definition %s %s", key, outcome["done"])
        return str(outcome["done"])
    problem = (
        redact(f"{type(outcome['error']).__name__}: {outcome['error']}")
        if "error" in outcome
        else f"no answer within {timeout_s:g} s"
    )
    logger.warning(
        "carbonpipe: could not record budget definition %s (%s); the step goes on", key, problem
    )
    return None


# ---------------------------------------------------------------------------------------------
# Reading


def _read(store: Store, keys: Iterable[str]) -> list[StoredDefinition]:
    out = []
    for key in keys:
        try:
            out.append(_parse(key, store.get(key).data))
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("budget definition %s is unusable (%s); not using it", key, exc)
    return out


def read_definitions(
    store: Store, scope: str | None = None, *, kinds: Sequence[str] | None = None
) -> list[StoredDefinition]:
    """The current definitions in the store, by scope and period: of ``scope`` only, if given,
    else of the scope ``kinds`` (default: all; :data:`LISTED_KINDS` leaves out the one-per-run
    ``run:`` budgets, so a listing does not grow with every run).

    Store errors propagate.
    """
    if scope:
        bases = [f"{DEFINITIONS_PREFIX}/{scope_key(scope)}/"]
    elif kinds is not None:
        bases = [f"{DEFINITIONS_PREFIX}/{kind}=" for kind in kinds]
    else:
        bases = [f"{DEFINITIONS_PREFIX}/"]
    current = [
        k
        for base in bases
        for k in store.list(base)
        if len(k[len(DEFINITIONS_PREFIX) + 1 :].split("/")) == 2
    ]
    found = [d for d in _read(store, current) if scope is None or d.budget.scope == scope]
    return sorted(found, key=lambda d: (d.budget.scope, d.budget.period))


def definition_history(store: Store, scope: str, period: str) -> list[StoredDefinition]:
    """Every definition of ``scope`` and ``period``, oldest first, the current one last."""
    base = history_key(scope, period, 0).rsplit("/", 1)[0] + "/"
    older = _read(store, sorted(store.list(base)))
    return older + _read(store, [definition_key(scope, period)])


# ---------------------------------------------------------------------------------------------
# carbon.yaml and the store together


@dataclass(frozen=True)
class SourcedBudget:
    """A budget and where it was defined: ``carbon.yaml`` or ``store`` (a step used it)."""

    budget: Budget
    source: str
    definition: StoredDefinition | None = None

    def describe(self) -> str:
        if self.definition is None:
            return self.source
        d = self.definition
        return f"store definition {d.key} (revision {d.revision}, recorded {d.recorded_at})"


def union_budgets(
    configured: Sequence[Budget], stored: Sequence[StoredDefinition]
) -> list[SourcedBudget]:
    """carbon.yaml's budgets, then each store definition whose scope and period it lacks.

    carbon.yaml is the configuration, so it wins where both define a scope's period; the
    store adds the budgets that were given in code.
    """
    out = [SourcedBudget(b, CONFIG_SOURCE) for b in configured]
    seen = {(b.scope, b.period) for b in configured}
    for d in stored:
        if (d.budget.scope, d.budget.period) not in seen:
            seen.add((d.budget.scope, d.budget.period))
            out.append(SourcedBudget(d.budget, STORE_SOURCE, d))
    return out
