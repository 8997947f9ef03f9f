"""The gate before a step: estimate what it will emit, then check or reserve that against the budget.

The estimate comes from the step's baseline, else its last run, else the budget's default;
:class:`GateDecision` says what the ledger answered and where the estimate came from.

The gate fails closed. Its whole decision (the estimate's reads, the ledger's listing, the
reservation's compare-and-swap) runs under one deadline, the budget's ``gate_timeout_s`` (5 s
by default), in a worker thread the step waits on no longer than that. A ledger that cannot be
read or written by then, whatever the reason (the store down, timing out, refusing our
credentials, a reservations document contended past the deadline), makes the budget
*unavailable*: with ``when_unavailable="refuse"`` (the default) the step is refused with
:class:`BudgetUnavailable`, as an overrun would be (``on_exceed`` applies: fail or skip); with
``"run"`` it runs without a reservation, and the note for its record says so.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

from carbonpipe.budgets.charges import (
    Charge,
    baseline_key,
    check_amount,
)
from carbonpipe.budgets.period import period_window
from carbonpipe.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    ConfigError,
    ObjectNotFound,
)
from carbonpipe.stores.redact import redact

if TYPE_CHECKING:
    from carbonpipe.budgets.charges import ChargeableRecord
    from carbonpipe.stores.base import Store
from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.definitions import remember_definition
from carbonpipe.budgets.lease import LeaseKeeper, lease_for
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.status import (
    Admission,
    GateDecision,
    Reservation,
    StepEstimate,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# One deadline for the whole decision


class _NoAnswer(Exception):
    """The ledger did not answer within the gate's deadline."""


def _within(
    timeout_s: float, work: Callable[[float], T], *, late: Callable[[T], object] | None = None
) -> T:
    """Return ``work(deadline)``, run in a daemon thread, or raise :class:`_NoAnswer` after
    ``timeout_s``.

    A store call cannot be interrupted, so the thread is left to finish on its own; if it then
    produces something (a reservation written just too late), ``late`` gets it to undo.
    """
    deadline = time.monotonic() + timeout_s
    outcome: dict[str, Any] = {}
    lock = threading.Lock()
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work(deadline)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc
        with lock:
            outcome["finished"] = True
            given_up = outcome.get("abandoned", False)
        done.set()
        if given_up and late is not None and "value" in outcome:
            try:
                late(outcome["value"])
            except Exception as exc:
                logger.debug("could not undo what the budget gate did too late: %s", exc)

    threading.Thread(target=run, name="carbonpipe-budget-gate", daemon=True).start()
    done.wait(timeout_s)
    with lock:
        if not outcome.get("finished"):
            outcome["abandoned"] = True
            raise _NoAnswer(f"no answer within the gate's deadline of {timeout_s:g} s")
    if "error" in outcome:
        raise cast(BaseException, outcome["error"])
    return cast(T, outcome["value"])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _NoAnswer):
        return str(exc)
    return redact(f"{type(exc).__name__}: {exc}")


def unavailable_decision(
    budget: Budget,
    store_error: str,
    *,
    estimate_kg: float | None = None,
    estimate_source: str = "unknown",
    at: datetime | None = None,
) -> GateDecision:
    """The decision for a budget whose ledger could not be read: refused unless it says
    ``when_unavailable="run"``. The usage figures are unknown and reported as 0."""
    window = period_window(budget.period, at or datetime.now(timezone.utc))
    run = budget.when_unavailable == "run"
    head = f"budget {budget.scope} {window.key_part}: ledger unavailable ({store_error})"
    if run:
        message = f"{head}; the step runs ungated (when_unavailable=run)"
    else:
        message = (
            f"{head}; a strict budget fails closed (when_unavailable=refuse, "
            f"on_exceed={budget.on_exceed})"
        )
    return GateDecision(
        allowed=run,
        action="run" if run else budget.on_exceed,
        on_exceed=budget.on_exceed,
        scope=budget.scope,
        period_id=window.period_id,
        used_kg=0.0,
        reserved_kg=0.0,
        limit_kg=budget.limit_kg_co2e,
        estimate_kg=estimate_kg or 0.0,
        estimate_source=estimate_source if estimate_kg is not None else "unknown",
        remaining_kg=0.0,
        message=message,
        unavailable=True,
        store_error=store_error,
    )


