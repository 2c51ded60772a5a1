"""What resellers' customers pay (a basic reseller's price list,
``ResellerPrice*``) and what an advanced reseller pays its parent
(``WholesalePrice*``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.catalog import checks, owners
from pba_server.catalog.models import (
    Plan,
    ResellerPrice,
    Resource,
    WholesalePrice,
)
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.types import (
    PeriodUnit,
    ResellerPriceInfo,
    ResellerPricePage,
    WholesalePriceInfo,
    WholesalePricePage,
)
from pba_server.catalog.versions import load_version, terms_of
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.money import check_currency, quantize
from pba_server.core.operations import ANY_ROLE, operation


def reseller_prices(
    ctx: CallContext, reseller: Account | None, plan_ids: Sequence[int]
) -> dict[tuple[int, int, str], ResellerPrice]:
    """A basic reseller's prices for ``plan_ids``: ``{(plan, count, unit): row}``."""
    if reseller is None or not plan_ids:
        return {}
    rows = ctx.session.scalars(
        select(ResellerPrice).where(
            ResellerPrice.reseller_id == reseller.id, ResellerPrice.plan_id.in_(plan_ids)
        )
    )
    return {(r.plan_id, r.period_count, r.period_unit): r for r in rows}


def _reseller_price_info(r: ResellerPrice) -> ResellerPriceInfo:
    return ResellerPriceInfo(
        id=r.id,
        reseller_id=r.reseller_id,
        plan_id=r.plan_id,
        period_count=r.period_count,
        period_unit=r.period_unit,
        currency=r.currency,
        setup_fee=quantize(r.setup_fee, r.currency),
        recurring_fee=quantize(r.recurring_fee, r.currency),
        renewal_fee=quantize(r.renewal_fee, r.currency),
        updated_at=r.updated_at,
        tax_inclusive=r.tax_inclusive,
    )


@operation("ResellerPriceSet", roles=EDITORS, mutating=True)
def reseller_price_set(
    ctx: CallContext,
    *,
    reseller_id: int,
    plan_id: int,
    period_count: int,
    period_unit: PeriodUnit,
    currency: str,
    setup_fee: Decimal,
    recurring_fee: Decimal,
    renewal_fee: Decimal = Decimal(0),
    tax_inclusive: bool | None = None,
) -> ResellerPriceInfo:
    """Set what a basic reseller's customers pay for one period of a plan of
    its catalog owner (replacing an earlier price). Only an account above the
    reseller sets it. ``currency`` must be the plan's.

    ``tax_inclusive`` says whether the reseller's prices for the plan include
    tax; it is one value per reseller and plan, so setting it sets it for the
    reseller's other periods of the plan too. Omitted: the value the reseller's
    other periods of the plan have, else the plan's."""
    reseller = owners.visible_account(ctx, reseller_id, "reseller_id")
    if reseller.id == ctx.principal.account_id:
        raise Forbidden("a reseller's prices are set by the account above it")
    if reseller.type != "reseller" or reseller.partner_level != "basic":
        raise ValidationError(
            "reseller_id", "price lists are for basic resellers; advanced ones make own plans"
        )
    plan = ctx.session.get(Plan, plan_id)
    owner = owners.catalog_owner_of(ctx, reseller)
    if plan is None or not owners.manages(ctx, plan.owner_id):
        raise NotFound(f"plan {plan_id} not found")
    if owner is None or plan.owner_id != owner.id:
        raise ValidationError("plan_id", f"reseller {reseller.id} does not sell plan {plan.id}")
    if plan.status == "archived":
        raise InvalidState(f"plan {plan.id} is archived")
    cur = check_currency(currency)
    if cur != plan.currency:
        raise ValidationError("currency", f"plan {plan.id} is priced in {plan.currency}")
    terms = terms_of(ctx, load_version(ctx, plan))
    siblings = list(
        ctx.session.scalars(
            select(ResellerPrice)
            .where(ResellerPrice.reseller_id == reseller.id, ResellerPrice.plan_id == plan.id)
            .with_for_update()
        )
    )
    if tax_inclusive is None:
        tax_inclusive = siblings[0].tax_inclusive if siblings else terms.tax_inclusive
    if not any(p.count == period_count and p.unit == period_unit for p in terms.periods):
        raise ValidationError(
            "period_count", f"plan {plan.id} has no period of {period_count} {period_unit}"
        )
    fees = (
        checks.fee(setup_fee, cur, "setup_fee"),
        checks.fee(recurring_fee, cur, "recurring_fee"),
        checks.fee(renewal_fee, cur, "renewal_fee"),
    )
    row = ctx.session.scalar(
        select(ResellerPrice)
        .where(
            ResellerPrice.reseller_id == reseller.id,
            ResellerPrice.plan_id == plan.id,
            ResellerPrice.period_count == period_count,
            ResellerPrice.period_unit == period_unit,
        )
        .with_for_update()
    )
    before = None if row is None else _reseller_price_info(row)
    if row is None:
        row = ResellerPrice(
            reseller_id=reseller.id,
            plan_id=plan.id,
            period_count=period_count,
            period_unit=period_unit,
            currency=cur,
        )
        ctx.session.add(row)
    row.setup_fee, row.recurring_fee, row.renewal_fee = fees
    row.tax_inclusive = tax_inclusive
    row.updated_at = ctx.now()
    for other in siblings:
        if other is not row and other.tax_inclusive != tax_inclusive:
            other.tax_inclusive = tax_inclusive
            other.updated_at = row.updated_at
            audit.record(
                ctx,
                "reseller_price",
                other.id,
                reseller.path,
                {"tax_inclusive": {"from": not tax_inclusive, "to": tax_inclusive}},
            )
    ctx.session.flush()
    info = _reseller_price_info(row)
    audit.record(
        ctx,
        "reseller_price",
        row.id,
        reseller.path,
        {"set": info} if before is None else audit.diff(asdict(before), asdict(info)),
    )
    return info


