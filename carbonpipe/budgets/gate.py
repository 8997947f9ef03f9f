"""The gate before a step: estimate what it will emit, then check or reserve that against the budget.

The estimate comes from the step's baseline, else its last run, else the budget's default;
:class:`GateDecision` says what the ledger answered and where the estimate came from.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from carbonpipe.budgets.charges import (
    Charge,
    baseline_key,
    check_amount,
)
from carbonpipe.errors import (
    ObjectNotFound,
)

if TYPE_CHECKING:
    from carbonpipe.budgets.charges import ChargeableRecord
from carbonpipe.budgets.budget import Budget
from carbonpipe.budgets.ledger import DEFAULT_RESERVATION_TTL_S, BudgetLedger
from carbonpipe.budgets.status import GateDecision, Reservation, StepEstimate

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The gate


class BudgetGate:
    """Before a step: estimate it, and reserve the estimate in its budget or refuse the step."""

    def __init__(self, ledger: BudgetLedger, budget: Budget) -> None:
        self.ledger = ledger
        self.budget = budget

    def estimate(self, pipeline: str, step: str) -> StepEstimate:
        """Return the step's baseline, else its last run's emissions, else the budget's default."""
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
            return StepEstimate(last.emissions_kg_co2e, "last_run")
        return StepEstimate(self.budget.default_step_estimate_kg, "default")

    def _estimate(self, pipeline: str, step: str, estimate_kg: float | None) -> StepEstimate:
        if estimate_kg is not None:
            return StepEstimate(check_amount("estimate_kg", estimate_kg), "given")
        return self.estimate(pipeline, step)

    def check(self, pipeline: str, step: str, *, estimate_kg: float | None = None) -> GateDecision:
        """Decide whether the step fits, reserving nothing (for a KFP ``dsl.If`` gate)."""
        est = self._estimate(pipeline, step, estimate_kg)
        return self.ledger.check(self.budget, est.kg_co2e, estimate_source=est.source)

    def reserve(
        self,
        pipeline: str,
        step: str,
        *,
        reservation_id: str,
        estimate_kg: float | None = None,
        ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ) -> Reservation:
        """Reserve the step's estimate; raise :class:`BudgetExceeded` if it does not fit."""
        est = self._estimate(pipeline, step, estimate_kg)
        return self.ledger.reserve(
            self.budget,
            est.kg_co2e,
            reservation_id=reservation_id,
            ttl_s=ttl_s,
            estimate_source=est.source,
            pipeline=pipeline,
            step=step,
        )

    def settle(self, reservation: Reservation, record: ChargeableRecord) -> Charge:
        """Charge the step's record in place of its reservation, and log any crossing it caused."""
        charge = self.ledger.settle(reservation, record)
        self.ledger.status(self.budget)
        return charge
