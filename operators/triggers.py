"""``CarbonBudgetTrigger``: wait in the triggerer until a step fits its carbon budget.

It asks the ledger every ``poke_interval`` seconds (the store calls run in a thread, off the
event loop) and fires once the step fits, for instance when a new budget period starts or a
reservation expires. A ledger that cannot be read is "does not fit yet" (it keeps waiting,
unless the budget says ``when_unavailable="run"``); any other failure is reported as an
``error`` event, never raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.triggers.base import BaseTrigger, TriggerEvent

from carbonpipe.operators.hooks import CarbonStoreHook


class CarbonBudgetTrigger(BaseTrigger):
    """Fire when ``step`` of ``pipeline`` fits ``budget``.

    :param budget: the budget's fields (``dataclasses.asdict(Budget(...))``), so the trigger
        serialises.
    :param pipeline: pipeline whose step is estimated.
    :param step: the step whose estimate must fit.
    :param estimate_kg: the step's estimate in kg CO2e, instead of its history.
    :param store: the store URI (default: the carbonpipe configuration).
    :param aws_conn_id: Airflow connection holding the credentials of an ``s3://`` store.
    :param gcp_conn_id: Airflow connection holding the credentials of a ``gs://`` store.
    :param azure_conn_id: Airflow ``wasb`` connection holding the credentials of an ``az://`` store.
    :param poke_interval: seconds between two checks.
    """

    def __init__(
        self,
        *,
        budget: dict[str, Any],
        pipeline: str,
        step: str,
        estimate_kg: float | None = None,
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
        azure_conn_id: str | None = "wasb_default",
        poke_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.budget = dict(budget)
        self.pipeline = pipeline
        self.step = step
        self.estimate_kg = estimate_kg
        self.store = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.azure_conn_id = azure_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "budget": self.budget,
                "pipeline": self.pipeline,
                "step": self.step,
                "estimate_kg": self.estimate_kg,
                "store": self.store,
                "aws_conn_id": self.aws_conn_id,
                "gcp_conn_id": self.gcp_conn_id,
                "azure_conn_id": self.azure_conn_id,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from carbonpipe.budgets.budget import Budget
        from carbonpipe.operators.gate import check_budget

        try:
            budget = Budget(**self.budget)
            hook = CarbonStoreHook(
                self.store,
                aws_conn_id=self.aws_conn_id,
                gcp_conn_id=self.gcp_conn_id,
                azure_conn_id=self.azure_conn_id,
            )
            store = await hook.aget_store()
            while True:
                decision = await asyncio.to_thread(
                    check_budget, store, budget, self.pipeline, self.step, self.estimate_kg
                )
                if decision.allowed:
                    yield TriggerEvent({"status": "success", "decision": asdict(decision)})
                    return
                self.log.info("carbonpipe: waiting %ss: %s", self.poke_interval, decision.message)
                await asyncio.sleep(self.poke_interval)
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})


class CarbonShiftTrigger(BaseTrigger):
    """Fire at the planned start of a shifted step, re-planning as the forecast updates.

    Every ``replan_interval_s`` seconds of waiting it reads the forecast again
    (:func:`carbonpipe.intensity.scheduling.replan`) and moves the start if a newer forecast
    says so, never past the plan's deadline; a forecast that cannot be read keeps the plan.
    It fires once the planned start is reached, with the plan as the event's ``plan``.

    :param plan: the plan (``StartPlan.to_dict()``), so the trigger serialises.
    :param source: the time-series source spec (``file:PATH``, ``electricitymaps``, ...), or
        None (no re-planning).
    :param zone: the grid zone.
    :param replan_interval_s: seconds between two readings of the forecast.
    :param timeout_s: what one reading of the source may take.
    """

    def __init__(
        self,
        *,
        plan: dict[str, Any],
        source: str | None = None,
        zone: str | None = None,
        replan_interval_s: float = 900.0,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.plan = dict(plan)
        self.source = source
        self.zone = zone
        self.replan_interval_s = replan_interval_s
        self.timeout_s = timeout_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "plan": self.plan,
                "source": self.source,
                "zone": self.zone,
                "replan_interval_s": self.replan_interval_s,
                "timeout_s": self.timeout_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from datetime import datetime, timezone

        from carbonpipe.intensity.planner import StartPlan
        from carbonpipe.intensity.scheduling import configured_source, replan

        try:
            plan = StartPlan.from_dict(self.plan)
            source = None
            if self.source:
                try:
                    source = (await asyncio.to_thread(configured_source, self.source, self.zone))[0]
                except Exception as exc:  # the plan stands; it is not re-planned
                    self.log.warning("carbonpipe: cannot re-plan with %s: %s", self.source, exc)
            while True:
                now = datetime.now(timezone.utc)
                start = min(plan.planned_start, plan.deadline)
                if now >= start:
                    yield TriggerEvent({"status": "success", "plan": plan.to_dict()})
                    return
                await asyncio.sleep(min((start - now).total_seconds(), self.replan_interval_s))
                now = datetime.now(timezone.utc)
                if source is not None and now < plan.planned_start:
                    fresh = await asyncio.to_thread(
                        replan, plan, source, now=now, timeout_s=self.timeout_s
                    )
                    if fresh.planned_start != plan.planned_start:
                        self.log.info("carbonpipe: re-planned: %s", fresh.reason)
                    plan = fresh
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
