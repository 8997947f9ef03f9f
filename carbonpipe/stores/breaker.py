"""A store's circuit breaker: once a call has made the step wait its deadline, stop calling.

Each call to an object store is bounded by ``store_timeout_s`` (:mod:`carbonpipe.stores.deadline`),
but a tracked step makes several (baseline read, record, ledger charges, budget status): against
a hung store each would wait its own deadline. :class:`BreakerStore` wraps the tracker's store
and *opens* after one call times out, or after failed calls have together taken the deadline;
while open, every call raises :class:`StoreTimeout` at once, without a request, so the record
goes straight to the spool. The tracker closes it again when the next step starts, and it
closes by itself after ``cooldown_s``.

The deadline is one budget for the whole step, not one per call: the seconds failed calls took
are counted for the process (all its breakers together, since the last :meth:`BreakerStore.reset`),
and once some were spent, the next call is only given what is left. So a step pays a stalled or
failing store at most one deadline in all, however many objects it writes.

The process remembers which breakers are open, the longest deadline it has used and what it has
spent of it, even after the breakers themselves are gone: the spool replay at exit skips while
one is open (``carbonpipe flush`` or the next run delivers) and otherwise waits at most what is
left of the deadline (:func:`exit_wait_s`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from carbonpipe.errors import StoreTimeout, StoreUnavailable
from carbonpipe.stores.base import Store, StoredObject
from carbonpipe.stores.deadline import DEFAULT_STORE_TIMEOUT_S, call_with_deadline, check_timeout

T = TypeVar("T")

DEFAULT_COOLDOWN_S = 60.0
TIMEOUT_ENV = "CARBONPIPE_STORE_TIMEOUT_S"

_registry_lock = threading.Lock()
_open_until: dict[int, float] = {}  # id of an open breaker -> when it cools down (monotonic)
_longest_s: float | None = None
_spent_s = 0.0  # seconds this process's failed store calls took since the last reset
_exit_until: float | None = None  # when the exit's waits end (monotonic), fixed by the first
_background = threading.local()  # .on: calls of this thread do not make the step wait


class BreakerStore(Store):
    """``inner``, with calls refused at once for a while after one of them timed out.

    Args:
        inner: the store every call goes to while the breaker is closed.
        timeout_s: the deadline that failed calls may add up to before the breaker opens;
            by default ``inner.timeout_s`` (the backends' ``store_timeout_s``).
        cooldown_s: seconds after which an open breaker lets the next call try again.
    """

    def __init__(
        self,
        inner: Store,
        *,
        timeout_s: float | None = None,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
    ) -> None:
        if not isinstance(inner, Store):
            raise TypeError(f"inner must be a carbonpipe Store, got {type(inner).__name__}")
        if timeout_s is None:
            timeout_s = getattr(inner, "timeout_s", None) or DEFAULT_STORE_TIMEOUT_S
        self.inner = inner
        self.uri = inner.uri
        self.timeout_s = check_timeout(timeout_s)
        self.cooldown_s = check_timeout(cooldown_s, "cooldown_s")
        self._lock = threading.Lock()
        self._opened_at: float | None = None
        self._reason = ""
        self._failed_s = 0.0
        global _longest_s
        with _registry_lock:
            _longest_s = max(_longest_s or 0.0, self.timeout_s)

    # -- the breaker ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether calls are refused now (open, and not yet cooled down)."""
        with self._lock:
            return self._opened_at is not None and not self._cooled(time.monotonic())

    def reset(self) -> None:
        """Close the breaker and forget earlier failures (the tracker does so at each step).

        The process's spent deadline starts again from zero: a new step, a new deadline.
        """
        global _spent_s
        with self._lock:
            self._opened_at, self._reason, self._failed_s = None, "", 0.0
        with _registry_lock:
            _open_until.pop(id(self), None)
            _spent_s = 0.0

    def _cooled(self, now: float) -> bool:
        return self._opened_at is not None and now - self._opened_at >= self.cooldown_s

    def _admit(self) -> None:
        """Raise at once while the breaker is open; close it once cooled down."""
        now = time.monotonic()
        with self._lock:
            if self._opened_at is None:
                return
            if self._cooled(now):  # a new try, with a whole deadline again
                global _spent_s
                self._opened_at, self._reason, self._failed_s = None, "", 0.0
                with _registry_lock:
                    _open_until.pop(id(self), None)
                    _spent_s = 0.0
                return
            ago, reason = now - self._opened_at, self._reason
        raise StoreTimeout(
            f"{self.uri} not called: it made this step wait {self.timeout_s:g} s "
            f"(store_timeout_s) {ago:.1f} s ago ({reason}); tried again at the next step "
            f"or after {self.cooldown_s:g} s"
        )

    def _failed(self, exc: StoreUnavailable, elapsed_s: float) -> None:
        global _spent_s
        waited_s = 0.0 if in_background() else elapsed_s
        with _registry_lock:
            _spent_s += waited_s
            spent = _spent_s
        with self._lock:
            self._failed_s += waited_s
            if self._opened_at is None and (
                isinstance(exc, StoreTimeout) or max(self._failed_s, spent) >= self.timeout_s
            ):
                self._opened_at = time.monotonic()
                self._reason = str(exc)[:300]
                with _registry_lock:
                    _open_until[id(self)] = self._opened_at + self.cooldown_s

    def _guard(self, fn: Callable[[], T]) -> T:
        self._admit()
        left = self.timeout_s if in_background() else self.timeout_s - spent_s()
        if left <= 0:  # another breaker of this step spent the deadline: open this one too
            exc = StoreTimeout(
                f"{self.uri} not called: this step already waited {self.timeout_s:g} s "
                "(store_timeout_s) on failing store calls"
            )
            self._failed(exc, 0.0)
            raise exc
        start = time.monotonic()
        try:
            if left < self.timeout_s:  # earlier failures spent part of the deadline
                return call_with_deadline(fn, left, lambda: f"cannot call {self.uri}")
            return fn()
        except StoreUnavailable as exc:
            self._failed(exc, time.monotonic() - start)
            raise

    # -- the Store interface --------------------------------------------------------------

    def put_if_absent(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str:
        return self._guard(lambda: self.inner.put_if_absent(key, data, content_type=content_type))

    def replace(
        self,
        key: str,
        data: bytes,
        *,
        if_version: str,
        content_type: str = "application/json",
    ) -> str:
        return self._guard(
            lambda: self.inner.replace(key, data, if_version=if_version, content_type=content_type)
        )

    def get(self, key: str) -> StoredObject:
        return self._guard(lambda: self.inner.get(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = self._guard(lambda: iter(self.inner.list(prefix)))
        while True:
            key = self._guard(lambda: next(keys, None))
            if key is None:
                return
            yield key

    def delete(self, key: str) -> None:
        self._guard(lambda: self.inner.delete(key))

    def put_artifact(self, key: str, data: bytes, *, content_type: str) -> str:
        return self._guard(lambda: self.inner.put_artifact(key, data, content_type=content_type))

    def url_for(self, key: str) -> str:
        return self.inner.url_for(key)

    def reopen_options(self) -> dict[str, str]:
        return self.inner.reopen_options()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # The backend's own attributes (bucket, prefix, root, client ...) stay reachable.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"BreakerStore({self.inner!r}, {state})"


def any_open() -> bool:
    """Whether a breaker of this process is open now (a store timed out, not yet cooled down)."""
    now = time.monotonic()
    with _registry_lock:
        return any(until > now for until in _open_until.values())


class background_calls:  # noqa: N801 - used as a context manager, like contextlib's
    """Calls of this thread, inside the ``with``, are not the step's wait.

    For daemon threads that call the store while the step runs (the budget lease's renewals):
    their failures neither use up the step's deadline nor are cut short by it. A timeout still
    opens the breaker, since it says the store is hung.
    """

    def __enter__(self) -> None:
        self._was = getattr(_background, "on", False)
        _background.on = True

    def __exit__(self, *exc: object) -> None:
        _background.on = self._was


def in_background() -> bool:
    """Whether this thread is inside :class:`background_calls`."""
    return bool(getattr(_background, "on", False))


def new_step() -> None:
    """Start a new step's deadline: forget what failed calls took before (open breakers stay)."""
    global _spent_s
    with _registry_lock:
        _spent_s = 0.0


def spent_s() -> float:
    """Seconds this process's failed store calls took since a breaker was last reset."""
    with _registry_lock:
        return _spent_s


def exit_wait_s() -> float:
    """How long the spool replay at exit may keep the interpreter: what is left of the deadline.

    Zero while a breaker is open; otherwise :func:`longest_deadline` less what failed calls
    already took, so a step and its exit replay wait one deadline together, not one each.
    """
    if any_open():
        return 0.0
    return max(0.0, longest_deadline() - spent_s())


def exit_wait_left() -> float:
    """Seconds an exit hook may still wait; every exit hook of the process shares one deadline.

    The first call fixes the end (now + :func:`exit_wait_s`); later calls get what is left of it,
    so the spool's exit replay and the lost-step sweep do not wait one deadline each.
    """
    global _exit_until
    wait_s = exit_wait_s()
    now = time.monotonic()
    with _registry_lock:
        if _exit_until is None:
            _exit_until = now + wait_s
        return max(0.0, min(wait_s, _exit_until - now))


def longest_deadline() -> float:
    """The longest deadline of this process's breakers, else ``CARBONPIPE_STORE_TIMEOUT_S``, else 5 s.

    What the spool replay at exit may keep the interpreter waiting, at most.
    """
    with _registry_lock:
        if _longest_s is not None:
            return _longest_s
    try:
        return check_timeout(os.environ.get(TIMEOUT_ENV) or DEFAULT_STORE_TIMEOUT_S)
    except ValueError:
        return DEFAULT_STORE_TIMEOUT_S
