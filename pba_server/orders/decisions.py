"""Deciding on a placed order: ``OrderApprove`` and ``OrderReject`` (by its
seller, while it waits for approval) and ``OrderCancel`` (before it is
charged or applied).
"""

from __future__ import annotations

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, ValidationError
from pba_server.core.operations import operation
from pba_server.orders import checks, engine, records, steps
from pba_server.orders.checks import SELLERS
from pba_server.orders.models import Order
from pba_server.orders.queries import get_order, order_info
from pba_server.orders.types import OrderInfo
from pba_server.orders.workflow import Flow


def _require_seller_side(ctx: CallContext, o: Order) -> None:
    vendor = ctx.session.get(Account, o.vendor_id)
    assert vendor is not None
    if ctx.principal.account_id == o.account_id or not ctx.principal.sees(vendor.path):
        raise Forbidden(f"only the seller of order {o.id} (or its parents) decides on it")


def _waiting_approval(o: Order) -> None:
    action = Flow.from_json(o.workflow).step(o.current_step).action
    if o.status != "waiting" or action != "wait_approval":
        raise InvalidState(
            f"order {o.id} is {o.status} at step {o.current_step}, not waiting for approval"
        )


@operation("OrderApprove", roles=SELLERS, mutating=True)
def order_approve(ctx: CallContext, *, order_id: int, note: str | None = None) -> OrderInfo:
    """Approve an order waiting for approval; its workflow goes on in the background."""
    o = get_order(ctx, order_id, for_update=True)
    _require_seller_side(ctx, o)
    _waiting_approval(o)
    engine.advance_manual(ctx, o, "approved", checks.text(note, "note", 1000))
    records.order_event(ctx, o, "order.approved")
    return order_info(ctx, o)


@operation("OrderReject", roles=SELLERS, mutating=True)
def order_reject(ctx: CallContext, *, order_id: int, reason: str) -> OrderInfo:
    """Reject an order waiting for approval, with the reason the customer sees."""
    why = checks.text(reason, "reason", 1000)
    if why is None:
        raise ValidationError("reason", "is required")
    o = get_order(ctx, order_id, for_update=True)
    _require_seller_side(ctx, o)
    _waiting_approval(o)
    o.reason = why
    engine.advance_manual(ctx, o, "rejected", why)
    return order_info(ctx, o)


@operation("OrderCancel", roles=SELLERS, mutating=True)
def order_cancel(ctx: CallContext, *, order_id: int, reason: str | None = None) -> OrderInfo:
    """Cancel an order that has not been charged or applied yet (by the buyer
    or its seller): its invoice is voided. Later, use a cancellation order."""
    o = get_order(ctx, order_id, for_update=True)
    if o.status not in ("running", "waiting"):
        raise InvalidState(f"order {o.id} is {o.status}")
    action = Flow.from_json(o.workflow).step(o.current_step).action
    started = action in ("rollback", "complete", "reject") or (
        action == "charge" and o.attempts > 0
    )
    if o.charge_id is not None or o.applied or started:
        raise InvalidState(
            f"order {o.id} is at step {o.current_step}; it can no longer be cancelled"
        )
    why = checks.text(reason, "reason", 1000) or "cancelled"
    if o.invoice_id is not None:
        sysctx = records.order_ctx(ctx.uow, ctx.clock, o, secrets=ctx.secrets, runtime=ctx.runtime)
        steps.cancel_invoice(sysctx, o, why)
    o.status = "cancelled"
    o.reason = why
    o.next_run_at = None
    o.updated_at = ctx.now()
    records.history(ctx, o, "cancel", "cancelled", why)
    records.order_event(ctx, o, "order.rejected", reason=why)
    return order_info(ctx, o)
