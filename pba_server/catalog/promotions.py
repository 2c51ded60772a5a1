"""Promotions: discounts of an owner's plans, by code or automatic
(``Promotion*`` operations), found and redeemed for quotes and orders."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import func, select, update

from pba_server.catalog import checks, owners, pricing
from pba_server.catalog.models import (
    Plan,
    Promotion,
    PromotionPlan,
    PromotionUse,
)
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.types import (
    PeriodChoice,
    PeriodUnit,
    PromotionInfo,
    PromotionPage,
    PromotionStatus,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.core.money import check_currency, money, quantize, to_decimal
from pba_server.core.operations import operation
from pba_server.core.paging import check_page

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _promotion_plan_ids(ctx: CallContext, ids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for row in ctx.session.scalars(
            select(PromotionPlan)
            .where(PromotionPlan.promotion_id.in_(ids))
            .order_by(PromotionPlan.plan_id)
        ):
            out[row.promotion_id].append(row.plan_id)
    return out


def _promotion_info(
    ctx: CallContext, p: Promotion, plan_ids: list[int] | None = None
) -> PromotionInfo:
    if plan_ids is None:
        plan_ids = _promotion_plan_ids(ctx, [p.id])[p.id]
    return PromotionInfo(
        id=p.id,
        owner_id=p.owner_id,
        name=p.name,
        status=p.status,
        on_setup=p.on_setup,
        on_recurring=p.on_recurring,
        once_per_account=p.once_per_account,
        used_count=p.used_count,
        created_at=p.created_at,
        code=p.code,
        percent=None if p.percent is None else p.percent.normalize(),
        amount=None if p.amount is None or p.currency is None else quantize(p.amount, p.currency),
        currency=p.currency,
        cycles=p.cycles,
        plan_ids=plan_ids,
        periods=[PeriodChoice(c, cast(PeriodUnit, u)) for c, u in json.loads(p.periods)],
        valid_from=p.valid_from,
        valid_to=p.valid_to,
        max_uses=p.max_uses,
    )


def _promotion_terms(
    ctx: CallContext, p: Promotion, buyer_id: int | None = None
) -> pricing.PromotionTerms:
    info = _promotion_info(ctx, p)
    used = False
    if p.once_per_account and buyer_id is not None:
        used = (
            ctx.session.scalar(
                select(PromotionUse.id).where(
                    PromotionUse.promotion_id == p.id, PromotionUse.once_key == buyer_id
                )
            )
            is not None
        )
    return pricing.PromotionTerms(
        status=p.status,
        plan_ids=frozenset(info.plan_ids),
        periods=frozenset(pricing.Period(c.count, c.unit) for c in info.periods),
        valid_from=p.valid_from,
        valid_to=p.valid_to,
        max_uses=p.max_uses,
        used_count=p.used_count,
        currency=p.currency if p.amount is not None else None,
        used_by_account=used,
        once_per_account=p.once_per_account,
    )


def discount_of(p: Promotion) -> pricing.Discount:
    """The pricing rule of a promotion's discount."""
    return pricing.Discount(
        percent=p.percent,
        amount=p.amount,
        on_setup=p.on_setup,
        on_recurring=p.on_recurring,
        cycles=p.cycles,
    )


