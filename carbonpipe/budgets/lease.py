"""A reservation is a lease: sized from the step's expected duration, renewed while the step lives.

A reservation holds part of a budget for a running step until its record is charged. A step
that is killed never charges, so its reservation must lapse soon, while a long step that is
alive must keep its own. So a reservation expires after a lease sized from the step's last run
(its duration x :data:`LEASE_MARGIN` + :data:`LEASE_SLACK_S`, at least :data:`MIN_LEASE_S`),
or the budget's ``lease_s`` when no run is known, and the live step renews it every third of the
lease from a daemon thread (:class:`LeaseKeeper`). A dead step stops renewing and its slice
frees when the lease runs out: minutes, not the six hours a fixed TTL used to hold.
"""

from __future__ import annotations

import logging
import threading

from carbonpipe.budgets.budget import MAX_LEASE_S, Budget
from carbonpipe.budgets.ledger import BudgetLedger
from carbonpipe.budgets.status import Reservation, StepEstimate
from carbonpipe.stores.breaker import background_calls

log = logging.getLogger("carbonpipe.budgets")

MIN_LEASE_S = 120.0
LEASE_MARGIN = 2.0
LEASE_SLACK_S = 60.0


def lease_for(budget: Budget, estimate: StepEstimate) -> float:
    """The lease of a step's reservation: from its last run's duration, else ``budget.lease_s``."""
    if estimate.duration_s is None:
        return budget.lease_s
    sized = estimate.duration_s * LEASE_MARGIN + LEASE_SLACK_S
    return min(max(sized, MIN_LEASE_S), MAX_LEASE_S)


class LeaseKeeper:
    """Renews one reservation every third of its lease until :meth:`stop` (the step's end).

    Renewal failures are logged and retried at the next tick; a lease that has lapsed (the store
    was unreachable for longer than the lease) is not revived, and the keeper stops.
    """

    def __init__(self, ledger: BudgetLedger, reservation: Reservation, lease_s: float) -> None:
        self.ledger = ledger
        self.reservation = reservation
        self.lease_s = float(lease_s)
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"carbonpipe-lease-{reservation.reservation_id}", daemon=True
        )

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (the charge replaces the reservation, or the step is being refused)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3.0):
            try:
                with background_calls():  # the step does not wait on these calls
                    alive = self.ledger.renew(self.reservation, self.lease_s)
            except Exception as exc:  # the store hiccups: the lease still has two thirds left
                log.warning(
                    "carbonpipe: could not renew the reservation of %s: %s",
                    self.reservation.reservation_id,
                    exc,
                )
                continue
            if not alive:
                log.warning(
                    "carbonpipe: the reservation of %s lapsed or was released; the step runs on "
                    "without one",
                    self.reservation.reservation_id,
                )
                return
            self.renewals += 1
