"""Price quotes: the itemised price of a new subscription (``PriceQuote``), the
same function orders price with."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import cast

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.catalog import checks, owners, pricing
from pba_server.catalog.models import (
    Plan,
    Resource,
)
from pba_server.catalog.plans import get_plan
from pba_server.catalog.price_lists import reseller_prices
from pba_server.catalog.promotions import discount_of, find_promotion
from pba_server.catalog.types import (
    PeriodUnit,
    PriceQuoteInfo,
    PriceSource,
    QuoteLine,
    QuoteLineKind,
    ResourceQuantity,
)
from pba_server.catalog.versions import load_version, terms_of
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.operations import ANY_ROLE, operation


@operation("PriceQuote", roles=ANY_ROLE)
def price_quote(
    ctx: CallContext,
    *,
    plan_id: int,
    account_id: int | None = None,
    period_count: int | None = None,
    period_unit: PeriodUnit | None = None,
    options: list[int] | None = None,
    resources: list[ResourceQuantity] | None = None,
    promotion_code: str | None = None,
) -> PriceQuoteInfo:
    """The itemised price of a new subscription to a plan for an account
    (default: the caller's) without creating anything: setup, the first period,
    optional resources picked in ``options``, extra units bought in
    ``resources``, the discount of a promotion (by code, or an automatic one)
    and the total, before tax is added or, when ``tax_inclusive`` (the plan's,
    or the reseller price list's where its price applies), with tax included.
    The period defaults to the plan's default.
    Orders price subscriptions with the same function, so the first invoice
    equals the quote. Each line is rounded half-up to the currency's minor unit
    and the total is the sum of the lines."""
    buyer = owners.visible_account(
        ctx, account_id if account_id is not None else ctx.principal.account_id
    )
    if buyer.status == "closed":
        raise InvalidState(f"account {buyer.id} is closed")
    plan = get_plan(ctx, plan_id)
    owner = owners.catalog_owner_of(ctx, buyer)
    if owner is None:
        raise ValidationError(
            "account_id", f"account {buyer.id} buys from no one; give the buying account's id"
        )
    if plan.owner_id != owner.id:
        raise ValidationError("plan_id", f"account {buyer.id} cannot buy plan {plan.id}")
    if plan.status != "published":
        raise InvalidState(f"plan {plan.id} is {plan.status}, not for sale")
    return quote(
        ctx,
        buyer=buyer,
        plan=plan,
        period_count=period_count,
        period_unit=period_unit,
        options=options or [],
        resources=resources or [],
        promotion_code=promotion_code,
    )


def quote(
    ctx: CallContext,
    *,
    buyer: Account,
    plan: Plan,
    period_count: int | None,
    period_unit: str | None,
    options: Sequence[int],
    resources: Sequence[ResourceQuantity],
    promotion_code: str | None,
) -> PriceQuoteInfo:
    """Price the first period of ``plan`` for ``buyer`` (checked by the caller)."""
    v = load_version(ctx, plan)
    terms = terms_of(ctx, v)
    if period_count is None and period_unit is None:
        chosen = next(p for p in terms.periods if p.is_default)
    else:
        if period_count is None or period_unit is None:
            raise ValidationError(
                "period_count" if period_count is None else "period_unit",
                "give both period_count and period_unit, or neither for the default",
            )
        match = [p for p in terms.periods if p.count == period_count and p.unit == period_unit]
        if not match:
            raise ValidationError(
                "period_count", f"plan {plan.id} has no period of {period_count} {period_unit}"
            )
        chosen = match[0]
    period = pricing.Period(chosen.count, chosen.unit)
    fees = pricing.Fees(chosen.setup_fee, chosen.recurring_fee, chosen.renewal_fee)
    source: PriceSource = "plan"
    inclusive = terms.tax_inclusive
    prices = reseller_prices(ctx, owners.price_list_of(ctx, buyer), [plan.id])
    rp = prices.get((plan.id, chosen.count, chosen.unit))
    if rp is not None:
        fees = pricing.Fees(rp.setup_fee, rp.recurring_fee, rp.renewal_fee)
        source = "reseller_price"
        inclusive = rp.tax_inclusive
    names = dict(
        ctx.session.execute(
            select(Resource.id, Resource.name).where(
                Resource.id.in_([r.resource_id for r in terms.rates])
            )
        ).all()
    )
    rates = [
        pricing.Rate(
            resource_id=r.resource_id,
            name=names.get(r.resource_id, str(r.resource_id)),
            included=r.included,
            maximum=r.maximum,
            unit_setup=r.unit_setup_price,
            unit_recurring=r.unit_recurring_price,
            overage=r.overage_price,
            optional=r.optional,
            complimentary=r.complimentary,
        )
        for r in terms.rates
    ]
    extra: dict[int, Decimal] = {}
    for i, rq in enumerate(resources):
        if rq.resource_id in extra:
            raise ValidationError(f"resources[{i}].resource_id", "is given twice")
        extra[rq.resource_id] = checks.amount(rq.quantity, f"resources[{i}].quantity")
    promo = find_promotion(ctx, plan, period, promotion_code, buyer.id)
    priced = pricing.price_period(
        currency=plan.currency,
        period=period,
        fees=fees,
        rates=rates,
        options=options,
        extra=extra,
        discount=discount_of(promo) if promo else None,
    )
    return PriceQuoteInfo(
        account_id=buyer.id,
        plan_id=plan.id,
        plan_version=v.version,
        currency=plan.currency,
        period_count=chosen.count,
        period_unit=chosen.unit,
        price_source=source,
        lines=[
            QuoteLine(
                kind=cast(QuoteLineKind, ln.kind),
                description=ln.description,
                quantity=ln.quantity.normalize(),
                unit_price=ln.unit_price.normalize(),
                amount=ln.amount,
                resource_id=ln.resource_id,
            )
            for ln in priced.lines
        ],
        subtotal=priced.subtotal,
        discount=priced.discount,
        total=priced.total,
        tax_inclusive=inclusive,
        promotion_id=promo.id if promo else None,
        discount_cycles=promo.cycles if promo else None,
        trial=terms.trial,
    )
