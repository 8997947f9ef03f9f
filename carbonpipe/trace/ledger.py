"""Splitting measured energy between concurrent requests, segment by segment, on one worker thread.

Within a segment the set of requests in flight is constant, so its energy is split equally
among them; energy is conserved (:class:`TraceTotals`). Events that queue while a cut runs are
applied together at the next cut.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

from carbonpipe.trace.sampler import EnergySampler

log = logging.getLogger("carbonpipe.trace")

# A request whose start reached the meter later than this was partly unmeasured.
_LATE_BEGIN_S = 0.05


# -- server: the ledger -----------------------------------------------------------------------


@dataclass(frozen=True)
class TraceTotals:
    """What the middleware measured and reported so far; ``busy`` = while a request was in flight.

    Conservation: ``busy_energy_kwh == reported_energy_kwh + unreported_energy_kwh`` plus what
    requests still in flight have accrued.
    """

    requests: int
    in_flight: int
    busy_s: float
    busy_energy_kwh: float
    busy_cpu_energy_kwh: float
    busy_gpu_energy_kwh: float
    busy_ram_energy_kwh: float
    reported_energy_kwh: float
    unreported_energy_kwh: float
    failures: int


@dataclass(frozen=True)
class _Share:
    """One request's accrued energy, as handed to the event loop."""

    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    max_in_flight: int
    ok: bool
    measured: bool

    @property
    def energy_kwh(self) -> float:
        return self.cpu_energy_kwh + self.gpu_energy_kwh + self.ram_energy_kwh


class _Account:
    """One request's running account in the ledger."""

    __slots__ = ("cpu", "gpu", "ram", "max_in_flight", "ok", "late", "reported")

    def __init__(self, ok: bool, late: bool) -> None:
        self.cpu = self.gpu = self.ram = 0.0
        self.max_in_flight = 0
        self.ok = ok
        self.late = late
        self.reported = 0.0

    def share(self, measured: bool) -> _Share:
        return _Share(
            self.cpu,
            self.gpu,
            self.ram,
            self.max_in_flight,
            self.ok,
            measured and self.ok and not self.late,
        )


@dataclass
class _Event:
    kind: str  # "begin" | "end" | "peek" | "warm" | "close"
    rid: int = 0
    report: bool = True
    future: concurrent.futures.Future[_Share | None] | None = None
    at: float = field(default_factory=time.perf_counter)


