"""What an order does to subscriptions, once (``order.applied``): one effect
per line kind (:data:`EFFECTS`): create the subscription, change its plan or
resources, renew, cancel or transfer it. What an order gives back (the unused
part of the old plan, a refund on cancellation) becomes the buyer's prepaid
credit."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import select

from pba_server.billing import ledger
from pba_server.billing.ledger import Leg
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.orders.models import Order, OrderLine
from pba_server.orders.records import buyer_of, history, lines_of, sub_event, today
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods
from pba_server.subscriptions.store import new_subscription
from pba_server.subscriptions.types import SUBSCRIPTION_STATES, SubscriptionStatus


def apply_effect(ctx: CallContext, order: Order) -> None:
    """What the order does to subscriptions: once (``order.applied``)."""
    if order.applied:
        return
    for line in lines_of(ctx, order):
        detail = json.loads(line.detail)
        EFFECTS[line.kind](ctx, order, line, detail)
    order.applied = True


def _credit(ctx: CallContext, order: Order, amount: Decimal, memo: str) -> None:
    """Give ``amount`` to the buyer as prepaid credit (like BalanceAdjust)."""
    if amount <= 0:
        return
    buyer = buyer_of(ctx, order)
    ledger.post(
        ctx,
        kind="adjustment",
        account_id=buyer.id,
        currency=buyer.currency,
        memo=memo[:255],
        legs=[
            Leg("customer_credit", buyer.id, -amount),
            Leg("adjustments", order.vendor_id, amount),
        ],
        document_type="adjustment",
    )
    history(ctx, order, "credit", "credited", f"{amount} {buyer.currency}: {memo}"[:4000])


def _effect_sales(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    if line.subscription_id is not None:
        return
    trial = d.get("trial_ends_on")
    sub = new_subscription(
        ctx.session,
        ctx.clock,
        account_id=order.account_id,
        vendor_id=order.vendor_id,
        plan_version_id=line.plan_version_id or 0,
        period_count=line.period_count or 1,
        period_unit=line.period_unit or "month",
        start=today(ctx),
        status="trial" if trial else "active",
        trial_ends_on=date.fromisoformat(trial) if trial else None,
        parameters=d.get("parameters") or {},
        bought={int(k): Decimal(v) for k, v in (d.get("bought") or {}).items()},
        promotion_id=order.promotion_id,
        promotion_cycles=d.get("promotion_cycles"),
    )
    line.subscription_id = sub.id
    if order.subscription_id is None:
        order.subscription_id = sub.id
    sub_event(ctx, sub, "subscription.created")
    buyer = buyer_of(ctx, order)
    audit.record(ctx, "subscription", sub.id, buyer.path, {"created": {"order": order.id}})


def _effect_change(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    from pba_server.catalog.models import PlanRateRow

    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    before = {"plan_id": sub.plan_id, "plan_version_id": sub.plan_version_id}
    sub.plan_id = line.plan_id or sub.plan_id
    sub.plan_version_id = line.plan_version_id or sub.plan_version_id
    rates = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id == sub.plan_version_id)
        )
    }
    bought = {int(k): Decimal(v) for k, v in (d.get("bought") or {}).items()}
    old = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(SubscriptionResource).where(SubscriptionResource.subscription_id == sub.id)
        )
    }
    for rid, r in old.items():
        if rid not in rates:
            ctx.session.delete(r)
    for rid, rate in rates.items():
        r = old.get(rid)
        if r is None:
            r = SubscriptionResource(subscription_id=sub.id, resource_id=rid)
            ctx.session.add(r)
        r.included = rate.included
        r.bought = bought.get(rid, Decimal(0))
        r.unit_recurring_price = rate.unit_recurring_price
        r.overage_price = rate.overage_price
    sub.updated_at = ctx.now()
    ctx.session.flush()
    _credit(ctx, order, line_credit(line), f"order {order.id}: unused part of the old plan")
    sub_event(ctx, sub, "subscription.changed", changes={**before, "to_plan_id": sub.plan_id})


def line_credit(line: OrderLine) -> Decimal:
    return Decimal(json.loads(line.detail).get("credit") or "0")


def _effect_resource(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    for rid, qty in (d.get("add") or {}).items():
        r = ctx.session.get(
            SubscriptionResource, (line.subscription_id, int(rid)), with_for_update=True
        )
        if r is not None:
            r.bought += Decimal(qty)
    sub = ctx.session.get(Subscription, line.subscription_id)
    assert sub is not None
    sub.updated_at = ctx.now()
    _credit(ctx, order, line_credit(line), f"order {order.id}: resource change")
    sub_event(ctx, sub, "subscription.changed", changes={"resources_added": d.get("add")})


def _effect_renewal(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    start = date.fromisoformat(d["from"])
    if sub.period_end != start:
        # renewed meanwhile (the billing run read the subscription before this
        # order was placed, or another renewal order won): the period is
        # billed already, so what this order billed for it goes back as credit
        _credit(
            ctx,
            order,
            line.amount,
            f"order {order.id}: the period from {start.isoformat()} was renewed meanwhile",
        )
        return
    sub.period_start = start
    sub.period_end = add_periods(
        start, sub.period_count, sub.period_unit, anchor_day=sub.anchor_day
    )
    if sub.next_billing_date is not None and sub.next_billing_date <= start:
        sub.next_billing_date = sub.period_end
    if line.plan_version_id and line.plan_version_id != sub.plan_version_id:
        # renewed at a migrated version (renewal_version): its rates from now
        # on, the units bought kept (as the billing run's renewal does)
        from pba_server.catalog.models import PlanRateRow

        sub.plan_version_id = line.plan_version_id
        old = {
            r.resource_id: r
            for r in ctx.session.scalars(
                select(SubscriptionResource).where(SubscriptionResource.subscription_id == sub.id)
            )
        }
        rates = ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id == sub.plan_version_id)
        ).all()
        keep = {rate.resource_id for rate in rates}
        for rid, r in old.items():
            if rid not in keep:
                ctx.session.delete(r)
        for rate in rates:
            r = old.get(rate.resource_id)
            if r is None:
                r = SubscriptionResource(
                    subscription_id=sub.id, resource_id=rate.resource_id, bought=Decimal(0)
                )
                ctx.session.add(r)
            r.included = rate.included
            r.unit_recurring_price = rate.unit_recurring_price
            r.overage_price = rate.overage_price
    if sub.status == "trial":
        sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "convert"))
    elif sub.status == "expired":
        sub.status = "active"  # a manual renewal brings it back
    sub.updated_at = ctx.now()
    sub_event(ctx, sub, "subscription.changed", changes={"period_end": sub.period_end})


def _effect_cancellation(
    ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]
) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    reason = d.get("reason") or None
    if d.get("when") == "period_end":
        sub.cancel_on = sub.period_end
        sub.cancel_reason = reason
        sub.auto_renew = False
        sub.next_billing_date = None
        sub.updated_at = ctx.now()
        sub_event(ctx, sub, "subscription.changed", changes={"cancel_on": sub.cancel_on})
        return
    cancel_subscription(ctx, sub, reason)
    _credit(ctx, order, line_credit(line), f"order {order.id}: refund on cancellation")


def cancel_subscription(ctx: CallContext, sub: Subscription, reason: str | None) -> None:
    sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "cancel"))
    sub.cancel_reason = reason
    sub.cancel_on = today(ctx)
    sub.next_billing_date = None
    sub.updated_at = ctx.now()
    sub_event(ctx, sub, "subscription.cancelled")


def _effect_transfer(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    sub.account_id = int(d["to_account_id"])
    sub.updated_at = ctx.now()
    # its services and domains follow it (else the old owner would still see
    # and manage them, and the new one would not)
    from pba_server.domains.records import move_domains
    from pba_server.provisioning.api import move_services

    move_services(ctx, sub.id, sub.account_id)
    move_domains(ctx, sub.id, sub.account_id)
    sub_event(ctx, sub, "subscription.changed", changes={"account_id": sub.account_id})


def _effect_none(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    return None


EFFECTS: dict[str, Callable[[CallContext, Order, OrderLine, dict[str, Any]], None]] = {
    "sales": _effect_sales,
    "upgrade": _effect_change,
    "downgrade": _effect_change,
    "resource": _effect_resource,
    "renewal": _effect_renewal,
    "cancellation": _effect_cancellation,
    "transfer": _effect_transfer,
    "payment": _effect_none,
}
