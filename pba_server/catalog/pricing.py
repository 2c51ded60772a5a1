"""Pricing rules: values in, values out, no database.

The one function :func:`price_period` prices one period of a subscription:
``PriceQuote`` calls it for the first period, and the billing run and orders
must call it too, so a quote always equals what is later invoiced (before tax).

Rounding: every line is rounded half-up to the currency's minor unit once,
where it is computed (:func:`pba_server.core.money.quantize`); subtotals and
totals are plain sums of rounded lines, so a total always equals the sum of
its lines. Resource recurring and overage prices are per unit and month; a
period in years counts 12 months, a period in days ``days / 30`` months.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pba_server.core.errors import ValidationError
from pba_server.core.money import quantize

ZERO = Decimal(0)
HUNDRED = Decimal(100)
DAYS_PER_MONTH = Decimal(30)
PERIOD_UNITS = ("day", "month", "year")


@dataclass(frozen=True)
class Period:
    count: int
    unit: str

    def label(self) -> str:
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"


def months_in(period: Period) -> Decimal:
    if period.unit == "month":
        return Decimal(period.count)
    if period.unit == "year":
        return Decimal(period.count * 12)
    if period.unit == "day":
        return Decimal(period.count) / DAYS_PER_MONTH
    raise ValidationError("unit", f"unknown period unit {period.unit!r}")


@dataclass(frozen=True)
class Fees:
    setup: Decimal
    recurring: Decimal
    renewal: Decimal = ZERO


@dataclass(frozen=True)
class Rate:
    resource_id: int
    name: str
    included: Decimal
    maximum: Decimal | None = None
    unit_setup: Decimal = ZERO
    unit_recurring: Decimal = ZERO
    overage: Decimal = ZERO
    optional: bool = False
    complimentary: bool = False


@dataclass(frozen=True)
class Discount:
    """A promotion's effect: exactly one of percent (0-100] or amount (> 0)."""

    percent: Decimal | None = None
    amount: Decimal | None = None
    on_setup: bool = True
    on_recurring: bool = True
    cycles: int | None = None  # None: every period

    def applies_in(self, cycle: int) -> bool:
        return self.cycles is None or cycle <= self.cycles


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    resource_id: int | None = None


@dataclass(frozen=True)
class Priced:
    lines: tuple[Line, ...]
    subtotal: Decimal
    discount: Decimal
    total: Decimal


SETUP_KINDS = frozenset({"setup", "resource_setup"})
RECURRING_KINDS = frozenset({"recurring", "resource_recurring"})


def selected_units(
    rates: Sequence[Rate],
    options: Sequence[int],
    extra: Mapping[int, Decimal],
) -> dict[int, tuple[Decimal, Decimal]]:
    """The resources a subscription gets: ``{resource_id: (included, bought)}``.

    Non-optional resources are always in; optional ones only when picked in
    ``options``. ``extra`` buys units above the included amount, up to the
    rate's maximum. Faults name the offending input.
    """
    by_id = {r.resource_id: r for r in rates}
    picked: set[int] = set()
    for i, rid in enumerate(options):
        rate = by_id.get(rid)
        if rate is None:
            raise ValidationError(f"options[{i}]", f"resource {rid} is not sold in this plan")
        if not rate.optional:
            raise ValidationError(f"options[{i}]", f"resource {rid} is not optional")
        if rid in picked:
            raise ValidationError(f"options[{i}]", f"resource {rid} is picked twice")
        picked.add(rid)
    out = {r.resource_id: (r.included, ZERO) for r in rates if not r.optional}
    out.update({rid: (by_id[rid].included, ZERO) for rid in picked})
    for i, (rid, qty) in enumerate(extra.items()):
        field = f"resources[{i}]"
        rate = by_id.get(rid)
        if rate is None:
            raise ValidationError(f"{field}.resource_id", f"resource {rid} is not in this plan")
        if rate.optional and rid not in picked:
            # buying units of an application is picking it
            picked.add(rid)
            out[rid] = (rate.included, ZERO)
        if qty < 0:
            raise ValidationError(f"{field}.quantity", "must not be negative")
        if rate.complimentary and qty > 0:
            raise ValidationError(f"{field}.quantity", f"resource {rid} is complimentary")
        if rate.maximum is not None and rate.included + qty > rate.maximum:
            raise ValidationError(
                f"{field}.quantity",
                f"included {rate.included} plus {qty} exceeds the maximum {rate.maximum}",
            )
        out[rid] = (rate.included, qty)
    # A picked application with nothing included is bought as one unit.
    for rid in sorted(picked):
        included, bought = out[rid]
        if included == 0 and bought == 0:
            cap = by_id[rid].maximum
            if cap is not None and cap < 1:
                raise ValidationError("options", f"resource {rid} cannot be bought (maximum {cap})")
            out[rid] = (ZERO, Decimal(1))
    return out


