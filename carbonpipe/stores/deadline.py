"""A total deadline for one store call: it answers, fails, or gives up after ``timeout_s``.

The SDKs bound each socket operation, not a request: botocore's ``read_timeout`` and the GCS
client's ``timeout`` restart with every byte received, so a server that answers one byte every
few hundred milliseconds is never timed out, and retries multiply whatever a hung server costs.
:func:`call_with_deadline` runs the call on a daemon thread and stops waiting for it when the
deadline passes, raising :class:`StoreTimeout`. The abandoned call ends on its own (its socket
timeouts still apply) and can never block interpreter exit; a write it completes later is the
same create-if-absent or compare-and-swap, which the spool's replay reads as a duplicate.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TypeVar

from carbonpipe.errors import StoreTimeout
from carbonpipe.stores.uri import DEFAULT_STORE_TIMEOUT_S

T = TypeVar("T")

MAX_STORE_TIMEOUT_S = 3600.0

__all__ = ["DEFAULT_STORE_TIMEOUT_S", "MAX_STORE_TIMEOUT_S", "call_with_deadline", "check_timeout"]


def check_timeout(value: object, name: str = "timeout_s") -> float:
    """Return ``value`` as seconds in (0, 3600]; raise ``ValueError`` naming ``name`` otherwise.

    Strings are accepted, as the spool's envelopes keep every reopen option as text.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_STORE_TIMEOUT_S):
        raise ValueError(
            f"{name} must be more than 0 and at most {MAX_STORE_TIMEOUT_S:g} seconds, got {value!r}"
        )
    return seconds


def call_with_deadline(fn: Callable[[], T], timeout_s: float, what: Callable[[], str]) -> T:
    """Return ``fn()``, re-raise what it raised, or raise :class:`StoreTimeout` after ``timeout_s``.

    ``what`` describes the call for the error ("cannot read s3://b/k"); it is only called when
    the deadline passes.
    """
    outcome: list[object] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            failure.append(exc)
        finally:
            done.set()

    # A daemon thread, not a ThreadPoolExecutor: the executor's workers are joined at exit.
    worker = threading.Thread(target=run, name="carbonpipe-store-call", daemon=True)
    try:
        worker.start()
    except RuntimeError:  # interpreter shutdown: the exit replay's own bound still applies
        return fn()
    if not done.wait(timeout_s):
        raise StoreTimeout(
            f"{what()}: no complete answer within {timeout_s:g} s (store_timeout_s); "
            "the store is hung or too slow"
        )
    if failure:
        raise failure[0]
    return outcome[0]  # type: ignore[return-value]
