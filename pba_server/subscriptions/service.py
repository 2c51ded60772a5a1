"""Subscription operations. Every change goes through an order (orders sit
above subscriptions: they are reached through the :class:`OrderDesk` port of
:mod:`.ports`, ``ctx.rt.port(OrderDesk)``): ChangePlan places an upgrade or downgrade order,
BuyResource a resource order, Cancel a cancellation order, Renew a renewal
order. ChangePreview prices a change with the same code as the order.
Suspend/Resume (staff) and SetAutoRenew act directly.

The lifecycle job (``subscriptions-lifecycle``) converts trials at their end
(a renewal order: invoice + charge) or expires them when the plan requires a
card and there is none, cancels subscriptions whose ``cancel_on`` came, and
raises ``subscription.expiring`` :data:`EXPIRING_DAYS` days before a term
ends (once per term): a renewal reminder (``auto_renew`` true: it renews and
is billed then) or an expiry notice (false: it ends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Literal, cast

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.catalog.models import Plan, PlanVersion, Resource
from pba_server.catalog.types import PeriodUnit, ResourceQuantity
from pba_server.core import audit
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import Forbidden, NotFound, ValidationError
from pba_server.core.money import Money
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.runtime import Runtime
from pba_server.core.scope import visible_path
from pba_server.orders.types import OrderInfo, OrderLineInput, OrderType, ParameterValue, When
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.ports import OrderDesk, ServiceLookup
from pba_server.subscriptions.types import (
    SUBSCRIPTION_STATES,
    SubscriptionServiceInfo,
    SubscriptionStatus,
)

STAFF = frozenset({"billing", "technical"})  # suspend and resume
SELLERS = frozenset({"sales"})  # what a customer buys, changes, renews, cancels
EXPIRING_DAYS = 14  # the setting's default: subscription.expiring this many days before a term ends


@dataclass
class SubscriptionResourceInfo:
    resource_id: int
    name: str
    included: Decimal
    bought: Decimal
    limit: Decimal
    unit_recurring_price: Decimal
    overage_price: Decimal
    used: Decimal | None = None  # usage: filled by the usage feature when present


@dataclass
class SubscriptionInfo:
    id: int
    account_id: int
    vendor_id: int
    plan_id: int
    plan_version: int
    name: str
    currency: str
    status: SubscriptionStatus
    period_count: int
    period_unit: PeriodUnit
    started_on: date
    period_start: date
    period_end: date
    auto_renew: bool
    next_billing_date: date | None = None
    trial_ends_on: date | None = None
    cancel_on: date | None = None
    cancel_reason: str | None = None
    suspended_reason: str | None = None
    parameters: list[ParameterValue] = field(default_factory=list)
    resources: list[SubscriptionResourceInfo] = field(default_factory=list)
    services: list[SubscriptionServiceInfo] = field(default_factory=list)


@dataclass
class SubscriptionPage:
    items: list[SubscriptionInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ChangePreviewLine:
    kind: Literal["credit", "charge"]
    description: str
    full_amount: Money
    days: int
    total_days: int
    amount: Money


@dataclass
class ChangePreviewInfo:
    subscription_id: int
    order_type: OrderType
    when: When
    currency: str
    lines: list[ChangePreviewLine]
    credit: Money
    charge: Money
    net: Money  # positive: owed now; negative: credited to the account
    invoice_total: Money  # what the order's invoice will carry (before tax)


# ---------------------------------------------------------------- views


def _services(ctx: CallContext, sub_id: int) -> list[SubscriptionServiceInfo]:
    return ctx.rt.port(ServiceLookup).services(ctx, sub_id)


def subscription_info(ctx: CallContext, sub: Subscription) -> SubscriptionInfo:
    v = ctx.session.get(PlanVersion, sub.plan_version_id)
    rows = ctx.session.execute(
        select(SubscriptionResource, Resource.name)
        .join(Resource, Resource.id == SubscriptionResource.resource_id)
        .where(SubscriptionResource.subscription_id == sub.id)
        .order_by(SubscriptionResource.resource_id)
    ).all()
    return SubscriptionInfo(
        id=sub.id,
        account_id=sub.account_id,
        vendor_id=sub.vendor_id,
        plan_id=sub.plan_id,
        plan_version=v.version if v is not None else 0,
        name=sub.name,
        currency=sub.currency,
        status=sub.status,
        period_count=sub.period_count,
        period_unit=sub.period_unit,
        started_on=sub.started_on,
        period_start=sub.period_start,
        period_end=sub.period_end,
        auto_renew=sub.auto_renew,
        next_billing_date=sub.next_billing_date,
        trial_ends_on=sub.trial_ends_on,
        cancel_on=sub.cancel_on,
        cancel_reason=sub.cancel_reason,
        suspended_reason=sub.suspended_reason,
        parameters=[
            ParameterValue(k, v) for k, v in sorted(json.loads(sub.parameters or "{}").items())
        ],
        resources=[
            SubscriptionResourceInfo(
                r.resource_id,
                name,
                r.included.normalize(),
                r.bought.normalize(),
                (r.included + r.bought).normalize(),
                r.unit_recurring_price.normalize(),
                r.overage_price.normalize(),
            )
            for r, name in rows
        ],
        services=_services(ctx, sub.id),
    )


def get_subscription(
    ctx: CallContext, subscription_id: int, *, for_update: bool = False
) -> Subscription:
    sub = ctx.session.get(Subscription, subscription_id, with_for_update=for_update or None)
    acc = ctx.session.get(Account, sub.account_id) if sub is not None else None
    if sub is None or acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"subscription {subscription_id} not found")
    return sub  # type: ignore[no-any-return]


@operation("SubscriptionGet", roles=ANY_ROLE)
def subscription_get(ctx: CallContext, *, subscription_id: int) -> SubscriptionInfo:
    """A subscription: status, plan version, period and dates, resource limits
    (included + bought), parameters and its services (when provisioned)."""
    return subscription_info(ctx, get_subscription(ctx, subscription_id))


@operation("SubscriptionList", roles=ANY_ROLE)
def subscription_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: SubscriptionStatus | None = None,
    plan_id: int | None = None,
    offset: int = 0,
    limit: int = 100,
) -> SubscriptionPage:
    """Subscriptions in the caller's subtree (or of one account)."""
    check_page(offset, limit)
    q = select(Subscription).join(Account, Account.id == Subscription.account_id)
    if account_id is not None:
        q = q.where(Subscription.account_id == get_account(ctx, account_id).id)
    else:
        q = q.where(Account.path.like(visible_path(ctx, None) + "%"))
    if status is not None:
        q = q.where(Subscription.status == status)
    if plan_id is not None:
        q = q.where(Subscription.plan_id == plan_id)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Subscription.id).offset(offset).limit(limit)).all()
    return SubscriptionPage([subscription_info(ctx, s) for s in rows], int(total), offset, limit)


