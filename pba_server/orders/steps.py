"""The workflow steps that stay in the transaction: fraud screening, the
invoice, waiting for approval, notifying, completing and rejecting (and
cancelling the order's invoice, which rejecting, rolling back and
``OrderCancel`` do). Each takes the order's context and the locked order and
returns the step's result, or ``None`` to wait. The steps that call out live
in :mod:`.charging` and :mod:`.bundles`, undoing in :mod:`.rollback`."""

from __future__ import annotations

import json

from pba_server.billing.credit_notes import credit_note_create
from pba_server.billing.invoices import invoice_create, invoice_void
from pba_server.billing.models import Invoice
from pba_server.billing.types import InvoiceLineInput
from pba_server.core.context import CallContext
from pba_server.orders.effects import apply_effect
from pba_server.orders.models import Order
from pba_server.orders.pricing import Charge
from pba_server.orders.records import ACTOR, history, lines_of, order_event
from pba_server.payments.models import GatewayPayment


def fraud_screen(ctx: CallContext, order: Order) -> str | None:
    from pba_server.orders import fraud

    screening = fraud.screen(ctx, order)
    if screening is None:
        return "pass"
    order.fraud_score = screening.score
    order.fraud_reasons = json.dumps(list(screening.reasons))
    if screening.verdict == "fraud" and not order.reason:
        order.reason = "fraud screening: " + "; ".join(screening.reasons)
    return screening.verdict


def invoice(ctx: CallContext, order: Order) -> str | None:
    if order.invoice_id is not None or order.type == "payment":
        return "ok"
    charges: list[InvoiceLineInput] = []
    for line in lines_of(ctx, order):
        for d in json.loads(line.charges):
            c = Charge.from_json(d)
            if c.quantity * c.unit_price <= 0:
                continue
            charges.append(
                InvoiceLineInput(
                    description=c.description,
                    unit_price=c.unit_price,
                    quantity=c.quantity,
                    discount=c.discount,
                    tax_inclusive=c.tax_inclusive,
                    period_start=c.period_start,
                    period_end=c.period_end,
                    link_type="order",
                    link_id=str(order.id),
                )
            )
    if not charges:
        return "ok"
    inv = invoice_create(
        ctx,
        account_id=order.account_id,
        lines=charges,
        issue=True,
        notes=f"Order {order.id}",
        apply_credit=True,
        autopay=False,  # the workflow's charge step charges it, not auto-pay
    )
    order.invoice_id = inv.id
    history(ctx, order, "invoice", "created", f"invoice {inv.number} {inv.total} {inv.currency}")
    return "ok"


def wait_approval(ctx: CallContext, order: Order) -> str | None:
    if order.status != "waiting":
        order.status = "waiting"
        order.next_run_at = None
        history(ctx, order, "wait_approval", None, "waiting for approval", actor=ACTOR)
    return None


def notify(ctx: CallContext, order: Order) -> str | None:
    order_event(ctx, order, "order.notification", step=order.current_step)
    return "ok"


def complete(ctx: CallContext, order: Order) -> str | None:
    if not order.applied:
        apply_effect(ctx, order)
    order.status = "completed"
    order.next_run_at = None
    history(ctx, order, "complete", "completed", actor=ACTOR)
    order_event(ctx, order, "order.completed")
    return "completed"


def reject(ctx: CallContext, order: Order) -> str | None:
    charge = ctx.session.get(GatewayPayment, order.charge_id) if order.charge_id else None
    if order.invoice_id is not None and (charge is None or charge.status != "captured"):
        cancel_invoice(ctx, order, order.reason or "order rejected")
    order.status = "rejected"
    order.next_run_at = None
    order.reason = order.reason or "rejected by the workflow"
    history(ctx, order, "reject", "rejected", order.reason, actor=ACTOR)
    order_event(ctx, order, "order.rejected", reason=order.reason)
    return "rejected"


def cancel_invoice(ctx: CallContext, order: Order, why: str) -> None:
    """Void the order's invoice, or credit it in full when something was paid
    on it (that part becomes the account's prepaid credit)."""
    inv = ctx.session.get(Invoice, order.invoice_id, populate_existing=True)
    if inv is None or inv.status in ("void", "draft"):
        return
    if inv.paid_amount or inv.credited_amount:
        if inv.total - inv.credited_amount > 0:
            credit_note_create(ctx, invoice_id=inv.id, reason=why[:255])
    else:
        invoice_void(ctx, invoice_id=inv.id, reason=why[:255])
