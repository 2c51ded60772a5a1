"""Running the seller's fraud screener for an order (the ``fraud_screen`` step).

The screener is the nearest active plugin instance of kind ``fraud_screener``
owned by the order's seller or an account above it. No screener: the order
passes. A screener that fails makes the order ``suspect``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext
from pba_server.core.money import quantize
from pba_server.orders.models import Order
from pba_server.payments.models import PluginInstance, StoredPaymentMethod
from pba_server.payments.plugin_objects import plugin_object
from pba_server.sdk import PluginError, loader
from pba_server.sdk import guard as plugincall
from pba_server.sdk.fraud import FraudScreener, OrderFacts, Screening

log = logging.getLogger("pba.orders")


def screener_for(ctx: CallContext, vendor: Account) -> tuple[PluginInstance, FraudScreener] | None:
    ids = [int(p) for p in vendor.path.strip("/").split("/") if p]
    plugins = loader.plugins()
    rows = ctx.session.scalars(
        select(PluginInstance).where(
            PluginInstance.account_id.in_(ids), PluginInstance.status == "active"
        )
    ).all()
    for aid in reversed(ids):
        for inst in sorted(rows, key=lambda r: r.id):
            p = plugins.get(inst.plugin)
            if inst.account_id != aid or p is None or p.cls is None:
                continue
            if p.cls.info.kind != "fraud_screener":
                continue
            screener: FraudScreener = plugin_object(ctx.secrets, inst, "fraud_screener", ctx.clock)
            return inst, screener
    return None


def facts_of(ctx: CallContext, order: Order) -> OrderFacts:
    acc = ctx.session.get(Account, order.account_id)
    assert acc is not None
    earlier = ctx.session.scalar(
        select(func.count())
        .select_from(Order)
        .where(
            Order.account_id == acc.id, Order.id != order.id, Order.created_at <= order.created_at
        )
    )
    last_hour = ctx.session.scalar(
        select(func.count())
        .select_from(Order)
        .where(
            Order.account_id == acc.id,
            Order.id != order.id,
            Order.created_at > order.created_at - timedelta(hours=1),
            Order.created_at <= order.created_at,
        )
    )
    method = (
        ctx.session.get(StoredPaymentMethod, order.payment_method_id)
        if order.payment_method_id
        else None
    )
    return OrderFacts(
        order_id=order.id,
        order_type=order.type,
        account_id=acc.id,
        account_created_at=acc.created_at,
        account_country=acc.country,
        currency=order.currency,
        total=quantize(order.total, order.currency),
        placed_at=order.created_at,
        on_account=order.on_account,
        card_country=None,
        card_brand=method.brand if method is not None else None,
        previous_orders=int(earlier or 0),
        orders_last_hour=int(last_hour or 0),
    )


def screen(ctx: CallContext, order: Order) -> Screening | None:
    vendor = ctx.session.get(Account, order.vendor_id)
    assert vendor is not None
    found = screener_for(ctx, vendor)
    if found is None:
        return None
    inst, screener = found
    try:
        return screener.screen(facts_of(ctx, order))
    except PluginError as exc:  # the guard masked it (or made it generic, with a ref)
        log.warning(
            "order %s: screener %s (instance %s) failed: %s: %s",
            order.id,
            inst.plugin,
            inst.id,
            type(exc).__name__,
            exc,
        )
        return Screening("suspect", 50, (f"the fraud screener failed: {exc}",))
    except Exception as exc:
        why = plugincall.unexpected(
            log, f"order {order.id}: screener {inst.plugin} (instance {inst.id})", exc
        )
        return Screening("suspect", 50, (f"the fraud screener failed: {why}",))
