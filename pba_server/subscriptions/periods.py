"""Calendar rules for subscription periods (UTC dates, no database).

A period is ``count`` x ``unit`` (day, month, year). Month and year periods
keep the subscription's *anchor day* (the day of month it started on): when a
month is shorter, the period ends on that month's last day, and the next one
returns to the anchor day. Started 31 Jan: periods end 28 Feb (29 in a leap
year), 31 Mar, 30 Apr, 31 May... Started 29 Feb 2028 yearly: 28 Feb 2029,
then 28 Feb 2030 and 2031, 29 Feb 2032. Given the anchor day, stepping from
a clipped end gives the same dates as stepping from the start: no drift.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta


def _add_months(start: date, months: int, anchor_day: int) -> date:
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(anchor_day, last))


def add_periods(
    start: date, count: int, unit: str, n: int = 1, *, anchor_day: int | None = None
) -> date:
    """The date ``n`` periods of ``count`` ``unit`` after ``start``.

    ``anchor_day`` defaults to ``start.day``; pass the subscription's anchor
    when ``start`` is itself a clipped date (a period end in a short month).
    """
    anchor = anchor_day or start.day
    if unit == "day":
        return start + timedelta(days=count * n)
    if unit == "month":
        return _add_months(start, count * n, anchor)
    if unit == "year":
        return _add_months(start, 12 * count * n, anchor)
    raise ValueError(f"unknown period unit {unit!r}")


def period_end(start: date, count: int, unit: str, anchor_day: int) -> date:
    """End (exclusive) of the period that begins on ``start``."""
    return add_periods(start, count, unit, anchor_day=anchor_day)


def days_between(a: date, b: date) -> int:
    return (b - a).days