class _Ledger:
    """Splits each segment's energy equally among the requests in flight during it.

    Only the worker thread calls :meth:`apply`; :meth:`totals` may be called from anywhere.
    """

    def __init__(self, sampler: EnergySampler, *, retry_after_s: float = 30.0) -> None:
        self._sampler = sampler
        self._retry_after_s = retry_after_s
        self._running = False
        self._failed_at: float | None = None
        self._accounts: dict[int, _Account] = {}
        self._lock = threading.Lock()
        self._requests = 0
        self._busy_s = 0.0
        self._busy = [0.0, 0.0, 0.0]
        self._reported = 0.0
        self._unreported = 0.0
        self._failures = 0

    def apply(self, events: list[_Event]) -> None:
        """Cut the open segment once, charge it to the requests in flight, then apply ``events``."""
        if self._running and any(e.kind in ("begin", "end", "peek", "close") for e in events):
            self._cut()
        for event in events:
            if event.kind == "begin":
                # Queued behind a slow start (hardware detection): its first moments went
                # unmeasured, charged to whoever was in flight, so it is not "measured".
                late = time.perf_counter() - event.at > _LATE_BEGIN_S
                self._accounts[event.rid] = _Account(ok=self._usable(), late=late)
            elif event.kind == "end":
                account = self._accounts.pop(event.rid, None)
                if account is not None:
                    self._close_account(account, event.report)
                _resolve(event.future, account, self._sampler_measured())
            elif event.kind == "peek":
                account = self._accounts.get(event.rid)
                if account is not None:
                    with self._lock:
                        self._reported += account.cpu + account.gpu + account.ram - account.reported
                    account.reported = account.cpu + account.gpu + account.ram
                _resolve(event.future, account, self._sampler_measured())
            elif event.kind == "warm":
                self._warm()
                _resolve(event.future, None)
            elif event.kind == "close":
                self._close_sampler()
                _resolve(event.future, None)
        n = len(self._accounts)
        for account in self._accounts.values():
            account.max_in_flight = max(account.max_in_flight, n)
        closing = any(e.kind == "close" for e in events)
        if self._accounts and not self._running and not closing and self._usable():
            self._start()
        for event in events:  # the meter runs now: the requests may go ahead
            if event.kind == "begin":
                _resolve(event.future, None)

    def totals(self) -> TraceTotals:
        """Return a consistent snapshot of the counters."""
        with self._lock:
            cpu, gpu, ram = self._busy
            return TraceTotals(
                requests=self._requests,
                in_flight=len(self._accounts),
                busy_s=self._busy_s,
                busy_energy_kwh=cpu + gpu + ram,
                busy_cpu_energy_kwh=cpu,
                busy_gpu_energy_kwh=gpu,
                busy_ram_energy_kwh=ram,
                reported_energy_kwh=self._reported,
                unreported_energy_kwh=self._unreported,
                failures=self._failures,
            )

    def _sampler_measured(self) -> bool:
        return bool(getattr(self._sampler, "measured", True))

    def _close_account(self, account: _Account, report: bool) -> None:
        total = account.cpu + account.gpu + account.ram
        with self._lock:
            self._requests += 1
            if report:
                self._reported += total - account.reported
            else:
                self._unreported += total - account.reported

    def _usable(self) -> bool:
        return self._failed_at is None or time.monotonic() - self._failed_at >= self._retry_after_s

    def _start(self) -> None:
        try:
            self._sampler.start()
        except Exception as exc:
            self._fail("start", exc)
            return
        self._running = True
        self._failed_at = None

    def _cut(self) -> None:
        self._running = False
        try:
            segment = self._sampler.stop()
            parts = (segment.cpu_energy_kwh, segment.gpu_energy_kwh, segment.ram_energy_kwh)
            if not all(isinstance(p, (int, float)) and math.isfinite(p) and p >= 0 for p in parts):
                raise ValueError(f"the sampler returned an impossible segment: {segment!r}")
        except Exception as exc:
            self._fail("stop", exc)
            return
        accounts = list(self._accounts.values())
        if accounts:
            k = len(accounts)
            for account in accounts:
                account.cpu += parts[0] / k
                account.gpu += parts[1] / k
                account.ram += parts[2] / k
            with self._lock:
                self._busy_s += max(segment.duration_s, 0.0)
                for i in range(3):
                    self._busy[i] += parts[i]

    def _warm(self) -> None:
        if self._running or self._accounts or not self._usable():
            return
        try:
            self._sampler.start()
            self._sampler.stop()
        except Exception as exc:
            self._fail("warm up", exc)

    def _close_sampler(self) -> None:
        self._running = False
        try:
            self._sampler.close()
        except Exception as exc:
            log.debug("carbonpipe: closing the energy sampler: %s", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        self._running = False
        first = self._failed_at is None
        self._failed_at = time.monotonic()
        for account in self._accounts.values():
            account.ok = False
        with self._lock:
            self._failures += 1
        (log.warning if first else log.debug)(
            "carbonpipe: energy sampler failed to %s, requests are served untracked "
            "(retry in %g s): %r",
            what,
            self._retry_after_s,
            exc,
        )


def _resolve(
    future: concurrent.futures.Future[_Share | None] | None,
    account: _Account | None,
    measured: bool = True,
) -> None:
    if future is None:
        return
    # The waiter may have given up (timeout, disconnect) and cancelled it.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(None if account is None else account.share(measured))


class _Worker:
    """The one thread that talks to the sampler; drains the event queue in batches."""

    def __init__(self, ledger: _Ledger) -> None:
        self.ledger = ledger
        self._queue: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, event: _Event) -> None:
        """Queue ``event``; never raises (a waiter then gets ``None``: untracked)."""
        try:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    # Daemon: a wedged CodeCarbon must never keep the server process alive. It
                    # sleeps on the queue when idle, so it outlives a lifespan shutdown harmlessly.
                    self._thread = threading.Thread(
                        target=self._run, name="carbonpipe-trace", daemon=True
                    )
                    self._thread.start()
            self._queue.put(event)
        except Exception as exc:
            log.warning("carbonpipe: x_carbon_trace accounting unavailable: %r", exc)
            _resolve(event.future, None)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.ledger.apply(batch)
            except Exception as exc:  # a bug here must not strand the waiters
                log.warning("carbonpipe: x_carbon_trace accounting failed: %r", exc)
                for event in batch:
                    _resolve(event.future, None)


def _positive_number(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ValueError(
            f"{name} must be a {'non-negative' if zero else 'positive'} number, got {value!r}"
        )
    return number
