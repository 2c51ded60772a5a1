"""One order line checked by its order type (the subscription it changes, its
state, the plan's parameters) and priced: :func:`price_line`, the one code
path for orders and previews (the prices come from :mod:`.pricing`).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.billing.common import seller_of
from pba_server.catalog import parameters as params
from pba_server.catalog import pricing as cpricing
from pba_server.catalog import templates, versions
from pba_server.catalog.models import PlanVersion
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.money import money
from pba_server.domains import availability
from pba_server.orders import checks
from pba_server.orders import pricing as opricing
from pba_server.orders.models import Order, OrderLine
from pba_server.orders.types import OrderLineInput
from pba_server.subscriptions.models import Subscription


def _subscription(ctx: CallContext, buyer: Account, sub_id: int | None, field: str) -> Subscription:
    if sub_id is None:
        raise ValidationError(field, "is required for this order type")
    sub = ctx.session.get(Subscription, sub_id, with_for_update=True)
    if sub is None or sub.account_id != buyer.id:
        raise ValidationError(field, f"account {buyer.id} has no subscription {sub_id}")
    return sub  # type: ignore[no-any-return]


def _live(sub: Subscription, field: str, *allowed: str) -> None:
    ok = allowed or ("active", "trial")
    if sub.status not in ok:
        raise InvalidState(f"subscription {sub.id} is {sub.status}")
    if sub.cancel_on is not None and "cancelled" not in ok:
        raise InvalidState(f"subscription {sub.id} is being cancelled on {sub.cancel_on}")


def _open_order_for(ctx: CallContext, sub_id: int) -> None:
    busy = ctx.session.scalar(
        select(OrderLine.order_id)
        .join(Order, Order.id == OrderLine.order_id)
        .where(OrderLine.subscription_id == sub_id, Order.status.in_(("running", "waiting")))
        .limit(1)
    )
    if busy is not None:
        raise InvalidState(f"subscription {sub_id} has order {busy} in progress")


def price_line(
    ctx: CallContext,
    buyer: Account,
    order_type: str,
    li: OrderLineInput,
    field: str,
    promotion_code: str | None,
) -> opricing.PricedLine:
    """Validate and price one order line (the one code path for orders and
    previews)."""
    if order_type == "sales":
        if li.plan_id is None:
            raise ValidationError(f"{field}.plan_id", "is required for a sales order")
        plan = opricing.sellable_plan(ctx, buyer, li.plan_id, f"{field}.plan_id")
        template_params = templates.template_parameters(ctx, plan.template_id)
        values: dict[str, str] = {}
        for i, pv in enumerate(li.parameters or []):
            if pv.name in values:
                raise ValidationError(f"{field}.parameters[{i}].name", "is given twice")
            values[pv.name] = pv.value
        checked = params.check_values(template_params, values, f"{field}.parameters")
        # a domain plan: a valid name under its TLD, not live here already
        availability.check_order(ctx, plan.template_id, checked, f"{field}.parameters")
        line = opricing.price_sales(
            ctx,
            buyer,
            plan,
            period_count=li.period_count,
            period_unit=li.period_unit,
            options=li.options or [],
            resources=li.resources or [],
            promotion_code=promotion_code,
        )
        q = line.quote
        assert q is not None and line.period is not None
        extra = {rq.resource_id: Decimal(str(rq.quantity)) for rq in li.resources or []}
        units = cpricing.selected_units(
            [
                cpricing.Rate(
                    resource_id=r.resource_id,
                    name="",
                    included=r.included,
                    maximum=r.maximum,
                    optional=r.optional,
                    complimentary=r.complimentary,
                )
                for r in versions.terms_of(ctx, line.version).rates  # type: ignore[arg-type]
            ],
            li.options or [],
            extra,
        )
        line.detail = {
            "parameters": checked,
            "bought": {str(rid): str(b) for rid, (_i, b) in units.items() if b > 0},
            "promotion_cycles": q.discount_cycles,
        }
        if q.trial is not None:
            from pba_server.subscriptions.periods import add_periods

            line.detail["trial_ends_on"] = add_periods(
                opricing.today(ctx), q.trial.length, q.trial.unit
            ).isoformat()
            line.detail["trial_requires_card"] = q.trial.requires_card
        return line
    if order_type == "payment":
        if li.amount is None:
            raise ValidationError(f"{field}.amount", "is required for a payment order")
        amt = money(li.amount, buyer.currency, f"{field}.amount")
        if amt <= 0:
            raise ValidationError(f"{field}.amount", "must be positive")
        return opricing.PricedLine(
            kind="payment",
            description=f"Prepayment {amt} {buyer.currency}",
            charges=[opricing.Charge("Prepayment", Decimal(1), amt)],
        )
    sub = _subscription(ctx, buyer, li.subscription_id, f"{field}.subscription_id")
    _open_order_for(ctx, sub.id)
    if order_type in ("upgrade", "downgrade"):
        _live(sub, field)
        if li.plan_id is None:
            raise ValidationError(f"{field}.plan_id", "is required: the plan to change to")
        new_plan = opricing.sellable_plan(ctx, buyer, li.plan_id, f"{field}.plan_id")
        when = li.when or _default_when(ctx, sub)
        return opricing.price_plan_change(ctx, sub, new_plan, when, order_type)
    if order_type == "resource":
        _live(sub, field, "active")
        return opricing.price_resource(ctx, sub, li.resources or [])
    if order_type == "renewal":
        _live(sub, field, "active", "expired", "trial")
        return opricing.price_renewal(ctx, sub)
    if order_type == "cancellation":
        _live(sub, field, "active", "trial", "suspended")
        when = li.when or "now"
        reason = checks.text(li.reason, f"{field}.reason", 1000)
        refund = opricing.refund_on_cancel(ctx, sub, when)
        return opricing.PricedLine(
            kind="cancellation",
            description=f"Cancel subscription {sub.id} ({when.replace('_', ' ')})",
            subscription=sub,
            credit=refund,
            detail={"when": when, "reason": reason},
        )
    if order_type == "transfer":
        _live(sub, field, "active", "suspended", "trial")
        if li.to_account_id is None:
            raise ValidationError(f"{field}.to_account_id", "is required for a transfer")
        to = ctx.session.get(Account, li.to_account_id)
        if to is None or not ctx.principal.sees(to.path):
            raise ValidationError(f"{field}.to_account_id", f"no account {li.to_account_id}")
        if to.id == buyer.id or seller_of(ctx, to).id != seller_of(ctx, buyer).id:
            raise ValidationError(
                f"{field}.to_account_id", "must be another customer of the same seller"
            )
        if to.currency != sub.currency or to.status != "active":
            raise ValidationError(
                f"{field}.to_account_id", "is not an active account in the subscription's currency"
            )
        return opricing.PricedLine(
            kind="transfer",
            description=f"Transfer subscription {sub.id} to account {to.id}",
            subscription=sub,
            detail={"to_account_id": to.id},
        )
    raise ValidationError("order_type", f"unknown order type {order_type!r}")


def _default_when(ctx: CallContext, sub: Subscription) -> str:
    v = ctx.session.get(PlanVersion, sub.plan_version_id)
    return "period_end" if v is not None and v.change_timing == "period_end" else "now"