# ---------------------------------------------------------------- changes through orders


def _change_type(ctx: CallContext, sub: Subscription, plan_id: int) -> OrderType:
    return ctx.rt.port(OrderDesk).change_type(ctx, sub, plan_id)


def _order(
    ctx: CallContext,
    sub: Subscription,
    order_type: str,
    line: OrderLineInput,
    payment_method_id: int | None,
    on_account: bool,
) -> OrderInfo:
    desk = ctx.rt.port(OrderDesk)
    o = desk.place(
        ctx,
        account_id=sub.account_id,
        order_type=order_type,
        lines=[line],
        promotion_code=None,
        payment_method_id=payment_method_id,
        on_account=on_account,
    )
    return desk.order_info(ctx, o)


@operation("SubscriptionChangePlan", roles=SELLERS, mutating=True)
def subscription_change_plan(
    ctx: CallContext,
    *,
    subscription_id: int,
    plan_id: int,
    when: When | None = None,
    payment_method_id: int | None = None,
    on_account: bool = False,
) -> OrderInfo:
    """Place an upgrade (the new plan costs at least as much per period) or
    downgrade order. ``now`` (default unless the plan says period_end):
    prorated -- credit for the unused days of the old plan, charge for the rest
    of the period on the new one (docs/proration.md). ``period_end``: the
    change takes effect when the current period ends, nothing is charged now."""
    sub = get_subscription(ctx, subscription_id)
    kind = _change_type(ctx, sub, plan_id)
    return _order(
        ctx,
        sub,
        kind,
        OrderLineInput(plan_id=plan_id, subscription_id=sub.id, when=when),
        payment_method_id,
        on_account,
    )


@operation("SubscriptionBuyResource", roles=SELLERS, mutating=True)
def subscription_buy_resource(
    ctx: CallContext,
    *,
    subscription_id: int,
    resource_id: int,
    amount: Decimal,
    payment_method_id: int | None = None,
    on_account: bool = False,
) -> OrderInfo:
    """Place a resource order: ``amount`` more units, up to the plan's
    maximum; their setup price and the rest of the period's recurring price,
    prorated."""
    sub = get_subscription(ctx, subscription_id)
    return _order(
        ctx,
        sub,
        "resource",
        OrderLineInput(subscription_id=sub.id, resources=[ResourceQuantity(resource_id, amount)]),
        payment_method_id,
        on_account,
    )