def price_period(
    *,
    currency: str,
    period: Period,
    fees: Fees,
    rates: Sequence[Rate],
    options: Sequence[int] = (),
    extra: Mapping[int, Decimal] | None = None,
    discount: Discount | None = None,
    cycle: int = 1,
) -> Priced:
    """Price period number ``cycle`` (1 = the first) of a subscription.

    Cycle 1 carries the setup fee and the setup price of bought units; every
    cycle the recurring fee and the recurring price of bought units; cycles
    after the first also the renewal fee. A discount reduces the setup and/or
    recurring lines it applies to, never below zero.
    """
    if cycle < 1:
        raise ValidationError("cycle", "must be at least 1")
    units = selected_units(rates, options, extra or {})
    months = months_in(period)
    lines: list[Line] = []

    def add(kind: str, desc: str, qty: Decimal, unit_price: Decimal, rid: int | None) -> None:
        amount = quantize(qty * unit_price, currency)
        if amount != 0 or kind in ("setup", "recurring"):
            lines.append(Line(kind, desc, qty, unit_price, amount, rid))

    if cycle == 1:
        add("setup", "Setup fee", Decimal(1), fees.setup, None)
    add("recurring", f"Subscription, {period.label()}", Decimal(1), fees.recurring, None)
    if cycle > 1 and fees.renewal:
        add("recurring", f"Renewal fee, {period.label()}", Decimal(1), fees.renewal, None)
    for rate in rates:
        if rate.resource_id not in units or rate.complimentary:
            continue
        _included, bought = units[rate.resource_id]
        if bought == 0:
            continue
        if cycle == 1:
            add(
                "resource_setup",
                f"{rate.name}: {bought} extra, setup",
                bought,
                rate.unit_setup,
                rate.resource_id,
            )
        add(
            "resource_recurring",
            f"{rate.name}: {bought} extra, {period.label()}",
            bought,
            rate.unit_recurring * months,
            rate.resource_id,
        )
    subtotal = sum((ln.amount for ln in lines), ZERO)
    disc = ZERO
    if discount is not None and discount.applies_in(cycle):
        base = sum(
            (
                ln.amount
                for ln in lines
                if (discount.on_setup and ln.kind in SETUP_KINDS)
                or (discount.on_recurring and ln.kind in RECURRING_KINDS)
            ),
            ZERO,
        )
        if discount.percent is not None:
            disc = quantize(base * discount.percent / HUNDRED, currency)
            label = f"Discount {discount.percent.normalize():f}%"
        else:
            disc = quantize(discount.amount or ZERO, currency)
            label = "Discount"
        disc = min(disc, base)
        if disc > 0:
            lines.append(Line("discount", label, Decimal(1), -disc, -disc, None))
    total = sum((ln.amount for ln in lines), ZERO)
    return Priced(tuple(lines), subtotal, -disc, total)


def overage_charge(
    rate: Rate, *, used: Decimal, bought: Decimal, months: Decimal, currency: str
) -> Decimal:
    """What usage above the included and bought amount costs for ``months`` of use."""
    if rate.complimentary:
        return quantize(ZERO, currency)
    over = used - rate.included - bought
    if over <= 0:
        return quantize(ZERO, currency)
    return quantize(over * rate.overage * months, currency)


@dataclass(frozen=True)
class PromotionTerms:
    """What decides whether a promotion may be used for an order."""

    status: str
    plan_ids: frozenset[int]
    periods: frozenset[Period]
    valid_from: datetime | None
    valid_to: datetime | None
    max_uses: int | None
    used_count: int
    currency: str | None  # of a fixed amount
    used_by_account: bool = False  # only matters when once_per_account
    once_per_account: bool = False


def check_promotion(
    terms: PromotionTerms,
    *,
    plan_id: int,
    period: Period,
    currency: str,
    now: datetime,
    field: str = "promotion_code",
) -> None:
    """Raise ValidationError(field) saying why the promotion cannot be used, if it cannot."""
    if terms.status != "active":
        raise ValidationError(field, "this promotion is disabled")
    if terms.valid_from is not None and now < terms.valid_from:
        raise ValidationError(field, "this promotion is not valid yet")
    if terms.valid_to is not None and now >= terms.valid_to:
        raise ValidationError(field, "this promotion has expired")
    if terms.max_uses is not None and terms.used_count >= terms.max_uses:
        raise ValidationError(field, "this promotion has been used up")
    if terms.once_per_account and terms.used_by_account:
        raise ValidationError(field, "this account has already used this promotion")
    if terms.plan_ids and plan_id not in terms.plan_ids:
        raise ValidationError(field, "this promotion does not apply to this plan")
    if terms.periods and period not in terms.periods:
        raise ValidationError(field, f"this promotion does not apply to {period.label()}")
    if terms.currency is not None and terms.currency != currency:
        raise ValidationError(
            field, f"this promotion is in {terms.currency}, the plan in {currency}"
        )
