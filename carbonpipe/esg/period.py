"""Reporting periods: a year, a month, a quarter or a date range, as ``carbonpipe esg`` names them."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------------
# Periods


@dataclass(frozen=True)
class Period:
    """A reporting period: inclusive UTC dates and the label artifacts are filed under."""

    label: str
    kind: str  # month | quarter | year | range
    start: date
    end: date  # inclusive

    @property
    def n_days(self) -> int:
        """Number of days in the period."""
        return (self.end - self.start).days + 1

    def days(self) -> list[date]:
        """Every UTC date in the period."""
        return [self.start + timedelta(days=i) for i in range(self.n_days)]

    def months(self) -> list[str]:
        """Every ``YYYY-MM`` the period touches."""
        return sorted({d.isoformat()[:7] for d in self.days()})

    @property
    def end_exclusive(self) -> datetime:
        """The first instant after the period (UTC)."""
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time(), timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        """Return the period as the report prints it."""
        return {
            "label": self.label,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.n_days,
            "timezone": "UTC",
        }


_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:_|\.\.)(\d{4}-\d{2}-\d{2})$")
PERIOD_FORMS = "YYYY (2026), YYYY-MM (2026-11), YYYY-Qn (2026-Q4) or START_END dates"


def parse_period(
    period: str | Period | None = None, *, start: date | None = None, end: date | None = None
) -> Period:
    """Parse ``2026``, ``2026-11``, ``2026-Q4`` or ``2026-11-03_2026-11-20``; or take start/end."""
    if isinstance(period, Period):
        return period
    if period is None:
        if start is None or end is None:
            raise ValueError(f"give a period ({PERIOD_FORMS}) or both start and end dates")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        return Period(f"{start.isoformat()}_{end.isoformat()}", "range", start, end)
    if start is not None or end is not None:
        raise ValueError("give a period or start/end dates, not both")
    text = str(period).strip()
    if m := _YEAR.match(text):
        y = int(m[1])
        return Period(text, "year", date(y, 1, 1), date(y, 12, 31))
    if m := _MONTH.match(text):
        y, mo = int(m[1]), int(m[2])
        return Period(text, "month", date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1]))
    if m := _QUARTER.match(text):
        y, q = int(m[1]), int(m[2])
        first = 3 * q - 2
        last = date(y, first + 2, calendar.monthrange(y, first + 2)[1])
        return Period(f"{y:04d}-Q{q}", "quarter", date(y, first, 1), last)
    if m := _RANGE.match(text):
        try:
            a, b = date.fromisoformat(m[1]), date.fromisoformat(m[2])
        except ValueError as exc:
            raise ValueError(f"period {period!r}: {exc}") from None
        return parse_period(None, start=a, end=b)
    raise ValueError(f"period {period!r} is not one of {PERIOD_FORMS}")
