"""Budget periods: the UTC window (month, quarter, year or total) a budget counts in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

PERIODS = ("month", "quarter", "year", "total")


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return ts.astimezone(timezone.utc)


@dataclass(frozen=True)
class PeriodWindow:
    """One UTC budget period: its id and ``[start, end)``; ``total`` has no bounds."""

    period: str
    period_id: str
    start: datetime | None
    end: datetime | None

    @property
    def date_prefixes(self) -> tuple[str, ...]:
        """The ``date=`` key prefixes whose listing covers exactly this period."""
        if self.start is None:
            return ("",)
        if self.period == "year":
            return (f"date={self.start:%Y}-",)
        months = 3 if self.period == "quarter" else 1
        return tuple(
            f"date={self.start.year:04d}-{self.start.month + i:02d}-" for i in range(months)
        )

    @property
    def key_part(self) -> str:
        """The key part naming the period, e.g. ``month=2026-11``."""
        return f"{self.period}={self.period_id}"


def period_window(period: str, at: datetime) -> PeriodWindow:
    """Return the UTC period of kind ``period`` that contains ``at``."""
    if period not in PERIODS:
        raise ValueError(f"period {period!r} is not one of {', '.join(PERIODS)}")
    at = _utc(at)
    if period == "total":
        return PeriodWindow("total", "all", None, None)
    if period == "year":
        start = datetime(at.year, 1, 1, tzinfo=timezone.utc)
        return PeriodWindow("year", f"{at.year:04d}", start, start.replace(year=at.year + 1))
    first_month = at.month if period == "month" else 3 * ((at.month - 1) // 3) + 1
    start = datetime(at.year, first_month, 1, tzinfo=timezone.utc)
    end = _add_months(start, 1 if period == "month" else 3)
    period_id = f"{at:%Y-%m}" if period == "month" else f"{at.year:04d}-Q{(first_month + 2) // 3}"
    return PeriodWindow(period, period_id, start, end)


def _add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)
