"""What every workflow step shares: the order's context, its lines and flow,
its history rows and events, and two reads placing an order needs (what the
account owes on account, its default payment method)."""

from __future__ import annotations

from datetime import UTC, date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.runtime import Runtime
from pba_server.core.secrets import SecretBox
from pba_server.events import emit
from pba_server.orders.models import Order, OrderHistory, OrderLine
from pba_server.orders.workflow import Flow
from pba_server.payments.models import StoredPaymentMethod
from pba_server.subscriptions.models import Subscription

ACTOR = "system:workflow"


def today(ctx: CallContext) -> date:
    return ctx.now().astimezone(UTC).date()


def order_ctx(
    uow: UnitOfWork,
    clock: Clock,
    order: Order,
    *,
    secrets: SecretBox,
    runtime: Runtime | None = None,
) -> CallContext:
    vendor = uow.session.get(Account, order.vendor_id)
    assert vendor is not None
    return system_context(
        uow,
        clock,
        account_id=vendor.id,
        account_path=vendor.path,
        operation="order-workflow",
        secrets=secrets,
        runtime=runtime,
    )


def runtime_ctx(uow: UnitOfWork, runtime: Runtime, order: Order) -> CallContext:
    return order_ctx(uow, runtime.clock, order, secrets=runtime.secrets, runtime=runtime)


def buyer_of(ctx: CallContext, order: Order) -> Account:
    acc = ctx.session.get(Account, order.account_id)
    assert acc is not None
    return acc  # type: ignore[no-any-return]


def history(
    ctx: CallContext,
    order: Order,
    action: str,
    result: str | None = None,
    note: str | None = None,
    *,
    actor: str | None = None,
    step: str | None = None,
) -> None:
    ctx.session.add(
        OrderHistory(
            order_id=order.id,
            at=ctx.now(),
            actor=(actor or ctx.principal.login)[:128],
            step=step or order.current_step,
            action=action,
            result=result,
            note=note[:4000] if note else None,
        )
    )


def order_event(ctx: CallContext, order: Order, type: str, **extra: Any) -> None:
    buyer = buyer_of(ctx, order)
    emit(
        ctx,
        type,
        ("order", order.id),
        {
            "order_id": order.id,
            "order_type": order.type,
            "status": order.status,
            "total": order.total,
            "currency": order.currency,
            **extra,
        },
        account_id=buyer.id,
        account_path=buyer.path,
    )


def sub_event(ctx: CallContext, sub: Subscription, type: str, **extra: Any) -> None:
    acc = ctx.session.get(Account, sub.account_id)
    assert acc is not None
    emit(
        ctx,
        type,
        ("subscription", sub.id),
        {"subscription_id": sub.id, "plan_id": sub.plan_id, "status": sub.status, **extra},
        account_id=acc.id,
        account_path=acc.path,
    )


def lines_of(ctx: CallContext, order: Order) -> list[OrderLine]:
    return list(
        ctx.session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
        )
    )


def flow_of(order: Order) -> Flow:
    return Flow.from_json(order.workflow)


def pending_on_account(ctx: CallContext, account_id: int) -> Decimal:
    """Total of the account's on-account orders not invoiced yet (for check_credit)."""
    total = ctx.session.scalar(
        select(func.coalesce(func.sum(Order.total), 0)).where(
            Order.account_id == account_id,
            Order.on_account.is_(True),
            Order.status.in_(("running", "waiting")),
            Order.invoice_id.is_(None),
        )
    )
    return Decimal(total or 0)


def default_method(ctx: CallContext, account_id: int) -> StoredPaymentMethod | None:
    return ctx.session.scalar(  # type: ignore[no-any-return]
        select(StoredPaymentMethod).where(
            StoredPaymentMethod.account_id == account_id,
            StoredPaymentMethod.status == "active",
            StoredPaymentMethod.is_default.is_(True),
        )
    )