@operation("PromotionCreate", roles=EDITORS, mutating=True)
def promotion_create(
    ctx: CallContext,
    *,
    name: str,
    code: str | None = None,
    percent: Decimal | None = None,
    amount: Decimal | None = None,
    currency: str | None = None,
    on_setup: bool = False,
    on_recurring: bool = True,
    cycles: int | None = None,
    plan_ids: list[int] | None = None,
    periods: list[PeriodChoice] | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    max_uses: int | None = None,
    once_per_account: bool = False,
    owner_id: int | None = None,
) -> PromotionInfo:
    """Create a promotion of the owner's plans: ``percent`` off (0-100] or a
    fixed ``amount`` off (in ``currency``, default the owner's; never below
    zero), on setup and/or recurring fees, for ``cycles`` billing periods
    (omitted: forever). With a ``code`` the customer must give it (codes are
    case-insensitive and unique per owner); without one it applies by itself.
    Limited to ``plan_ids`` and ``periods`` when given, valid in
    [valid_from, valid_to), at most ``max_uses`` uses in all, and once per
    account if ``once_per_account``."""
    owner = owners.owner_for_create(ctx, owner_id)
    if percent is not None and amount is not None:
        raise ValidationError("amount", "give a percent or an amount, not both")
    if percent is None and amount is None:
        raise ValidationError("percent", "give a percent or an amount")
    cur: str | None = None
    if percent is not None:
        pct = to_decimal(percent, "percent")
        if not 0 < pct <= 100:
            raise ValidationError("percent", "must be above 0 and at most 100")
        if pct != pct.quantize(Decimal("0.0001")):
            raise ValidationError("percent", "must have at most 4 decimals")
        if currency is not None:
            raise ValidationError("currency", "only a fixed amount has a currency")
    else:
        cur = check_currency(currency) if currency else owner.currency
        amt = money(amount, cur, "amount")
        if amt <= 0:
            raise ValidationError("amount", "must be positive")
    if not (on_setup or on_recurring):
        raise ValidationError("on_recurring", "a promotion applies to setup or recurring fees")
    if cycles is not None and not 1 <= cycles <= 1000:
        raise ValidationError("cycles", "must be between 1 and 1000 (omit it for forever)")
    if valid_from and valid_to and valid_to <= valid_from:
        raise ValidationError("valid_to", "must be after valid_from")
    if max_uses is not None and max_uses < 1:
        raise ValidationError("max_uses", "must be at least 1")
    norm_code: str | None = None
    if code is not None and code.strip():
        if not CODE_RE.match(code.strip()):
            raise ValidationError("code", "must be 1-64 letters, digits, - or _")
        norm_code = code.strip().upper()
    pids: list[int] = []
    for i, pid in enumerate(plan_ids or []):
        plan = ctx.session.get(Plan, pid)
        if plan is None or plan.owner_id != owner.id:
            raise ValidationError(f"plan_ids[{i}]", f"no plan {pid} of account {owner.id}")
        if pid not in pids:
            pids.append(pid)
    pers: list[list[object]] = []
    for i, per in enumerate(periods or []):
        if per.count < 1:
            raise ValidationError(f"periods[{i}].count", "must be at least 1")
        if per.unit not in pricing.PERIOD_UNITS:
            raise ValidationError(f"periods[{i}].unit", "must be day, month or year")
        if [per.count, per.unit] not in pers:
            pers.append([per.count, per.unit])
    now = ctx.now()
    p = Promotion(
        owner_id=owner.id,
        code=norm_code,
        name=checks.text(name, "name"),
        status="active",
        percent=to_decimal(percent, "percent") if percent is not None else None,
        amount=money(amount, cur, "amount") if amount is not None and cur else None,
        currency=cur,
        on_setup=on_setup,
        on_recurring=on_recurring,
        cycles=cycles,
        periods=json.dumps(pers),
        valid_from=valid_from,
        valid_to=valid_to,
        max_uses=max_uses,
        once_per_account=once_per_account,
        used_count=0,
        created_at=now,
        updated_at=now,
    )
    owners.savepoint_unique(
        ctx, p, "code", f"account {owner.id} already has a promotion {norm_code}"
    )
    ctx.session.add_all(PromotionPlan(promotion_id=p.id, plan_id=pid) for pid in pids)
    ctx.session.flush()
    info = _promotion_info(ctx, p)
    audit.record(ctx, "promotion", p.id, owner.path, {"created": info})
    return info


def _get_promotion(ctx: CallContext, promotion_id: int) -> Promotion:
    p = ctx.session.get(Promotion, promotion_id)
    if p is None or not owners.manages(ctx, p.owner_id):
        raise NotFound(f"promotion {promotion_id} not found")
    return p  # type: ignore[no-any-return]


@operation("PromotionGet", roles=EDITORS | {"billing", "support", "readonly"})
def promotion_get(ctx: CallContext, *, promotion_id: int) -> PromotionInfo:
    """One promotion of an owner in the caller's subtree."""
    return _promotion_info(ctx, _get_promotion(ctx, promotion_id))


