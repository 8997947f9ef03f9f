"""``carbonpipe.optuna``: the Optuna integration, at the name users import it by.

It lives in :mod:`carbonpipe.integrations.optuna`; this module re-exports its public names.
"""

from __future__ import annotations

from carbonpipe.integrations.optuna import *  # noqa: F403 - the re-export is the point
from carbonpipe.integrations.optuna import __all__ as __all__
