"""``carbonpipe.optuna``: the Optuna integration, at the name users import it by.

It lives in :mod:`carbonpipe.integrations.optuna`; this module re-exports its public names.
"""

from __future__ import annotations

from carbonpipe.integrations.optuna import (
    CARBON_G_CO2,
    CARBON_INTENSITY,
    DURATION_S,
    ENERGY_KWH,
    N_STEPS,
    RECORD_ID,
    REMOTE_G_CO2,
    CarbonBudgetPruner,
    CarbonProjection,
    CarbonTrialTracker,
)

__all__ = [
    "CARBON_G_CO2",
    "CARBON_INTENSITY",
    "DURATION_S",
    "ENERGY_KWH",
    "N_STEPS",
    "RECORD_ID",
    "REMOTE_G_CO2",
    "CarbonBudgetPruner",
    "CarbonProjection",
    "CarbonTrialTracker",
]
