"""What the ledger answers: charges, reservations, a budget's status and the gate's decision.

Frozen values with units in their names; the ledger (:mod:`carbonpipe.budgets.ledger`) makes
them and the gate (:mod:`carbonpipe.budgets.gate`) passes them on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carbonpipe.budgets.charges import UG_PER_KG
from carbonpipe.errors import (
    BudgetExceeded,
    BudgetUnavailable,
)
from carbonpipe.record import utc_iso
from carbonpipe.units import NG_PER_KG, ng_to_kg

if TYPE_CHECKING:
    from carbonpipe.budgets.lease import LeaseKeeper

    pass


# ---------------------------------------------------------------------------------------------
# Value objects the ledger returns


# ---------------------------------------------------------------------------------------------
# Names, periods and amounts


def _ng_to_kg(ng: int) -> float:
    return ng_to_kg(ng)


@dataclass(frozen=True)
class ChargeEntry:
    """One charge as listed: the amount comes from the key, ``ended_at`` only from its body."""

    scope: str
    record_id: str
    emissions_ng: int
    date: str
    step: str
    key: str
    ended_at: str | None = None
    duration_s: float | None = None  # from its body too (charges since reservation leases)

    @property
    def emissions_kg_co2e(self) -> float:
        """The charged amount in kg CO2e."""
        return _ng_to_kg(self.emissions_ng)

    @property
    def emissions_ug(self) -> int:
        """The charged amount in whole micrograms (the ledger's unit before nanograms)."""
        return round(self.emissions_ng / (NG_PER_KG // UG_PER_KG))


@dataclass(frozen=True)
class Reservation:
    """A slice of a budget held for a running step until its record is charged or it expires."""

    reservation_id: str
    scope: str
    period: str
    period_id: str
    estimate_kg: float
    estimate_source: str
    created_at: datetime
    expires_at: datetime
    document_key: str


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands in its period; ``remaining_kg`` already subtracts reservations."""

    scope: str
    period: str
    period_id: str
    period_start: datetime | None
    period_end: datetime | None  # exclusive
    limit_kg: float
    warn_ratio: float
    used_kg: float
    reserved_kg: float
    remaining_kg: float
    percent: float
    burn_rate_kg_per_day: float
    days_left: float | None
    warning: bool
    exceeded: bool
    charges: int
    reservations: int
    on_exceed: str = "fail"

    def to_dict(self) -> dict[str, Any]:
        """Return the status as JSON-ready values (times as UTC ISO-8601)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = utc_iso(value) if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class _Usage:
    total_ng: int
    entries: dict[str, ChargeEntry] = field(default_factory=dict)
    first_date: str | None = None


@dataclass(frozen=True)
class StepEstimate:
    """What a step is expected to emit, and where the figure came from."""

    kg_co2e: float
    source: str  # given | baseline | last_run | default
    duration_s: float | None = None  # the last run's, when one is known: sizes the lease


@dataclass(frozen=True)
class GateDecision:
    """Whether a step fits its budget, with the figures; ``action`` is run, fail or skip.

    ``unavailable`` is true when the ledger could not be read in time: then ``store_error``
    says why, the usage figures are unknown (0), and the step is allowed only if its budget
    says ``when_unavailable="run"``.
    """

    allowed: bool
    action: str
    on_exceed: str
    scope: str
    period_id: str
    used_kg: float
    reserved_kg: float
    limit_kg: float
    estimate_kg: float
    estimate_source: str
    remaining_kg: float
    message: str
    unavailable: bool = False
    store_error: str = ""

    def to_exception(self) -> BudgetExceeded:
        """Return the :class:`BudgetExceeded` (or :class:`BudgetUnavailable`) a refused step raises."""
        if self.unavailable:
            return BudgetUnavailable(
                self.message,
                scope=self.scope,
                limit_kg=self.limit_kg,
                estimate_kg=self.estimate_kg,
                on_exceed=self.on_exceed,
                store_error=self.store_error,
            )
        return BudgetExceeded(
            self.message,
            scope=self.scope,
            used_kg=self.used_kg,
            reserved_kg=self.reserved_kg,
            limit_kg=self.limit_kg,
            estimate_kg=self.estimate_kg,
            on_exceed=self.on_exceed,
        )


@dataclass(frozen=True)
class Admission:
    """What the gate let a step start with: its reservation, or why it runs without one.

    ``reservation`` is None when the budget's ledger was unavailable and the budget says
    ``when_unavailable="run"``; ``notes`` then holds the line for the record's
    ``tracking_errors`` (the budget, the store's error, "ran ungated").
    """

    reservation: Reservation | None
    notes: tuple[str, ...] = ()
    keeper: LeaseKeeper | None = None  # renews the reservation's lease; stop it at the step's end
