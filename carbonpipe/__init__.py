"""carbonpipe: carbon accounting inside ML pipelines.

Public names resolve lazily, so ``import carbonpipe`` (and every DAG file that imports our
Airflow operators) costs almost nothing: CodeCarbon, boto3 and friends load on first use.
"""

from __future__ import annotations

from carbonpipe._lazy import lazy_exports

TYPE_CHECKING = False  # typing alone costs a fresh interpreter ~12 ms; the checkers know this name

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "InvalidCarbonTrace": "carbonpipe.errors",
    "CarbonBudgetPruner": "carbonpipe.integrations.optuna",
    "CarbonTrialTracker": "carbonpipe.integrations.optuna",
    "extract_carbon_metrics": "carbonpipe.trace.client",
    "CodeCarbonMetrics": "carbonpipe.trace.client",
    "CarbonTraceMiddleware": "carbonpipe.trace.middleware",
    "CarbonTracker": "carbonpipe.tracker",
    "CarbonMetrics": "carbonpipe.step",
    "carbon_tracked": "carbonpipe.tracker",
    "current_step": "carbonpipe.step",
    "detect_location": "carbonpipe.location.detect",
    "Location": "carbonpipe.location.detect",
    "lookup_intensity": "carbonpipe.intensity.table",
    "Intensity": "carbonpipe.intensity.base",
    "Measurement": "carbonpipe.measure.base",
    "Record": "carbonpipe.record",
    "open_store": "carbonpipe.stores.opener",
    "Store": "carbonpipe.stores.base",
    "Budget": "carbonpipe.budgets.budget",
    "BudgetLedger": "carbonpipe.budgets.ledger",
    "BudgetGate": "carbonpipe.budgets.gate",
    "BudgetStatus": "carbonpipe.budgets.status",
    "load_budgets": "carbonpipe.budgets.budget",
    "CarbonpipeError": "carbonpipe.errors",
    "CarbonRegression": "carbonpipe.errors",
    "ConfigError": "carbonpipe.errors",
    "BudgetExceeded": "carbonpipe.errors",
    "BudgetUnavailable": "carbonpipe.errors",
    "InvalidRecord": "carbonpipe.errors",
    "InvalidStoreURI": "carbonpipe.errors",
    "StoreUnavailable": "carbonpipe.errors",
    "StoreTimeout": "carbonpipe.errors",
    "StorePermissionDenied": "carbonpipe.errors",
    "PreconditionFailed": "carbonpipe.errors",
    "ObjectNotFound": "carbonpipe.errors",
}

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetGate",
    "BudgetLedger",
    "BudgetStatus",
    "BudgetUnavailable",
    "CarbonBudgetPruner",
    "CarbonMetrics",
    "CarbonRegression",
    "CarbonTraceMiddleware",
    "CarbonTracker",
    "CarbonTrialTracker",
    "CarbonpipeError",
    "CodeCarbonMetrics",
    "ConfigError",
    "Intensity",
    "InvalidCarbonTrace",
    "InvalidRecord",
    "InvalidStoreURI",
    "Location",
    "Measurement",
    "ObjectNotFound",
    "PreconditionFailed",
    "Record",
    "Store",
    "StorePermissionDenied",
    "StoreTimeout",
    "StoreUnavailable",
    "__version__",
    "carbon_tracked",
    "current_step",
    "detect_location",
    "extract_carbon_metrics",
    "load_budgets",
    "lookup_intensity",
    "open_store",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


if TYPE_CHECKING:
    from carbonpipe.budgets.budget import Budget, load_budgets
    from carbonpipe.budgets.gate import BudgetGate
    from carbonpipe.budgets.ledger import BudgetLedger
    from carbonpipe.budgets.status import BudgetStatus
    from carbonpipe.errors import (
        BudgetExceeded,
        BudgetUnavailable,
        CarbonpipeError,
        CarbonRegression,
        ConfigError,
        InvalidCarbonTrace,
        InvalidRecord,
        InvalidStoreURI,
        ObjectNotFound,
        PreconditionFailed,
        StorePermissionDenied,
        StoreTimeout,
        StoreUnavailable,
    )
    from carbonpipe.integrations.optuna import CarbonBudgetPruner, CarbonTrialTracker
    from carbonpipe.intensity.base import Intensity
    from carbonpipe.intensity.table import lookup_intensity
    from carbonpipe.location.detect import Location, detect_location
    from carbonpipe.measure.base import Measurement
    from carbonpipe.record import Record
    from carbonpipe.step import CarbonMetrics, current_step
    from carbonpipe.stores.base import Store
    from carbonpipe.stores.opener import open_store
    from carbonpipe.trace.client import CodeCarbonMetrics, extract_carbon_metrics
    from carbonpipe.trace.middleware import CarbonTraceMiddleware
    from carbonpipe.tracker import CarbonTracker, carbon_tracked
