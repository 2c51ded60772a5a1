"""Pricing an order line: the same code as PriceQuote for new subscriptions
(:func:`pba_server.catalog.quotes.quote` and ``billing.rules.plan_lines``), and
:mod:`pba_server.subscriptions.proration` for changes. ``ChangePreview`` and
the orders call the same functions here, so a preview equals the order.

A priced line carries its invoice lines (``charges``) and, for a change worth
less than what is left of the old terms, the ``credit`` the change gives the
customer (booked to the account's balance when the change is applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.billing.rules import plan_lines
from pba_server.catalog import owners, plan_migrations, plans, price_lists, pricing, quotes
from pba_server.catalog.models import Plan, PlanPeriodRow, PlanRateRow, PlanVersion, Resource
from pba_server.catalog.types import PriceQuoteInfo, ResourceQuantity
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.money import quantize
from pba_server.subscriptions import proration
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods

ZERO = Decimal(0)


@dataclass
class Charge:
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal = ZERO
    tax_inclusive: bool = False
    period_start: date | None = None
    period_end: date | None = None

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.unit_price - self.discount

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "quantity": str(self.quantity),
            "unit_price": str(self.unit_price),
            "discount": str(self.discount),
            "tax_inclusive": self.tax_inclusive,
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "period_end": self.period_end.isoformat() if self.period_end else None,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Charge:
        return Charge(
            d["description"],
            Decimal(d["quantity"]),
            Decimal(d["unit_price"]),
            Decimal(d["discount"]),
            bool(d["tax_inclusive"]),
            date.fromisoformat(d["period_start"]) if d.get("period_start") else None,
            date.fromisoformat(d["period_end"]) if d.get("period_end") else None,
        )


@dataclass
class PricedLine:
    kind: str
    description: str
    charges: list[Charge] = field(default_factory=list)
    credit: Decimal = ZERO  # given to the customer when applied
    plan: Plan | None = None
    version: PlanVersion | None = None
    period: pricing.Period | None = None
    subscription: Subscription | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    quote: PriceQuoteInfo | None = None
    change: proration.ChangePrice | None = None

    @property
    def amount(self) -> Decimal:
        return sum((c.amount for c in self.charges), ZERO)

    @property
    def subtotal(self) -> Decimal:
        return sum((c.quantity * c.unit_price for c in self.charges), ZERO)

    @property
    def discount(self) -> Decimal:
        return sum((c.discount for c in self.charges), ZERO)


def today(ctx: CallContext) -> date:
    return ctx.now().astimezone(UTC).date()


# ---------------------------------------------------------------- sellable plans


def sellable_plan(ctx: CallContext, buyer: Account, plan_id: int, field: str) -> Plan:
    """A plan ``buyer`` may buy: its catalog owner's, published, in its currency."""
    plan = ctx.session.get(Plan, plan_id)
    owner = owners.catalog_owner_of(ctx, buyer)
    if plan is None or owner is None or plan.owner_id != owner.id:
        # a plan the buyer cannot buy is not shown to exist
        raise ValidationError(field, f"account {buyer.id} cannot buy plan {plan_id}")
    if plan.status != "published":
        raise InvalidState(f"plan {plan.id} is {plan.status}, not for sale")
    if plan.currency != buyer.currency:
        raise ValidationError(
            field,
            f"plan {plan.id} is sold in {plan.currency}, "
            f"account {buyer.id} pays in {buyer.currency}",
        )
    return plan  # type: ignore[no-any-return]


def current_version(ctx: CallContext, plan: Plan) -> PlanVersion:
    v = ctx.session.scalar(
        select(PlanVersion).where(
            PlanVersion.plan_id == plan.id, PlanVersion.version == plan.current_version
        )
    )
    if v is None:
        raise NotFound(f"plan {plan.id} has no current version")
    return v  # type: ignore[no-any-return]


# ---------------------------------------------------------------- sales