@operation("PromotionList", roles=EDITORS | {"billing", "support", "readonly"})
def promotion_list(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    status: PromotionStatus | None = None,
    offset: int = 0,
    limit: int = 100,
) -> PromotionPage:
    """The promotions of one owner (default: the caller's account), ordered by id."""
    check_page(offset, limit)
    oid = owner_id if owner_id is not None else ctx.principal.account_id
    owners.visible_account(ctx, oid, "owner_id")
    q = select(Promotion).where(Promotion.owner_id == oid)
    if status:
        q = q.where(Promotion.status == status)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Promotion.id).offset(offset).limit(limit))
    promos = list(rows)
    plans = _promotion_plan_ids(ctx, [p.id for p in promos])
    return PromotionPage(
        [_promotion_info(ctx, p, plans[p.id]) for p in promos], total, offset, limit
    )


@operation("PromotionDisable", roles=EDITORS, mutating=True)
def promotion_disable(ctx: CallContext, *, promotion_id: int) -> PromotionInfo:
    """Stop a promotion for new orders. Subscriptions that already have its
    discount keep it for the cycles they were promised."""
    p = _get_promotion(ctx, promotion_id)
    if p.status != "disabled":
        audit.record(
            ctx,
            "promotion",
            p.id,
            owners.account(ctx, p.owner_id).path,
            {"status": {"from": p.status, "to": "disabled"}},
        )
        p.status = "disabled"
        p.updated_at = ctx.now()
    return _promotion_info(ctx, p)


def promotion_redeem(
    ctx: CallContext, promotion_id: int, account_id: int, reference: str | None = None
) -> None:
    """Count one use of a promotion by an order (for orders, in the order's
    transaction). The database decides: the use count rises only while below
    ``max_uses``, and a once-per-account promotion takes one use per account."""
    counted = ctx.session.execute(
        update(Promotion)
        .where(
            Promotion.id == promotion_id,
            Promotion.status == "active",
            (Promotion.max_uses.is_(None)) | (Promotion.used_count < Promotion.max_uses),
        )
        .values(used_count=Promotion.used_count + 1)
        .execution_options(synchronize_session="fetch")
    )
    if counted.rowcount != 1:
        raise ValidationError("promotion_code", "this promotion has been used up or disabled")
    p = ctx.session.get(Promotion, promotion_id)
    use = PromotionUse(
        promotion_id=promotion_id,
        account_id=account_id,
        once_key=account_id if p is not None and p.once_per_account else None,
        reference=reference,
        used_at=ctx.now(),
    )
    owners.savepoint_unique(
        ctx, use, "promotion_code", "this account has already used this promotion"
    )


def find_promotion(
    ctx: CallContext, plan: Plan, period: pricing.Period, code: str | None, buyer_id: int
) -> Promotion | None:
    """The promotion a quote or order applies: the one ``code`` names (checked,
    else a fault), or else the first automatic one that applies, or None."""
    now = ctx.now()
    if code is not None and code.strip():
        p = ctx.session.scalar(
            select(Promotion).where(
                Promotion.owner_id == plan.owner_id, Promotion.code == code.strip().upper()
            )
        )
        if p is None:
            raise ValidationError("promotion_code", "unknown promotion code")
        pricing.check_promotion(
            _promotion_terms(ctx, p, buyer_id),
            plan_id=plan.id,
            period=period,
            currency=plan.currency,
            now=now,
        )
        return p  # type: ignore[no-any-return]
    automatic = ctx.session.scalars(
        select(Promotion)
        .where(
            Promotion.owner_id == plan.owner_id,
            Promotion.code.is_(None),
            Promotion.status == "active",
        )
        .order_by(Promotion.id)
    )
    for p in automatic:
        try:
            pricing.check_promotion(
                _promotion_terms(ctx, p, buyer_id),
                plan_id=plan.id,
                period=period,
                currency=plan.currency,
                now=now,
            )
        except ValidationError:
            continue
        return p  # type: ignore[no-any-return]
    return None