def _ungated(budget: Budget, refused: BudgetUnavailable) -> Admission:
    """Let the step run without a reservation if its budget chose availability; else refuse."""
    if budget.when_unavailable != "run":
        raise refused
    note = (
        f"budget {budget.scope} unavailable ({refused.store_error}); "
        "the step ran ungated (when_unavailable=run)"
    )
    logger.warning("carbonpipe: %s", note)
    return Admission(reservation=None, notes=(note,))


# ---------------------------------------------------------------------------------------------
# The gate


class BudgetGate:
    """Before a step: estimate it, and reserve the estimate in its budget or refuse the step.

    Every decision is bounded by ``timeout_s`` seconds (default: the budget's
    ``gate_timeout_s``); see the module docstring for what an unavailable ledger does.
    """

    def __init__(
        self, ledger: BudgetLedger, budget: Budget, *, timeout_s: float | None = None
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        if timeout_s is not None and not (
            isinstance(timeout_s, (int, float))
            and not isinstance(timeout_s, bool)
            and 0 < timeout_s < math.inf
        ):
            raise ValueError(f"timeout_s {timeout_s!r} must be a finite number of seconds > 0")
        self.timeout_s = float(budget.gate_timeout_s if timeout_s is None else timeout_s)

    def estimate(self, pipeline: str, step: str) -> StepEstimate:
        """Return the step's baseline, else its last run's emissions, else the budget's default.

        Unbounded and unguarded: a store error propagates.
        """
        key = baseline_key(pipeline, step)
        try:
            body = json.loads(self.ledger.store.get(key).data)
            return StepEstimate(check_amount("mean_kg_co2e", body["mean_kg_co2e"]), "baseline")
        except ObjectNotFound:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("baseline %s is unusable (%s); not using it", key, exc)
        last = self.ledger.last_charge(pipeline, step)
        if last is not None:
            return StepEstimate(last.emissions_kg_co2e, "last_run", last.duration_s)
        return StepEstimate(self.budget.default_step_estimate_kg, "default")

    def _estimate(
        self,
        pipeline: str,
        step: str,
        estimate_kg: float | None,
        estimate_option: str | None = None,
    ) -> StepEstimate:
        if estimate_kg is not None:
            return StepEstimate(check_amount("estimate_kg", estimate_kg), "given")
        est = self.estimate(pipeline, step)
        if (
            estimate_option
            and est.source == "default"
            and est.kg_co2e == 0
            and self.budget.on_exceed == "fail"
        ):
            raise ConfigError(
                f"budget {self.budget.scope} (on_exceed=fail) cannot estimate step {step!r} "
                f"of pipeline {pipeline!r}: it has no baseline, no earlier run and no default "
                f"estimate, and reserving 0 would hold nothing back; give {estimate_option}"
            )
        return est

    def check(self, pipeline: str, step: str, *, estimate_kg: float | None = None) -> GateDecision:
        """Decide whether the step fits, reserving nothing (for a KFP ``dsl.If`` gate).

        An unavailable ledger does not raise: the decision says ``unavailable`` and allows the
        step only if the budget says ``when_unavailable="run"``.
        """
        if estimate_kg is not None:
            check_amount("estimate_kg", estimate_kg)

        def work(deadline: float) -> GateDecision:
            est = self._estimate(pipeline, step, estimate_kg)
            return self.ledger.check(self.budget, est.kg_co2e, estimate_source=est.source)

        try:
            decided = _within(self.timeout_s, work)
        except Exception as exc:
            decision = unavailable_decision(
                self.budget, _describe(exc), estimate_kg=estimate_kg, estimate_source="given"
            )
            logger.warning("carbonpipe: %s", decision.message)
            return decision
        self._remember(pipeline, step)
        return decided

    def _remember(self, pipeline: str, step: str) -> None:
        """Record the budget's definition in the store (once per process; never fails the step).

        Only after the ledger answered: a store that is down is not asked twice."""
        remember_definition(
            self.ledger.store, self.budget, pipeline=pipeline, step=step, timeout_s=self.timeout_s
        )

    def reserve(
        self,
        pipeline: str,
        step: str,
        *,
        reservation_id: str,
        estimate_kg: float | None = None,
        ttl_s: float | None = None,
        estimate_option: str | None = None,
    ) -> Reservation:
        """Reserve the step's estimate, for ``ttl_s`` or, by default, a lease sized from the
        step's last run (:func:`carbonpipe.budgets.lease.lease_for`) that the step renews.

        Raises :class:`BudgetExceeded` if it does not fit, :class:`BudgetUnavailable` if the
        ledger cannot be read or the reservation written within the deadline (whatever the
        budget's ``when_unavailable``: :meth:`admit` applies it), and, when ``estimate_option``
        names the setting that supplies an estimate, :class:`ConfigError` naming it for a
        strict budget that could only reserve 0.
        """
        if estimate_kg is not None:
            check_amount("estimate_kg", estimate_kg)
        if not isinstance(reservation_id, str) or not reservation_id:
            raise ValueError(f"reservation_id {reservation_id!r} must be a non-empty string")
        if ttl_s is not None and (
            isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0
        ):
            raise ValueError(f"ttl_s {ttl_s!r} must be a number of seconds > 0")

        def work(deadline: float) -> Reservation:
            est = self._estimate(pipeline, step, estimate_kg, estimate_option)
            return self.ledger.reserve(
                self.budget,
                est.kg_co2e,
                reservation_id=reservation_id,
                ttl_s=ttl_s if ttl_s is not None else lease_for(self.budget, est),
                estimate_source=est.source,
                pipeline=pipeline,
                step=step,
                deadline=deadline,
            )

        try:
            held = _within(self.timeout_s, work, late=self.ledger.release)
        except BudgetExceeded as exc:
            if not isinstance(exc, BudgetUnavailable):  # the ledger answered: over budget
                self._remember(pipeline, step)
            raise
        except ConfigError:
            raise
        except Exception as exc:  # the arguments were checked above: this is the ledger
            raise self._unavailable(exc, estimate_kg) from None
        self._remember(pipeline, step)
        return held

    def _unavailable(self, exc: BaseException, estimate_kg: float | None) -> BudgetExceeded:
        decision = unavailable_decision(
            self.budget, _describe(exc), estimate_kg=estimate_kg, estimate_source="given"
        )
        return decision.to_exception()

    def admit(
        self,
        pipeline: str,
        step: str,
        *,
        reservation_id: str,
        ttl_s: float | None = None,
        estimate_option: str | None = None,
    ) -> Admission:
        """Reserve the step's estimate, or apply the budget's ``when_unavailable`` when the
        ledger is down: refuse (:class:`BudgetUnavailable`) or let the step run ungated."""
        try:
            reservation = self.reserve(
                pipeline,
                step,
                reservation_id=reservation_id,
                ttl_s=ttl_s,
                estimate_option=estimate_option,
            )
        except BudgetUnavailable as exc:
            return _ungated(self.budget, exc)
        return Admission(reservation=reservation)

    def settle(self, reservation: Reservation, record: ChargeableRecord) -> Charge:
        """Charge the step's record in place of its reservation, and log any crossing it caused."""
        charge = self.ledger.settle(reservation, record)
        self.ledger.status(self.budget)
        return charge


def admit_step(
    store: Callable[[], Store],
    budget: Budget,
    *,
    pipeline: str,
    step: str,
    reservation_id: str,
    estimate_option: str | None = None,
) -> Admission:
    """The tracker's gate: open the ledger in ``store()`` and :meth:`BudgetGate.admit` the step.

    A store that cannot even be opened is a ledger that cannot be read. The reservation is a
    lease that a daemon thread renews until the tracker stops ``Admission.keeper`` at the
    step's end (:mod:`carbonpipe.budgets.lease`).
    """
    try:
        ledger = BudgetLedger(store())
    except Exception as exc:
        refused = unavailable_decision(budget, _describe(exc)).to_exception()
        assert isinstance(refused, BudgetUnavailable)
        return _ungated(budget, refused)
    admitted = BudgetGate(ledger, budget).admit(
        pipeline, step, reservation_id=reservation_id, estimate_option=estimate_option
    )
    held = admitted.reservation
    if held is None:
        return admitted
    lease = (held.expires_at - held.created_at).total_seconds()
    return replace(admitted, keeper=LeaseKeeper(ledger, held, lease).start())