def price_sales(
    ctx: CallContext,
    buyer: Account,
    plan: Plan,
    *,
    period_count: int | None,
    period_unit: str | None,
    options: list[int],
    resources: list[ResourceQuantity],
    promotion_code: str | None,
) -> PricedLine:
    q = quotes.quote(
        ctx,
        buyer=buyer,
        plan=plan,
        period_count=period_count,
        period_unit=period_unit,
        options=options,
        resources=resources,
        promotion_code=promotion_code,
    )
    start = today(ctx)
    period = pricing.Period(q.period_count, q.period_unit)
    line = PricedLine(
        kind="sales",
        description=f"{plan.name}, {period.label()}",
        plan=plan,
        version=current_version(ctx, plan),
        period=period,
        quote=q,
    )
    if q.trial is not None:
        # a trial costs nothing now; it is invoiced when it converts
        line.description += f" (trial {q.trial.length} {q.trial.unit})"
        return line
    end = add_periods(start, q.period_count, q.period_unit)
    for li in plan_lines(q, period_start=start, period_end=end):
        line.charges.append(
            Charge(
                li.description,
                li.quantity,
                li.unit_price,
                li.discount,
                li.tax_inclusive,
                li.period_start,
                li.period_end,
            )
        )
    return line


# ---------------------------------------------------------------- subscription terms


def _resource_names(ctx: CallContext, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(
        ctx.session.execute(select(Resource.id, Resource.name).where(Resource.id.in_(ids))).all()
    )  # type: ignore[arg-type]


def _fees(
    ctx: CallContext, buyer: Account, plan: Plan, version_id: int, count: int, unit: str
) -> tuple[PlanPeriodRow | None, Decimal, Decimal, bool]:
    """(period row, recurring fee, renewal fee, tax_inclusive) with the reseller price list."""
    row = ctx.session.scalar(
        select(PlanPeriodRow).where(
            PlanPeriodRow.version_id == version_id,
            PlanPeriodRow.count == count,
            PlanPeriodRow.unit == unit,
        )
    )
    v = ctx.session.get(PlanVersion, version_id)
    inclusive = bool(v.tax_inclusive) if v is not None else False
    if row is None:
        return None, ZERO, ZERO, inclusive
    recurring, renewal = row.recurring_fee, row.renewal_fee
    rp = price_lists.reseller_prices(ctx, owners.price_list_of(ctx, buyer), [plan.id]).get(
        (plan.id, count, unit)
    )
    if rp is not None:
        recurring, renewal, inclusive = rp.recurring_fee, rp.renewal_fee, rp.tax_inclusive
    return row, recurring, renewal, inclusive


def period_price(
    ctx: CallContext,
    buyer: Account,
    plan: Plan,
    version_id: int,
    count: int,
    unit: str,
    bought: dict[int, Decimal],
    unit_prices: dict[int, Decimal],
) -> tuple[proration.PeriodPrice, bool]:
    """One whole period of a plan version with ``bought`` extra units."""
    cur = plan.currency
    row, recurring, _renewal, inclusive = _fees(ctx, buyer, plan, version_id, count, unit)
    if row is None:
        raise ValidationError("period", f"plan {plan.id} has no {count} {unit} period")
    period = pricing.Period(count, unit)
    months = pricing.months_in(period)
    lines: dict[str, tuple[str, Decimal]] = {
        "plan": (f"{plan.name}, {period.label()}", quantize(recurring, cur))
    }
    names = _resource_names(ctx, sorted(bought))
    for rid in sorted(bought):
        units = bought[rid]
        price = unit_prices.get(rid, ZERO)
        if units > 0 and price > 0:
            lines[f"resource:{rid}"] = (
                f"{names.get(rid, rid)}: {units.normalize():f} extra",
                proration.resource_price(price, units, months, cur),
            )
    return proration.PeriodPrice(lines), inclusive


def subscription_terms(
    ctx: CallContext, sub: Subscription
) -> tuple[Plan, Account, proration.PeriodPrice, bool, dict[int, SubscriptionResource]]:
    plan = ctx.session.get(Plan, sub.plan_id)
    buyer = ctx.session.get(Account, sub.account_id)
    assert plan is not None and buyer is not None
    res = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(SubscriptionResource).where(SubscriptionResource.subscription_id == sub.id)
        )
    }
    price, inclusive = period_price(
        ctx,
        buyer,
        plan,
        sub.plan_version_id,
        sub.period_count,
        sub.period_unit,
        {rid: r.bought for rid, r in res.items()},
        {rid: r.unit_recurring_price for rid, r in res.items()},
    )
    return plan, buyer, price, inclusive, res


def window(ctx: CallContext, sub: Subscription) -> proration.Window:
    return proration.Window(sub.period_start, sub.period_end, today(ctx))