@operation("SubscriptionCancel", roles=SELLERS, mutating=True)
def subscription_cancel(
    ctx: CallContext, *, subscription_id: int, when: When = "now", reason: str | None = None
) -> OrderInfo:
    """Place a cancellation order. ``now``: services are deleted and what the
    plan's refund policy gives back for the unused days is credited to the
    account; ``period_end``: the subscription runs to the end of its period,
    is not renewed, and is cancelled then."""
    sub = get_subscription(ctx, subscription_id)
    return _order(
        ctx,
        sub,
        "cancellation",
        OrderLineInput(subscription_id=sub.id, when=when, reason=reason),
        None,
        True,
    )


@operation("SubscriptionRenew", roles=SELLERS, mutating=True)
def subscription_renew(
    ctx: CallContext,
    *,
    subscription_id: int,
    payment_method_id: int | None = None,
    on_account: bool = False,
) -> OrderInfo:
    """Place a manual renewal order: one more period at the renewal terms."""
    sub = get_subscription(ctx, subscription_id)
    return _order(
        ctx,
        sub,
        "renewal",
        OrderLineInput(subscription_id=sub.id),
        payment_method_id,
        on_account,
    )


@operation("ChangePreview", roles=ANY_ROLE)
def change_preview(
    ctx: CallContext,
    *,
    subscription_id: int,
    plan_id: int | None = None,
    resources: list[ResourceQuantity] | None = None,
    when: When = "now",
) -> ChangePreviewInfo:
    """What a plan change (``plan_id``) or buying resources (``resources``)
    would cost now, line by line, with the same code as the order."""
    sub = get_subscription(ctx, subscription_id)
    buyer = ctx.session.get(Account, sub.account_id)
    assert buyer is not None
    if (plan_id is None) == (resources is None):
        raise ValidationError("plan_id", "give plan_id or resources")
    kind: OrderType
    if plan_id is not None:
        kind = _change_type(ctx, sub, plan_id)
        line = ctx.rt.port(OrderDesk).price_line(
            ctx,
            buyer,
            kind,
            OrderLineInput(plan_id=plan_id, subscription_id=sub.id, when=when),
            "change",
            None,
        )
    else:
        kind = "resource"
        line = ctx.rt.port(OrderDesk).price_line(
            ctx,
            buyer,
            kind,
            OrderLineInput(subscription_id=sub.id, resources=resources),
            "change",
            None,
        )
    c = line.change
    return ChangePreviewInfo(
        subscription_id=sub.id,
        order_type=kind,
        when=when,
        currency=sub.currency,
        lines=[
            ChangePreviewLine(
                cast(Literal["credit", "charge"], ln.kind),
                ln.description,
                ln.full_amount,
                ln.days,
                ln.total_days,
                ln.amount,
            )
            for ln in (c.lines if c is not None else ())
        ],
        credit=c.credit if c is not None else Decimal(0),
        charge=c.charge if c is not None else Decimal(0),
        net=c.net if c is not None else Decimal(0),
        invoice_total=line.amount,
    )


# ---------------------------------------------------------------- direct changes


@operation("SubscriptionSetAutoRenew", roles=SELLERS, mutating=True)
def subscription_set_auto_renew(
    ctx: CallContext, *, subscription_id: int, auto_renew: bool
) -> SubscriptionInfo:
    """Whether the subscription renews at its term end."""
    sub = get_subscription(ctx, subscription_id, for_update=True)
    if sub.status in ("cancelled", "expired"):
        raise ValidationError("subscription_id", f"subscription {sub.id} is {sub.status}")
    sub.auto_renew = auto_renew
    sub.expiry_notice_for = None
    sub.updated_at = ctx.now()
    acc = ctx.session.get(Account, sub.account_id)
    assert acc is not None
    audit.record(ctx, "subscription", sub.id, acc.path, {"auto_renew": auto_renew})
    ctx.rt.port(OrderDesk).sub_event(
        ctx, sub, "subscription.changed", changes={"auto_renew": auto_renew}
    )
    return subscription_info(ctx, sub)


def _staff(ctx: CallContext, sub: Subscription) -> Account:
    acc = ctx.session.get(Account, sub.account_id)
    assert acc is not None
    if ctx.principal.account_id == acc.id:
        raise Forbidden("a customer does not suspend or resume its own subscriptions")
    return acc  # type: ignore[no-any-return]


