"""Semester arithmetic: validity ends on 31 March (winter) and 31 October (summer).

All dates here are calendar dates in Europe/Warsaw.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time

from core.app.clock import WARSAW

__all__ = [
    "add_months",
    "end_of_day",
    "removal_deadline",
    "semester_end",
    "semester_start",
    "semester_starts_between",
]

WINTER_END = (3, 31)
SUMMER_END = (10, 31)
WINTER_START = (10, 1)
SUMMER_START = (3, 1)


def semester_end(today: date) -> date:
    """The validity date of the semester `today` falls in: 31 March for the winter semester
    (October to February), 31 October for the summer semester (March to September).

    The first of the two dates on or after today would be wrong in October and March, the
    months most students apply in: a credential issued on 5 October must last the winter
    semester (to 31 March), not die on 31 October.
    """
    start = semester_start(today)
    if start.month == WINTER_START[0]:
        return date(start.year + 1, *WINTER_END)
    return date(start.year, *SUMMER_END)


def semester_start(today: date) -> date:
    """The first day of the semester `today` falls in (1 October or 1 March)."""
    if today >= date(today.year, *WINTER_START):
        return date(today.year, *WINTER_START)
    if today >= date(today.year, *SUMMER_START):
        return date(today.year, *SUMMER_START)
    return date(today.year - 1, *WINTER_START)


def semester_starts_between(first: date, last: date) -> list[date]:
    """Every semester start in [first, last]."""
    starts = []
    for year in range(first.year - 1, last.year + 1):
        for month, day in (SUMMER_START, WINTER_START):
            start = date(year, month, day)
            if first <= start <= last:
                starts.append(start)
    return sorted(starts)


def add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def removal_deadline(removed_on: date) -> date:
    """A credential expires one month after removal from the student list, at the latest."""
    return add_months(removed_on, 1)


def end_of_day(day: date) -> datetime:
    """The last instant (UTC) of `day` in Warsaw: a credential valid until `day` is valid through it."""
    return datetime.combine(day, time.max, tzinfo=WARSAW).astimezone(UTC)