def _charges_of_change(
    change: proration.ChangePrice, inclusive: bool, start: date, end: date
) -> tuple[list[Charge], Decimal]:
    """Invoice lines for the charge lines, the credit taken off them as line
    discounts in order; the credit left over is returned to give as balance."""
    left = -change.credit
    out: list[Charge] = []
    for ln in change.lines:
        if ln.kind != "charge":
            continue
        cut = min(left, ln.amount)
        left -= cut
        out.append(Charge(ln.description[:255], Decimal(1), ln.amount, cut, inclusive, start, end))
    return out, left


def price_plan_change(
    ctx: CallContext, sub: Subscription, new_plan: Plan, when: str, kind: str
) -> PricedLine:
    """An upgrade or downgrade of ``sub`` to ``new_plan`` (its current version),
    keeping the subscription's period and the extra units it bought (as far as
    the new plan sells them)."""
    plan, buyer, old_price, _inc, res = subscription_terms(ctx, sub)
    if new_plan.id == sub.plan_id:
        raise ValidationError("plan_id", "is the subscription's plan already")
    targets = plans.upgrades_of(ctx, plan.id)
    if targets and new_plan.id not in targets:
        raise ValidationError("plan_id", f"plan {plan.id} cannot be changed to plan {new_plan.id}")
    v = current_version(ctx, new_plan)
    rates = {
        r.resource_id: r
        for r in ctx.session.scalars(select(PlanRateRow).where(PlanRateRow.version_id == v.id))
    }
    bought: dict[int, Decimal] = {}
    for rid, r in res.items():
        rate = rates.get(rid)
        if r.bought > 0 and rate is not None and not rate.complimentary:
            units = r.bought
            if rate.maximum is not None:
                units = max(min(units, rate.maximum - rate.included), ZERO)
            bought[rid] = units
    try:
        new_price, inclusive = period_price(
            ctx,
            buyer,
            new_plan,
            v.id,
            sub.period_count,
            sub.period_unit,
            bought,
            {rid: rates[rid].unit_recurring_price for rid in bought},
        )
    except ValidationError:
        raise ValidationError(
            "plan_id",
            f"plan {new_plan.id} has no {sub.period_count} {sub.period_unit} period "
            "like the subscription",
        ) from None
    period = pricing.Period(sub.period_count, sub.period_unit)
    line = PricedLine(
        kind=kind,
        description=f"{plan.name} -> {new_plan.name}",
        plan=new_plan,
        version=v,
        period=period,
        subscription=sub,
        detail={"when": when, "bought": {str(k): str(b) for k, b in bought.items()}},
    )
    if when == "now":
        change = proration.change_price(old_price, new_price, window(ctx, sub), sub.currency)
        line.change = change
        line.charges, line.credit = _charges_of_change(
            change, inclusive, today(ctx), sub.period_end
        )
    return line


def price_resource(
    ctx: CallContext, sub: Subscription, resources: list[ResourceQuantity]
) -> PricedLine:
    """Buying ``quantity`` more units of resources of ``sub``: their setup price
    and the rest of the current period of their recurring price, prorated."""
    plan, buyer, old_price, _inc, res = subscription_terms(ctx, sub)
    if not resources:
        raise ValidationError("resources", "name at least one resource and amount")
    rates = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id == sub.plan_version_id)
        )
    }
    new_bought = {rid: r.bought for rid, r in res.items()}
    setup: list[Charge] = []
    names = _resource_names(ctx, [rq.resource_id for rq in resources])
    cur = sub.currency
    seen: set[int] = set()
    for i, rq in enumerate(resources):
        f = f"resources[{i}]"
        if rq.resource_id in seen:
            raise ValidationError(f"{f}.resource_id", "is given twice")
        seen.add(rq.resource_id)
        r = res.get(rq.resource_id)
        rate = rates.get(rq.resource_id)
        if r is None or rate is None:
            raise ValidationError(
                f"{f}.resource_id", f"subscription {sub.id} has no resource {rq.resource_id}"
            )
        qty = Decimal(str(rq.quantity))
        if qty <= 0 or qty != qty.quantize(Decimal("0.0001")):
            raise ValidationError(f"{f}.quantity", "must be positive with at most 4 decimals")
        if rate.complimentary:
            raise ValidationError(f"{f}.resource_id", f"resource {rq.resource_id} is complimentary")
        if rate.maximum is not None and r.included + r.bought + qty > rate.maximum:
            raise ValidationError(
                f"{f}.quantity",
                f"{r.included + r.bought} now plus {qty} exceeds the maximum {rate.maximum}",
            )
        new_bought[rq.resource_id] = r.bought + qty
        setup_amount = quantize(qty * rate.unit_setup_price, cur)
        if setup_amount:
            name = names.get(rq.resource_id, rq.resource_id)
            setup.append(
                Charge(f"{name}: {qty.normalize():f} extra, setup", Decimal(1), setup_amount)
            )
    new_price, inclusive = period_price(
        ctx,
        buyer,
        plan,
        sub.plan_version_id,
        sub.period_count,
        sub.period_unit,
        new_bought,
        {rid: r.unit_recurring_price for rid, r in res.items()},
    )
    change = proration.change_price(old_price, new_price, window(ctx, sub), cur)
    charges, credit = _charges_of_change(change, inclusive, today(ctx), sub.period_end)
    for c in setup:
        c.tax_inclusive = inclusive
    line = PricedLine(
        kind="resource",
        description=f"{plan.name}: more resources",
        subscription=sub,
        charges=setup + charges,
        credit=credit,
        change=change,
        detail={"add": {str(rq.resource_id): str(rq.quantity) for rq in resources}},
    )
    return line


