"""``CarbonBudgetSensor``: wait until a step fits its carbon budget, then let it run.

Deferrable like the Amazon provider's sensors: with ``deferrable=True`` the wait happens in the
triggerer (:class:`CarbonBudgetTrigger`), not in a worker slot; otherwise the sensor pokes.
``timeout`` bounds the wait in both modes. A ledger that cannot be read (within the budget's
``gate_timeout_s``) counts as "does not fit yet": the sensor keeps waiting and never succeeds
on an outage, unless the budget says ``when_unavailable="run"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from carbonpipe.operators.gate import check_budget, guarded_step
from carbonpipe.operators.hooks import CarbonStoreHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.status import GateDecision


class CarbonBudgetSensor(BaseSensorOperator):
    """Wait until the guarded step fits what is left of its carbon budget.

    :param budget: the :class:`carbonpipe.Budget` to check.
    :param pipeline: pipeline whose step is estimated (templated; default: the dag_id).
    :param step: the guarded step (templated; default: the sensor's only downstream task).
    :param estimate_kg: the step's estimate in kg CO2e, instead of its history.
    :param store: the store URI (templated; default: the carbonpipe configuration).
    :param aws_conn_id: Airflow connection holding the credentials of an ``s3://`` store.
    :param gcp_conn_id: Airflow connection holding the credentials of a ``gs://`` store.
    :param azure_conn_id: Airflow ``wasb`` connection holding the credentials of an ``az://`` store.
    :param deferrable: wait in the triggerer instead of a worker slot (default:
        ``[operators] default_deferrable``).
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
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
        azure_conn_id: str | None = "wasb_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.pipeline = pipeline
        self.step = step
        self.estimate_kg = estimate_kg
        self.store = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.azure_conn_id = azure_conn_id
        self.deferrable = deferrable

    def _decision(self, context: Context) -> GateDecision:
        hook = CarbonStoreHook(
            self.store,
            aws_conn_id=self.aws_conn_id,
            gcp_conn_id=self.gcp_conn_id,
            azure_conn_id=self.azure_conn_id,
        )
        return check_budget(
            hook.get_store(),
            self.budget,
            self.pipeline or context["ti"].dag_id,
            guarded_step(self, self.step),
            self.estimate_kg,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        decision = self._decision(context)
        self.log.info("carbonpipe: %s", decision.message)
        return PokeReturnValue(is_done=decision.allowed, xcom_value=asdict(decision))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self._defer(context)

    def _defer(self, context: Context) -> None:
        from carbonpipe.operators.triggers import CarbonBudgetTrigger

        self.defer(
            trigger=CarbonBudgetTrigger(
                budget=asdict(self.budget),
                pipeline=self.pipeline or context["ti"].dag_id,
                step=guarded_step(self, self.step),
                estimate_kg=self.estimate_kg,
                store=self.store,
                aws_conn_id=self.aws_conn_id,
                gcp_conn_id=self.gcp_conn_id,
                azure_conn_id=self.azure_conn_id,
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow.sdk.exceptions import AirflowException

        if not event or event.get("status") != "success":
            message = (event or {}).get("message", "no event")
            raise AirflowException(f"carbon budget sensor failed: {message}")
        decision = event.get("decision") or {}
        self.log.info("carbonpipe: %s", decision.get("message", "step fits its budget"))
        return decision
