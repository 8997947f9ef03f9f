"""The ``budget_gate`` component's body: does the next step fit its budget?"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from carbonpipe.errors import BudgetExceeded, BudgetUnavailable

if TYPE_CHECKING:
    pass
from carbonpipe.integrations.kfp.context import (
    MetricsArtifact,
    _given,
    _write_json,
    publish_metrics,
)

# ---------------------------------------------------------------------------------------------
# Budget gate


@dataclass(frozen=True)
class GateOutcome:
    """The ``budget_gate`` component's answer: its ``decision`` (run or skip, the value it
    returns), whether it ``fits`` (in its report and status metrics), why, and the report."""

    fits: bool
    decision: str
    message: str
    report: dict[str, Any]


def run_budget_gate(
    *,
    scope: str,
    limit_kg_co2e: float,
    period: str = "month",
    step: str = "",
    estimate_kg_co2e: float = -1.0,
    default_step_estimate_kg: float = 0.0,
    warn_ratio: float = 0.8,
    strict: bool = False,
    when_unavailable: str = "refuse",
    store: str = "",
    pipeline: str = "",
    run_id: str = "",
    run_name: str = "",
    metrics: MetricsArtifact | None = None,
    report_path: str | None = None,
) -> GateOutcome:
    """Decide, without reserving, whether ``step`` fits ``scope``'s budget, and report it.

    The estimate is ``estimate_kg_co2e`` when >= 0, else the step's baseline, its last run, or
    ``default_step_estimate_kg``. Writes the budget status to ``metrics`` and a JSON report to
    ``report_path``. When it does not fit and ``strict`` is true, raises
    :class:`BudgetExceeded` with the figures (which fails the KFP task).

    A ledger that cannot be read within the gate's deadline answers ``skip`` (``strict``:
    raises :class:`BudgetUnavailable`, naming the store's error), unless ``when_unavailable``
    is ``run``: then the answer is ``run`` and the report says the step runs ungated.
    """
    from carbonpipe._optional import one_line_when_missing

    one_line_when_missing()  # a missing extra ends the task with one line, not a traceback
    from carbonpipe.budgets.budget import Budget
    from carbonpipe.budgets.gate import BudgetGate
    from carbonpipe.budgets.ledger import BudgetLedger
    from carbonpipe.config import resolve_settings

    budget = Budget(
        scope=scope,
        period=period,
        limit_kg_co2e=float(limit_kg_co2e),
        warn_ratio=float(warn_ratio),
        on_exceed="fail" if strict else "skip",
        default_step_estimate_kg=float(default_step_estimate_kg),
        when_unavailable=_given(when_unavailable) or "refuse",
    )
    settings = resolve_settings(store=_given(store), pipeline=_given(pipeline))
    if settings.sources.get("pipeline") == "project" and budget.scope_kind == "pipeline":
        pipeline_name = budget.scope_name  # no pipeline given: the budget names it
    else:
        pipeline_name = settings.pipeline
    step_name = _given(step) or "step"
    ledger = BudgetLedger(settings.open_store())  # every call bounded by store_timeout_s
    gate = BudgetGate(ledger, budget.on_book())  # a total-basis budget: the total book
    estimate = None if estimate_kg_co2e is None or estimate_kg_co2e < 0 else float(estimate_kg_co2e)
    decision = gate.check(pipeline_name, step_name, estimate_kg=estimate)
    status = None
    if not decision.unavailable:
        try:
            status = ledger.status(budget.on_book())
        except Exception as exc:  # the decision stands; only the figures for the UI are missing
            print(f"carbonpipe: budget status unavailable: {exc}", file=sys.stderr)
    verdict = "run" if decision.allowed else "skip"
    report = {
        "fits": decision.allowed,
        "decision": verdict,
        "strict": bool(strict),
        "message": decision.message,
        "pipeline": pipeline_name,
        "step": step_name,
        "run_id": _given(run_id),
        "run_name": _given(run_name),
        "store": ledger.store.uri,
        "checked_at": datetime.now(timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "gate": asdict(decision),
        "status": None if status is None else status.to_dict(),
    }
    shown: dict[str, float | None] = {
        "fits": 1.0 if decision.allowed else 0.0,
        "ledger_unavailable": 1.0 if decision.unavailable else 0.0,
        "limit_kg_co2e": decision.limit_kg,
        "estimate_kg_co2e": decision.estimate_kg,
    }
    if status is not None:
        shown.update(
            budget_percent=status.percent,
            used_kg_co2e=status.used_kg,
            reserved_kg_co2e=status.reserved_kg,
            remaining_kg_co2e=status.remaining_kg,
            limit_kg_co2e=status.limit_kg,
            burn_rate_kg_per_day=status.burn_rate_kg_per_day,
            days_left=status.days_left,
        )
    publish_metrics(metrics, shown)
    _write_json(report_path, report)
    print(
        f"carbonpipe: budget gate for {step_name}: {verdict}: {decision.message}", file=sys.stderr
    )
    if not decision.allowed and strict and decision.unavailable:
        raise BudgetUnavailable(
            f"carbon budget gate (strict) refused step {step_name!r}: {decision.message}",
            scope=decision.scope,
            limit_kg=decision.limit_kg,
            estimate_kg=decision.estimate_kg,
            on_exceed="fail",
            store_error=decision.store_error,
        )
    if not decision.allowed and strict:
        raise BudgetExceeded(
            f"carbon budget gate (strict) refused step {step_name!r}: {decision.message}",
            scope=decision.scope,
            used_kg=decision.used_kg,
            reserved_kg=decision.reserved_kg,
            limit_kg=decision.limit_kg,
            estimate_kg=decision.estimate_kg,
            on_exceed="fail",
        )
    return GateOutcome(decision.allowed, verdict, decision.message, report)
