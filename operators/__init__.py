"""Airflow provider for carbonpipe: carbon-tracked tasks, budget gates, a budget sensor and
starts shifted to a cleaner grid.

Importing this package costs a DAG file almost nothing: it imports neither Airflow nor
CodeCarbon, boto3 or pandas. Public names resolve on first use, and Airflow reads
:func:`get_provider_info` through the ``apache_airflow_provider`` entry point while it is
still initialising itself, so this module must never import ``airflow`` at top level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carbonpipe._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CarbonTrackedOperator": "carbonpipe.operators.tracked",
    "CarbonBudgetGateOperator": "carbonpipe.operators.gate",
    "CarbonBudgetSensor": "carbonpipe.operators.sensors",
    "CarbonBudgetTrigger": "carbonpipe.operators.triggers",
    "CarbonShiftOperator": "carbonpipe.operators.shift",
    "CarbonShiftTrigger": "carbonpipe.operators.triggers",
    "CarbonStoreHook": "carbonpipe.operators.hooks",
    "carbon_tracked_task": "carbonpipe.operators.decorators",
}

__all__ = sorted([*_EXPORTS, "get_provider_info"])


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ``ProvidersManager`` (``airflow providers list``)."""
    from carbonpipe import __version__

    return {
        "package-name": "carbonpipe",
        "name": "Carbonpipe",
        "description": (
            "Carbon accounting for Airflow tasks: CodeCarbon-measured tasks, records in object "
            "storage, carbon budget gates and a deferrable budget sensor."
        ),
        "versions": [__version__],
        "task-decorators": [
            {
                "name": "carbon_tracked",
                "class-name": "carbonpipe.operators.decorators.carbon_tracked_task",
            }
        ],
    }


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


if TYPE_CHECKING:  # names for type checkers; at run time __getattr__ imports them
    from carbonpipe.operators.decorators import carbon_tracked_task as carbon_tracked_task
    from carbonpipe.operators.gate import CarbonBudgetGateOperator as CarbonBudgetGateOperator
    from carbonpipe.operators.hooks import CarbonStoreHook as CarbonStoreHook
    from carbonpipe.operators.sensors import CarbonBudgetSensor as CarbonBudgetSensor
    from carbonpipe.operators.shift import CarbonShiftOperator as CarbonShiftOperator
    from carbonpipe.operators.tracked import CarbonTrackedOperator as CarbonTrackedOperator
    from carbonpipe.operators.triggers import CarbonBudgetTrigger as CarbonBudgetTrigger
    from carbonpipe.operators.triggers import CarbonShiftTrigger as CarbonShiftTrigger
