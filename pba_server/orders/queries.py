"""An order in its API shape (:func:`order_info`), finding an order the
caller sees, and ``OrderGet``/``OrderList``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import cast

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound
from pba_server.core.money import money
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path
from pba_server.orders import records
from pba_server.orders.models import Order, OrderHistory, OrderLine
from pba_server.orders.types import (
    OrderCharge,
    OrderHistoryEntry,
    OrderInfo,
    OrderLineInfo,
    OrderPage,
    OrderStatus,
    OrderType,
    StepAction,
)
from pba_server.orders.workflow import Flow


def _line_info(ln: OrderLine) -> OrderLineInfo:
    return OrderLineInfo(
        position=ln.position,
        kind=cast(OrderType, ln.kind),
        description=ln.description,
        amount=ln.amount,
        plan_id=ln.plan_id,
        period_count=ln.period_count,
        period_unit=ln.period_unit,  # type: ignore[arg-type]
        subscription_id=ln.subscription_id,
        provisioned=ln.provisioned,
        charges=[
            OrderCharge(
                description=d["description"],
                quantity=Decimal(d["quantity"]).normalize(),
                unit_price=Decimal(d["unit_price"]),
                discount=Decimal(d["discount"]),
                amount=Decimal(d["quantity"]) * Decimal(d["unit_price"]) - Decimal(d["discount"]),
            )
            for d in json.loads(ln.charges)
        ],
    )


def order_info(ctx: CallContext, o: Order, *, full: bool = True) -> OrderInfo:
    flow = Flow.from_json(o.workflow)
    lines: list[OrderLineInfo] = []
    hist: list[OrderHistoryEntry] = []
    if full:
        lines = [_line_info(ln) for ln in records.lines_of(ctx, o)]
        hist = [
            OrderHistoryEntry(h.at, h.actor, h.step, h.action, h.result, h.note)
            for h in ctx.session.scalars(
                select(OrderHistory).where(OrderHistory.order_id == o.id).order_by(OrderHistory.id)
            )
        ]
    return OrderInfo(
        id=o.id,
        account_id=o.account_id,
        vendor_id=o.vendor_id,
        type=cast(OrderType, o.type),
        status=cast(OrderStatus, o.status),
        current_step=o.current_step,
        current_action=cast(StepAction, flow.step(o.current_step).action),
        currency=o.currency,
        subtotal=money(o.subtotal, o.currency, "subtotal"),
        discount=money(o.discount, o.currency, "discount"),
        total=money(o.total, o.currency, "total"),
        on_account=o.on_account,
        placed_by=o.placed_by,
        created_at=o.created_at,
        updated_at=o.updated_at,
        promotion_id=o.promotion_id,
        payment_method_id=o.payment_method_id,
        invoice_id=o.invoice_id,
        charge_id=o.charge_id,
        subscription_id=o.subscription_id,
        fraud_score=o.fraud_score,
        fraud_reasons=json.loads(o.fraud_reasons) if o.fraud_reasons else [],
        reason=o.reason,
        lines=lines,
        history=hist,
    )


def get_order(ctx: CallContext, order_id: int, *, for_update: bool = False) -> Order:
    o = ctx.session.get(Order, order_id, with_for_update=for_update or None)
    if o is None:
        raise NotFound(f"order {order_id} not found")
    acc = ctx.session.get(Account, o.account_id)
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"order {order_id} not found")
    return o  # type: ignore[no-any-return]


@operation("OrderGet", roles=ANY_ROLE)
def order_get(ctx: CallContext, *, order_id: int) -> OrderInfo:
    """One order: status, current step, lines, invoice and charge, history."""
    return order_info(ctx, get_order(ctx, order_id))


@operation("OrderList", roles=ANY_ROLE)
def order_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: OrderStatus | None = None,
    order_type: OrderType | None = None,
    offset: int = 0,
    limit: int = 100,
) -> OrderPage:
    """Orders in the caller's subtree (or of one account), newest first."""
    check_page(offset, limit)
    q = select(Order).join(Account, Account.id == Order.account_id)
    if account_id is not None:
        acc = get_account(ctx, account_id)
        q = q.where(Order.account_id == acc.id)
    else:
        q = q.where(Account.path.like(visible_path(ctx, None) + "%"))
    if status is not None:
        q = q.where(Order.status == status)
    if order_type is not None:
        q = q.where(Order.type == order_type)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Order.id.desc()).offset(offset).limit(limit)).all()
    return OrderPage(
        items=[order_info(ctx, o, full=False) for o in rows],
        total=int(total),
        offset=offset,
        limit=limit,
    )
