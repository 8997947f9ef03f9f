"""Carbon budgets: a ledger many pods charge at once, and a gate before each step.

``budget`` (a :class:`Budget`'s definition and ``load_budgets``), ``period`` (the UTC window a
budget counts in), ``charges`` (the write side every step uses: key layout, ``charge_record``),
``ledger`` (:class:`BudgetLedger`: usage, reservations, status), ``status`` (the values it
answers), ``gate`` (:class:`BudgetGate`: estimate, then check or reserve).

May import: ``errors``, ``record``, ``stores`` and the standard library.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "Budget": "carbonpipe.budgets.budget",
    "DEFAULT_GATE_TIMEOUT_S": "carbonpipe.budgets.budget",
    "DEFAULT_WARN_RATIO": "carbonpipe.budgets.budget",
    "ON_EXCEED": "carbonpipe.budgets.budget",
    "WHEN_UNAVAILABLE": "carbonpipe.budgets.budget",
    "load_budgets": "carbonpipe.budgets.budget",
    "BASELINES_PREFIX": "carbonpipe.budgets.charges",
    "BUDGETS_PREFIX": "carbonpipe.budgets.charges",
    "Charge": "carbonpipe.budgets.charges",
    "SCOPE_KINDS": "carbonpipe.budgets.charges",
    "UG_PER_KG": "carbonpipe.budgets.charges",
    "baseline_key": "carbonpipe.budgets.charges",
    "charge_record": "carbonpipe.budgets.charges",
    "kg_to_ug": "carbonpipe.budgets.charges",
    "parse_scope": "carbonpipe.budgets.charges",
    "record_scopes": "carbonpipe.budgets.charges",
    "safe_name": "carbonpipe.budgets.charges",
    "scope_key": "carbonpipe.budgets.charges",
    "BudgetGate": "carbonpipe.budgets.gate",
    "BudgetLedger": "carbonpipe.budgets.ledger",
    "DEFAULT_RESERVATION_TTL_S": "carbonpipe.budgets.ledger",
    "LAST_RUN_LOOKBACK_MONTHS": "carbonpipe.budgets.ledger",
    "PERIODS": "carbonpipe.budgets.period",
    "PeriodWindow": "carbonpipe.budgets.period",
    "period_window": "carbonpipe.budgets.period",
    "Admission": "carbonpipe.budgets.status",
    "BudgetStatus": "carbonpipe.budgets.status",
    "ChargeEntry": "carbonpipe.budgets.status",
    "GateDecision": "carbonpipe.budgets.status",
    "Reservation": "carbonpipe.budgets.status",
    "StepEstimate": "carbonpipe.budgets.status",
}

__all__ = [
    "Admission",
    "BASELINES_PREFIX",
    "BUDGETS_PREFIX",
    "Budget",
    "BudgetGate",
    "BudgetLedger",
    "BudgetStatus",
    "Charge",
    "ChargeEntry",
    "DEFAULT_GATE_TIMEOUT_S",
    "DEFAULT_RESERVATION_TTL_S",
    "DEFAULT_WARN_RATIO",
    "GateDecision",
    "LAST_RUN_LOOKBACK_MONTHS",
    "ON_EXCEED",
    "PERIODS",
    "PeriodWindow",
    "Reservation",
    "SCOPE_KINDS",
    "StepEstimate",
    "UG_PER_KG",
    "WHEN_UNAVAILABLE",
    "baseline_key",
    "charge_record",
    "kg_to_ug",
    "load_budgets",
    "parse_scope",
    "period_window",
    "record_scopes",
    "safe_name",
    "scope_key",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

if TYPE_CHECKING:
    from carbonpipe.budgets.budget import (
        DEFAULT_GATE_TIMEOUT_S,
        DEFAULT_WARN_RATIO,
        ON_EXCEED,
        WHEN_UNAVAILABLE,
        Budget,
        load_budgets,
    )
    from carbonpipe.budgets.charges import (
        BASELINES_PREFIX,
        BUDGETS_PREFIX,
        SCOPE_KINDS,
        UG_PER_KG,
        Charge,
        baseline_key,
        charge_record,
        kg_to_ug,
        parse_scope,
        record_scopes,
        safe_name,
        scope_key,
    )
    from carbonpipe.budgets.gate import BudgetGate
    from carbonpipe.budgets.ledger import (
        DEFAULT_RESERVATION_TTL_S,
        LAST_RUN_LOOKBACK_MONTHS,
        BudgetLedger,
    )
    from carbonpipe.budgets.period import PERIODS, PeriodWindow, period_window
    from carbonpipe.budgets.status import (
        Admission,
        BudgetStatus,
        ChargeEntry,
        GateDecision,
        Reservation,
        StepEstimate,
    )