@operation("SubscriptionSuspend", roles=STAFF, mutating=True)
def subscription_suspend(
    ctx: CallContext, *, subscription_id: int, reason: str | None = None
) -> SubscriptionInfo:
    """Suspend a subscription (staff): its services are suspended through provisioning."""
    sub = get_subscription(ctx, subscription_id, for_update=True)
    acc = _staff(ctx, sub)
    sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "suspend"))
    sub.suspended_reason = "staff"
    sub.updated_at = ctx.now()
    desk = ctx.rt.port(OrderDesk)
    desk.request_action(ctx, sub.id, "suspend", reason=(reason or "staff")[:255])
    audit.record(ctx, "subscription", sub.id, acc.path, {"suspended": reason or "staff"})
    desk.sub_event(ctx, sub, "subscription.suspended")
    return subscription_info(ctx, sub)


@operation("SubscriptionResume", roles=STAFF, mutating=True)
def subscription_resume(ctx: CallContext, *, subscription_id: int) -> SubscriptionInfo:
    """Resume a suspended subscription (staff): its services are resumed."""
    sub = get_subscription(ctx, subscription_id, for_update=True)
    acc = _staff(ctx, sub)
    sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "resume"))
    sub.suspended_reason = None
    sub.updated_at = ctx.now()
    desk = ctx.rt.port(OrderDesk)
    desk.request_action(ctx, sub.id, "resume")
    audit.record(ctx, "subscription", sub.id, acc.path, {"resumed": True})
    desk.sub_event(ctx, sub, "subscription.resumed")
    return subscription_info(ctx, sub)


# ---------------------------------------------------------------- lifecycle job


def _ctx_for(uow: UnitOfWork, clock: Clock, runtime: Runtime, sub: Subscription) -> CallContext:
    v = uow.session.get(Account, sub.vendor_id)
    assert v is not None
    return system_context(
        uow,
        clock,
        account_id=v.id,
        account_path=v.path,
        operation="subscriptions-lifecycle",
        runtime=runtime,
    )


def lifecycle(
    uow: UnitOfWork, clock: Clock, runtime: Runtime, *, expiring_days: int = EXPIRING_DAYS
) -> str:
    """Trials, scheduled cancellations and expiry notices due today."""
    desk = runtime.port(OrderDesk)
    today = clock.now().astimezone(UTC).date()
    s = uow.session
    converted = expired = cancelled = notified = 0
    for sub in s.scalars(
        select(Subscription)
        .where(Subscription.status == "trial", Subscription.trial_ends_on <= today)
        .order_by(Subscription.id)
        .with_for_update(skip_locked=True)
    ):
        ctx = _ctx_for(uow, clock, runtime, sub)
        prior = desk.last_renewal_status(ctx, sub.id)
        if prior in ("running", "waiting"):
            continue
        v = s.get(PlanVersion, sub.plan_version_id)
        method_id = desk.default_method_id(ctx, sub.account_id)
        if prior in ("rejected", "cancelled") or (
            method_id is None and v is not None and v.trial_requires_card
        ):
            sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "expire"))
            sub.next_billing_date = None
            sub.updated_at = clock.now()
            desk.sub_event(ctx, sub, "subscription.changed", changes={"status": "expired"})
            expired += 1
            continue
        try:
            desk.place(
                ctx,
                account_id=sub.account_id,
                order_type="renewal",
                lines=[OrderLineInput(subscription_id=sub.id)],
                promotion_code=None,
                payment_method_id=method_id,
                on_account=method_id is None,
            )
            converted += 1
        except Exception:  # e.g. over the credit limit: the trial expires
            sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "expire"))
            sub.next_billing_date = None
            expired += 1
    for sub in s.scalars(
        select(Subscription)
        .where(
            Subscription.cancel_on <= today,
            Subscription.status.in_(("active", "suspended", "trial")),
        )
        .with_for_update(skip_locked=True)
    ):
        ctx = _ctx_for(uow, clock, runtime, sub)
        desk.request_action(ctx, sub.id, "delete", reason=sub.cancel_reason or "")
        desk.cancel_subscription(ctx, sub, sub.cancel_reason)
        cancelled += 1
    horizon = today + timedelta(days=expiring_days)
    for sub in s.scalars(
        select(Subscription).where(
            Subscription.status == "active",
            Subscription.period_end <= horizon,
            Subscription.period_end > today,
            (Subscription.expiry_notice_for.is_(None))
            | (Subscription.expiry_notice_for != Subscription.period_end),
        )
    ):
        ctx = _ctx_for(uow, clock, runtime, sub)
        sub.expiry_notice_for = sub.period_end
        last = sub.period_end - timedelta(days=1)
        desk.sub_event(
            ctx,
            sub,
            "subscription.expiring",
            expires_on=last,
            days_left=(sub.period_end - today).days,
            auto_renew=sub.auto_renew,
        )
        notified += 1
    return (
        f"{converted} trial(s) converting, {expired} expired, {cancelled} cancelled, "
        f"{notified} expiry notice(s)"
    )


__all__ = ["Plan", "lifecycle"]
