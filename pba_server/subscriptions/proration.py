"""Proration and change pricing: values in, values out, no database.

Day-based on the subscription's billing period, in UTC calendar dates. A
period runs from ``period_start`` (inclusive) to ``period_end`` (exclusive),
as :mod:`pba_server.subscriptions.periods` computes them (31 Jan -> 28 Feb is
a 28-day period; 28 Feb -> 31 Mar a 31-day one). A change effective on day
``on`` leaves ``(period_end - on).days`` of the period's
``(period_end - period_start).days`` unused: the customer used the old terms
up to (not including) ``on``.

Every prorated amount is ``full * remaining_days / total_days`` rounded
half-up to the currency's minor unit by :func:`pba_server.core.money.quantize`,
once, where it is computed; a change's net is the plain sum of its rounded
lines. Consequences (tested as properties in tests/test_proration.py):

- a prorated amount never exceeds the full-period amount, never goes below 0;
- a change and its reverse on the same day cost nothing (the credit of one is
  exactly the charge of the other, rounded the same way);
- a change on the first day of the period credits and charges whole periods;
  one on ``period_end`` (or later) prorates nothing.

Worked examples: docs/proration.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pba_server.core.money import quantize

ZERO = Decimal(0)


@dataclass(frozen=True)
class Window:
    """The part of a period left after a change on ``on``."""

    period_start: date
    period_end: date
    on: date

    def __post_init__(self) -> None:
        if self.period_end <= self.period_start:
            raise ValueError("a period ends after it starts")

    @property
    def total_days(self) -> int:
        return (self.period_end - self.period_start).days

    @property
    def remaining_days(self) -> int:
        start = max(self.on, self.period_start)
        return max((self.period_end - start).days, 0)

    @property
    def used_days(self) -> int:
        return self.total_days - self.remaining_days


def prorate(full: Decimal, window: Window, currency: str) -> Decimal:
    """The part of ``full`` (one whole period's price, >= 0) that falls in the
    window's remaining days, rounded to the currency."""
    if full < 0:
        raise ValueError("a period price is not negative")
    return quantize(full * window.remaining_days / window.total_days, currency)


@dataclass(frozen=True)
class PeriodPrice:
    """What one whole period of a subscription costs, line by line: the
    recurring fee and each resource's bought units (``key`` identifies a line
    across the old and new terms: ``"plan"`` or ``"resource:<id>"``)."""

    lines: Mapping[str, tuple[str, Decimal]]  # key -> (description, full-period amount)

    @property
    def total(self) -> Decimal:
        return sum((amount for _d, amount in self.lines.values()), ZERO)


@dataclass(frozen=True)
class ChangeLine:
    kind: str  # "credit" (unused part of the old terms) | "charge" (rest of period, new terms)
    key: str
    description: str
    full_amount: Decimal  # one whole period
    days: int  # remaining days prorated
    total_days: int
    amount: Decimal  # signed: credits negative


@dataclass(frozen=True)
class ChangePrice:
    lines: tuple[ChangeLine, ...]
    credit: Decimal  # <= 0
    charge: Decimal  # >= 0
    net: Decimal  # charge + credit: positive is owed, negative is credit to the customer


def change_price(old: PeriodPrice, new: PeriodPrice, window: Window, currency: str) -> ChangePrice:
    """Price a change from ``old`` to ``new`` terms effective on ``window.on``:
    a credit line for the unused part of every old line that changes, and a
    charge line for the rest of the period on every new line that changes.
    Lines with the same key and amount on both sides cancel and are left out
    (they would credit and charge the same rounded amount)."""
    lines: list[ChangeLine] = []
    keys = list(dict.fromkeys([*old.lines, *new.lines]))
    for key in keys:
        before = old.lines.get(key)
        after = new.lines.get(key)
        if before is not None and after is not None and before[1] == after[1]:
            continue
        if before is not None and before[1] != 0:
            amt = prorate(before[1], window, currency)
            if amt:
                lines.append(
                    ChangeLine(
                        "credit",
                        key,
                        f"Unused {window.remaining_days}/{window.total_days} days: {before[0]}",
                        before[1],
                        window.remaining_days,
                        window.total_days,
                        -amt,
                    )
                )
        if after is not None and after[1] != 0:
            amt = prorate(after[1], window, currency)
            if amt:
                lines.append(
                    ChangeLine(
                        "charge",
                        key,
                        f"{window.remaining_days}/{window.total_days} days: {after[0]}",
                        after[1],
                        window.remaining_days,
                        window.total_days,
                        amt,
                    )
                )
    credit = sum((ln.amount for ln in lines if ln.kind == "credit"), ZERO)
    charge = sum((ln.amount for ln in lines if ln.kind == "charge"), ZERO)
    return ChangePrice(tuple(lines), credit, charge, charge + credit)


def resource_price(
    unit_recurring_per_month: Decimal, units: Decimal, months: Decimal, currency: str
) -> Decimal:
    """One whole period's price of ``units`` bought units (rounded once)."""
    return quantize(unit_recurring_per_month * months * units, currency)


def refund_amount(
    paid: Decimal,
    window: Window,
    currency: str,
    *,
    policy: str,
    refund_days: int = 0,
    started_on: date | None = None,
) -> Decimal:
    """What a cancellation on ``window.on`` gives back of ``paid`` for the
    current period, by the plan's refund policy:

    - ``none``: nothing;
    - ``prorated``: the unused days' share of ``paid``;
    - ``full_within_days``: all of ``paid`` when cancelled within
      ``refund_days`` days of ``started_on`` (the subscription's start), else
      nothing.
    """
    if policy == "none" or paid <= 0:
        return quantize(ZERO, currency)
    if policy == "prorated":
        return prorate(paid, window, currency)
    if policy == "full_within_days":
        start = started_on or window.period_start
        if (window.on - start).days < refund_days:
            return quantize(paid, currency)
        return quantize(ZERO, currency)
    raise ValueError(f"unknown refund policy {policy!r}")
