"""The step identity check ``carbonpipe run`` makes before anything else is loaded.

Imports nothing, like :mod:`carbonpipe.stores.uri` and :mod:`carbonpipe.location.providers`,
whose checks the wrapper runs at the same moment.
"""

from __future__ import annotations


def check_attempt(attempt: object, *, name: str = "attempt") -> None:
    """Refuse an attempt number that is not an integer >= 1 (``None``: the next attempt)."""
    if attempt is not None and (
        isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {attempt!r}")
