"""The orders side of :class:`pba_server.subscriptions.ports.OrderDesk`:
what subscription operations and the subscriptions lifecycle job ask of
orders. ``bootstrap.build_app`` wires one :class:`Desk` into the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext
from pba_server.orders import effects, order_lines, placing, queries, records
from pba_server.orders import pricing as opricing
from pba_server.orders import provisioner as prov
from pba_server.orders.models import Order, OrderLine
from pba_server.orders.types import OrderInfo, OrderLineInput, OrderType
from pba_server.subscriptions.models import Subscription


class Desk:
    """Orders for subscriptions (implements ``OrderDesk``)."""

    def place(
        self,
        ctx: CallContext,
        *,
        account_id: int,
        order_type: str,
        lines: Sequence[OrderLineInput],
        promotion_code: str | None,
        payment_method_id: int | None,
        on_account: bool,
    ) -> Order:
        return placing.place(
            ctx,
            account_id=account_id,
            order_type=order_type,
            lines=lines,
            promotion_code=promotion_code,
            payment_method_id=payment_method_id,
            on_account=on_account,
        )

    def order_info(self, ctx: CallContext, order: Order) -> OrderInfo:
        return queries.order_info(ctx, order)

    def price_line(
        self,
        ctx: CallContext,
        buyer: Account,
        order_type: str,
        line: OrderLineInput,
        field: str,
        promotion_code: str | None,
    ) -> opricing.PricedLine:
        return order_lines.price_line(ctx, buyer, order_type, line, field, promotion_code)

    def change_type(self, ctx: CallContext, sub: Subscription, plan_id: int) -> OrderType:
        buyer = ctx.session.get(Account, sub.account_id)
        assert buyer is not None
        new_plan = opricing.sellable_plan(ctx, buyer, plan_id, "plan_id")
        line = opricing.price_plan_change(ctx, sub, new_plan, "now", "upgrade")
        assert line.change is not None
        old = sum((ln.full_amount for ln in line.change.lines if ln.kind == "credit"), Decimal(0))
        new = sum((ln.full_amount for ln in line.change.lines if ln.kind == "charge"), Decimal(0))
        return "upgrade" if new >= old else "downgrade"

    def last_renewal_status(self, ctx: CallContext, subscription_id: int) -> str | None:
        return ctx.session.execute(  # type: ignore[no-any-return]
            select(Order.status)
            .join(OrderLine, OrderLine.order_id == Order.id)
            .where(OrderLine.subscription_id == subscription_id, Order.type == "renewal")
            .order_by(Order.id.desc())
            .limit(1)
        ).scalar()

    def default_method_id(self, ctx: CallContext, account_id: int) -> int | None:
        method = records.default_method(ctx, account_id)
        return method.id if method is not None else None

    def sub_event(self, ctx: CallContext, sub: Subscription, type: str, **extra: Any) -> None:
        records.sub_event(ctx, sub, type, **extra)

    def cancel_subscription(self, ctx: CallContext, sub: Subscription, reason: str | None) -> None:
        effects.cancel_subscription(ctx, sub, reason)

    def request_action(
        self, ctx: CallContext, subscription_id: int, action: str, *, reason: str = ""
    ) -> None:
        prov.current(ctx).request_action(ctx, subscription_id, action, reason=reason)
