"""The ``rollback`` step: undoing a paid order whose provisioning failed."""

from __future__ import annotations

import logging

from pba_server.core.context import CallContext
from pba_server.core.errors import PbaError
from pba_server.orders import provisioner as prov
from pba_server.orders.charging import STEP_LEASE, lease
from pba_server.orders.effects import cancel_subscription
from pba_server.orders.models import Order
from pba_server.orders.records import history, lines_of
from pba_server.orders.steps import cancel_invoice
from pba_server.payments.models import GatewayPayment
from pba_server.subscriptions.models import Subscription

log = logging.getLogger("pba.orders")


def rollback(ctx: CallContext, order: Order) -> str | None:
    """Undo a paid order whose provisioning failed: refund the charge, credit
    the invoice, cancel the subscriptions it created (their bundles were rolled
    back by provisioning) and delete services of lines that did succeed."""
    from pba_server.payments import charges as payments

    why = order.reason or "provisioning failed"
    order_id, step = order.id, order.current_step
    if order.charge_id is not None:
        charge = ctx.session.get(GatewayPayment, order.charge_id, populate_existing=True)
        if charge is not None and charge.status == "captured" and charge.amount > charge.refunded:
            order.next_run_at = ctx.now() + STEP_LEASE
            ctx.uow.commit()
            try:
                with lease(ctx, order_id, step):
                    payments.payment_refund(
                        ctx,
                        charge_id=charge.id,
                        amount=charge.amount - charge.refunded,
                        reason=f"order {order_id}: {why}"[:255],
                        idempotency_key=f"order:{order_id}:refund",
                    )
            except PbaError as exc:
                log.warning("order %s: refund refused (%s); crediting instead", order_id, exc)
            order = ctx.session.get(Order, order_id, with_for_update=True, populate_existing=True)
            assert order is not None
            if order.status != "running" or order.current_step != step:
                return None
            history(ctx, order, "rollback", "refunded", f"charge {order.charge_id}")
    if order.invoice_id is not None:
        cancel_invoice(ctx, order, f"order {order.id} rolled back"[:255])
    p = prov.current(ctx)
    for line in lines_of(ctx, order):
        if line.kind != "sales" or line.subscription_id is None:
            continue
        sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
        if sub is None or sub.status == "cancelled":
            continue
        if line.provisioned == "done":
            p.request_action(ctx, sub.id, "delete", order_id=order.id, reason="order rolled back")
        cancel_subscription(ctx, sub, "provisioning failed")
    return "ok"