def price_renewal(ctx: CallContext, sub: Subscription) -> PricedLine:
    """One more period of ``sub`` at its renewal terms (the version it renews at)."""
    plan, buyer, _old, _inc, res = subscription_terms(ctx, sub)
    v = ctx.session.get(PlanVersion, sub.plan_version_id)
    assert v is not None
    to_version = plan_migrations.renewal_version(ctx, plan.id, v.version)
    nv = ctx.session.scalar(
        select(PlanVersion).where(PlanVersion.plan_id == plan.id, PlanVersion.version == to_version)
    )
    assert nv is not None
    row, recurring, renewal, inclusive = _fees(
        ctx, buyer, plan, nv.id, sub.period_count, sub.period_unit
    )
    if row is None:
        raise InvalidState(
            f"plan {plan.id} no longer sells a {sub.period_count} {sub.period_unit} period"
        )
    rates = {
        r.resource_id: r
        for r in ctx.session.scalars(select(PlanRateRow).where(PlanRateRow.version_id == nv.id))
    }
    period = pricing.Period(sub.period_count, sub.period_unit)
    priced = pricing.price_period(
        currency=sub.currency,
        period=period,
        fees=pricing.Fees(ZERO, recurring, renewal),
        rates=[
            pricing.Rate(
                resource_id=rid,
                name=str(rid),
                included=r.included,
                maximum=None,
                unit_recurring=r.unit_recurring_price,
                overage=r.overage_price,
                optional=r.optional,
                complimentary=r.complimentary,
            )
            for rid, r in rates.items()
        ],
        extra={rid: r.bought for rid, r in res.items() if r.bought > 0 and rid in rates},
        cycle=2,
    )
    start = sub.period_end
    end = add_periods(start, sub.period_count, sub.period_unit, anchor_day=sub.anchor_day)
    names = _resource_names(ctx, list(rates))
    line = PricedLine(
        kind="renewal",
        description=f"Renewal: {plan.name}, {period.label()}",
        plan=plan,
        version=nv,
        period=period,
        subscription=sub,
        detail={"from": start.isoformat(), "to": end.isoformat()},
    )
    for ln in priced.lines:
        desc = ln.description
        if ln.resource_id is not None:
            desc = desc.replace(
                f"{ln.resource_id}:", f"{names.get(ln.resource_id, ln.resource_id)}:", 1
            )
        if ln.amount > 0:
            line.charges.append(
                Charge(desc[:255], Decimal(1), ln.amount, ZERO, inclusive, start, end)
            )
    return line


def refund_on_cancel(ctx: CallContext, sub: Subscription, when: str) -> Decimal:
    """What cancelling ``sub`` now gives back by its plan version's refund policy."""
    if when != "now" or sub.status == "trial":
        return quantize(ZERO, sub.currency)
    v = ctx.session.get(PlanVersion, sub.plan_version_id)
    assert v is not None
    _plan, _buyer, price, _inc, _res = subscription_terms(ctx, sub)
    return proration.refund_amount(
        price.total,
        window(ctx, sub),
        sub.currency,
        policy=v.refund_policy,
        refund_days=v.refund_days,
        started_on=sub.started_on,
    )
