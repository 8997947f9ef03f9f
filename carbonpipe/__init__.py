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
    "CarbonBudgetPruner": "carbonpipe.optuna",
    "CarbonTrialTracker": "carbonpipe.optuna",
    "extract_carbon_metrics": "carbonpipe.trace",
    "CodeCarbonMetrics": "carbonpipe.trace",
    "CarbonTraceMiddleware": "carbonpipe.trace",
    "CarbonTracker": "carbonpipe.tracker",
    "CarbonMetrics": "carbonpipe.tracker",
    "carbon_tracked": "carbonpipe.tracker",
    "current_step": "carbonpipe.tracker",
    "detect_location": "carbonpipe.cloud",
    "Location": "carbonpipe.cloud",
    "lookup_intensity": "carbonpipe.intensity",
    "Intensity": "carbonpipe.intensity",
    "Measurement": "carbonpipe.measure",
    "Record": "carbonpipe.record",
    "open_store": "carbonpipe.store",
    "Store": "carbonpipe.store",
    "Budget": "carbonpipe.budget",
    "BudgetLedger": "carbonpipe.budget",
    "BudgetGate": "carbonpipe.budget",
    "BudgetStatus": "carbonpipe.budget",
    "load_budgets": "carbonpipe.budget",
    "CarbonpipeError": "carbonpipe.errors",
    "CarbonRegression": "carbonpipe.errors",
    "ConfigError": "carbonpipe.errors",
    "BudgetExceeded": "carbonpipe.errors",
    "InvalidRecord": "carbonpipe.errors",
    "InvalidStoreURI": "carbonpipe.errors",
    "StoreUnavailable": "carbonpipe.errors",
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
    from carbonpipe.budget import Budget, BudgetGate, BudgetLedger, BudgetStatus, load_budgets
    from carbonpipe.cloud import Location, detect_location
    from carbonpipe.errors import (
        BudgetExceeded,
        CarbonpipeError,
        CarbonRegression,
        ConfigError,
        InvalidCarbonTrace,
        InvalidRecord,
        InvalidStoreURI,
        ObjectNotFound,
        PreconditionFailed,
        StorePermissionDenied,
        StoreUnavailable,
    )
    from carbonpipe.intensity import Intensity, lookup_intensity
    from carbonpipe.measure import Measurement
    from carbonpipe.optuna import CarbonBudgetPruner, CarbonTrialTracker
    from carbonpipe.record import Record
    from carbonpipe.store import Store, open_store
    from carbonpipe.trace import CarbonTraceMiddleware, CodeCarbonMetrics, extract_carbon_metrics
    from carbonpipe.tracker import CarbonMetrics, CarbonTracker, carbon_tracked, current_step