@operation("ResellerPriceList", roles=ANY_ROLE)
def reseller_price_list(
    ctx: CallContext,
    *,
    reseller_id: int,
    plan_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ResellerPricePage:
    """A basic reseller's price list (the reseller itself may read it too)."""
    reseller = owners.visible_account(ctx, reseller_id, "reseller_id")
    q = select(ResellerPrice).where(ResellerPrice.reseller_id == reseller.id)
    if plan_id is not None:
        q = q.where(ResellerPrice.plan_id == plan_id)
    rows, total = paging.scalars(
        ctx.session,
        q.order_by(ResellerPrice.plan_id, ResellerPrice.period_unit, ResellerPrice.period_count),
        offset,
        limit,
    )
    return ResellerPricePage([_reseller_price_info(r) for r in rows], total, offset, limit)


def _wholesale_info(w: WholesalePrice) -> WholesalePriceInfo:
    return WholesalePriceInfo(
        id=w.id,
        reseller_id=w.reseller_id,
        currency=w.currency,
        setup_fee=quantize(w.setup_fee, w.currency),
        recurring_fee=w.recurring_fee.normalize(),
        updated_at=w.updated_at,
        plan_id=w.plan_id,
        resource_id=w.resource_id,
    )


@operation("WholesalePriceSet", roles=EDITORS, mutating=True)
def wholesale_price_set(
    ctx: CallContext,
    *,
    reseller_id: int,
    currency: str,
    setup_fee: Decimal,
    recurring_fee: Decimal,
    plan_id: int | None = None,
    resource_id: int | None = None,
) -> WholesalePriceInfo:
    """Set what an advanced reseller pays its parent (replacing an earlier price):
    for each subscription of one of its own plans (``plan_id``: a setup fee and
    a recurring fee per month), or for a resource its subscriptions use
    (``resource_id``: setup and recurring price per unit, the latter per month).
    Only an account above the reseller sets it, in the reseller's currency."""
    reseller = owners.visible_account(ctx, reseller_id, "reseller_id")
    if reseller.id == ctx.principal.account_id:
        raise Forbidden("a reseller's wholesale prices are set by the account above it")
    if reseller.type != "reseller" or reseller.partner_level != "advanced":
        raise ValidationError(
            "reseller_id", "wholesale prices are for advanced resellers; basic ones get price lists"
        )
    if (plan_id is None) == (resource_id is None):
        raise ValidationError("plan_id", "give a plan_id or a resource_id, not both or neither")
    cur = check_currency(currency)
    if cur != reseller.currency:
        raise ValidationError(
            "currency", f"reseller {reseller.id} is billed in {reseller.currency}"
        )
    if plan_id is not None:
        plan = ctx.session.get(Plan, plan_id)
        if plan is None or plan.owner_id != reseller.id:
            raise ValidationError("plan_id", f"reseller {reseller.id} has no plan {plan_id}")
        setup = checks.fee(setup_fee, cur, "setup_fee")
        recurring = checks.fee(recurring_fee, cur, "recurring_fee")
    else:
        res = ctx.session.get(Resource, resource_id)
        if res is None or res.owner_id not in owners.ancestor_ids(reseller.path)[:-1]:
            raise ValidationError(
                "resource_id", f"no resource {resource_id} of an account above the reseller"
            )
        setup = checks.amount(setup_fee, "setup_fee")
        recurring = checks.amount(recurring_fee, "recurring_fee")
    q = select(WholesalePrice).where(WholesalePrice.reseller_id == reseller.id)
    q = q.where(
        WholesalePrice.plan_id == plan_id
        if plan_id is not None
        else WholesalePrice.resource_id == resource_id
    )
    row = ctx.session.scalar(q.with_for_update())
    before = None if row is None else _wholesale_info(row)
    if row is None:
        row = WholesalePrice(
            reseller_id=reseller.id, plan_id=plan_id, resource_id=resource_id, currency=cur
        )
        ctx.session.add(row)
    row.setup_fee, row.recurring_fee = setup, recurring
    row.updated_at = ctx.now()
    ctx.session.flush()
    info = _wholesale_info(row)
    audit.record(
        ctx,
        "wholesale_price",
        row.id,
        reseller.path,
        {"set": info} if before is None else audit.diff(asdict(before), asdict(info)),
    )
    return info


@operation("WholesalePriceList", roles=ANY_ROLE)
def wholesale_price_list(
    ctx: CallContext, *, reseller_id: int, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> WholesalePricePage:
    """What an advanced reseller pays its parent (the reseller itself may read it)."""
    reseller = owners.visible_account(ctx, reseller_id, "reseller_id")
    q = (
        select(WholesalePrice)
        .where(WholesalePrice.reseller_id == reseller.id)
        .order_by(WholesalePrice.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return WholesalePricePage([_wholesale_info(w) for w in rows], total, offset, limit)
