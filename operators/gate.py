"""``CarbonBudgetGateOperator``: stop a branch of the DAG before it overruns a carbon budget.

The gate decides, without reserving anything, whether the step it guards fits what is left of
its budget (the step's baseline, else its last run, else the budget's default estimate). When it
fits, the decision goes to XCom; when it does not, the gate fails (``on_exceed="fail"``,
without retrying) or skips itself and, through the default trigger rule, its downstream tasks.
A ledger that cannot be read within the budget's ``gate_timeout_s`` fails closed the same way,
except that the failure may be retried (the store may be back by then), unless the budget says
``when_unavailable="run"``. The tracked step still reserves its estimate when it starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.sdk import BaseOperator

from carbonpipe.operators.hooks import CarbonStoreHook
from carbonpipe.operators.tracked import check_on_exceed

if TYPE_CHECKING:
    from airflow.sdk import Context

    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.status import GateDecision
    from carbonpipe.stores.base import Store


def guarded_step(operator: BaseOperator, step: str | None) -> str:
    """The step a gate guards: ``step``, else its only downstream task, else the gate itself."""
    if step:
        return step
    downstream = sorted(operator.downstream_task_ids)
    return downstream[0] if len(downstream) == 1 else operator.task_id


def check_budget(
    store: Store, budget: Budget, pipeline: str, step: str, estimate_kg: float | None
) -> GateDecision:
    """Ask the ledger whether the step fits its budget now, reserving nothing."""
    from carbonpipe.budgets.gate import BudgetGate
    from carbonpipe.budgets.ledger import BudgetLedger

    gate = BudgetGate(BudgetLedger(store), budget)
    return gate.check(pipeline, step, estimate_kg=estimate_kg)


class CarbonBudgetGateOperator(BaseOperator):
    """Fail or skip before a step that would overrun its carbon budget.

    :param budget: the :class:`carbonpipe.Budget` to check.
    :param pipeline: pipeline whose step is estimated (templated; default: the dag_id).
    :param step: the guarded step, whose baseline or last run is the estimate (templated;
        default: the gate's only downstream task).
    :param estimate_kg: the step's estimate in kg CO2e, instead of its history.
    :param on_exceed: ``fail`` or ``skip`` (default: the budget's own setting).
    :param store: the store URI (templated; default: the carbonpipe configuration).
    :param aws_conn_id: Airflow connection holding the credentials of an ``s3://`` store.
    :param gcp_conn_id: Airflow connection holding the credentials of a ``gs://`` store.
    :param azure_conn_id: Airflow ``wasb`` connection holding the credentials of an ``az://`` store.
    """

    template_fields: Sequence[str] = ("pipeline", "step", "store")
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        budget: Budget,
        pipeline: str | None = None,
        step: str | None = None,
        estimate_kg: float | None = None,
        on_exceed: str | None = None,
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
        azure_conn_id: str | None = "wasb_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.pipeline = pipeline
        self.step = step
        self.estimate_kg = estimate_kg
        self.on_exceed = check_on_exceed(on_exceed)
        self.store = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.azure_conn_id = azure_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSkipException,
        )

        hook = CarbonStoreHook(
            self.store,
            aws_conn_id=self.aws_conn_id,
            gcp_conn_id=self.gcp_conn_id,
            azure_conn_id=self.azure_conn_id,
        )
        decision = check_budget(
            hook.get_store(),
            self.budget,
            self.pipeline or context["ti"].dag_id,
            guarded_step(self, self.step),
            self.estimate_kg,
        )
        self.log.info("carbonpipe: %s", decision.message)
        if decision.allowed:
            return asdict(decision)
        if (self.on_exceed or self.budget.on_exceed) == "skip":
            raise AirflowSkipException(f"carbon budget: downstream skipped: {decision.message}")
        if decision.unavailable:  # an outage: a retry may find the ledger back
            raise AirflowException(f"carbon budget: {decision.message}")
        raise AirflowFailException(f"carbon budget: {decision.message}")
