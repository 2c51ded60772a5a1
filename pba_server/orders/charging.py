"""The ``charge`` step: charging the order's card, exactly once.

The step commits a lease on its order (``next_run_at`` :data:`STEP_LEASE` on,
renewed while the gateway call runs) before the payments code commits its
pending charge and calls the gateway; the charge's idempotency key is
``order:<id>:charge`` (attempt 1) or ``order:<id>:charge:<n>``
(:func:`charge_key`), so a rerun finds the same charge and never charges
twice. A charge left pending (gateway did not answer) is asked again later;
the payments reconciliation settles it. A charge whose request died (its
lease expired: a crash before or during the gateway call) is settled by the
step itself at once. A charge the gateway never saw (``not_found``: no money
moved) is not a decline: the step charges again with a new attempt (a new
key). ``not_found`` counts only when it can be trusted (the call was never
sent, or was sent at least the gateway's ``lookup_settles_seconds`` ago: see
payments.reconcile); until then the charge stays pending and the step checks
again every :data:`RECOVER_RETRY`, never charging with a new key meanwhile.
A gateway the server did not call (``Server.Busy``: its threads busy, its
circuit breaker open) moved no money and left no charge: the step tries the
same key again after :data:`BUSY_RETRY`, never declines for it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from pba_server.billing.models import Invoice
from pba_server.core.context import CallContext
from pba_server.core.errors import Busy, PaymentDeclined, PbaError
from pba_server.core.leases import LEASE, LeaseKeeper
from pba_server.orders.models import Order
from pba_server.orders.records import history
from pba_server.payments.models import GatewayPayment

# the charge step's lease on its order while it is at the gateway: renewed
# every few seconds (core/leases), so a runner that died frees the order
# within STEP_LEASE
STEP_LEASE = LEASE
PENDING_RETRY = timedelta(minutes=2)  # the gateway did not answer: ask again
RECOVER_RETRY = timedelta(seconds=15)  # the charge lost its request: settle soon
BUSY_RETRY = timedelta(seconds=30)  # the gateway was not called: try again
NEW_ATTEMPTS = 5  # charges the gateway never saw, retried with a new key


def _to_charge(ctx: CallContext, order: Order) -> Decimal:
    if order.type == "payment":
        return order.total
    if order.invoice_id is None:
        return Decimal(0)
    inv = ctx.session.get(Invoice, order.invoice_id, populate_existing=True)
    assert inv is not None
    if inv.status not in ("issued", "partially_paid"):
        return Decimal(0)
    return inv.total - inv.paid_amount - inv.credited_amount  # type: ignore[no-any-return]


def charge_key(order_id: int, attempt: int) -> str:
    """The idempotency key of the order's ``attempt``-th charge."""
    return f"order:{order_id}:charge" if attempt == 1 else f"order:{order_id}:charge:{attempt}"


def _order_charge(ctx: CallContext, order: Order, attempt: int) -> GatewayPayment | None:
    return ctx.session.scalar(  # type: ignore[no-any-return]
        select(GatewayPayment)
        .where(
            GatewayPayment.account_id == order.account_id,
            GatewayPayment.client_key == charge_key(order.id, attempt),
        )
        .execution_options(populate_existing=True)
    )


def _unseen(charge: GatewayPayment | None) -> bool:
    """A charge the gateway never saw: no money moved, charge again."""
    from pba_server.payments.reconcile import NOT_FOUND

    return charge is not None and charge.status == "declined" and charge.decline_code == NOT_FOUND


def _current_attempt(ctx: CallContext, order: Order) -> tuple[int, GatewayPayment | None]:
    """The order's charge attempt to make or replay (the first whose charge
    the gateway saw, or not made yet), and its charge if made. A pending
    charge whose request died (lease expired) is settled first."""
    from pba_server.payments.reconcile import settle_charge

    attempt = 1
    while True:
        charge = _order_charge(ctx, order, attempt)
        pending = charge is not None and charge.status == "pending"
        if pending and ctx.runtime is not None:
            assert charge is not None
            if settle_charge(ctx.uow, ctx.runtime, charge.id) not in (None, "pending"):
                history(ctx, order, "charge", charge.status, f"charge {charge.id} recovered")
        if not _unseen(charge):
            return attempt, charge
        attempt += 1


def lease(ctx: CallContext, order_id: int, step: str) -> LeaseKeeper:
    """Renews the order's lease (its ``next_run_at``) while the step is out."""
    return LeaseKeeper(
        ctx.session.get_bind(),
        ctx.clock,
        Order,
        order_id,
        Order.status == "running",
        Order.current_step == step,
        column="next_run_at",
    )


def charge(ctx: CallContext, order: Order) -> str | None:
    from pba_server.payments import charges as payments

    if order.on_account or order.payment_method_id is None:
        return "paid"  # on account: the invoice stays open on the account's terms
    if order.charge_id is None and _to_charge(ctx, order) <= 0:
        return "paid"  # nothing left (zero total, or settled from prepaid credit)
    attempt, _seen = _current_attempt(ctx, order)
    if attempt > NEW_ATTEMPTS:  # the gateway keeps losing our requests
        order.reason = "payment declined: not_found"
        return "declined"
    key = charge_key(order.id, attempt)
    # lease: no other runner takes this step while we are at the gateway
    order_id, step = order.id, order.current_step
    order.attempts += 1
    order.next_run_at = ctx.now() + STEP_LEASE
    ctx.uow.commit()
    reason: str | None = None
    busy: str | None = None
    info = None
    try:
        with lease(ctx, order_id, step):
            info = payments.payment_charge(
                ctx,
                payment_method_id=order.payment_method_id,
                idempotency_key=key,
                invoice_id=order.invoice_id,
                amount=order.total if order.type == "payment" else None,
            )
    except PaymentDeclined as exc:
        reason = exc.message
    except Busy as exc:  # not called: no money moved, no charge left
        busy = exc.message
    except PbaError as exc:
        reason = f"{exc.code}: {exc.message}"
    # back in a fresh transaction: lock the order again and check nothing moved it
    order = ctx.session.get(Order, order_id, with_for_update=True, populate_existing=True)
    assert order is not None
    if order.status != "running" or order.current_step != step:
        return None
    charge = _order_charge(ctx, order, attempt)
    if charge is not None:
        order.charge_id = charge.id
    if info is not None and info.status == "captured":
        history(
            ctx, order, "charge", "captured", f"charge {info.id}: {info.amount} {info.currency}"
        )
        return "paid"
    if busy is not None and charge is None:
        order.next_run_at = ctx.now() + BUSY_RETRY
        history(
            ctx,
            order,
            "charge",
            "busy",
            f"the gateway was not called; will try again: {busy}"[:500],
        )
        return None
    if _unseen(charge):  # no money moved: the next run charges again, new key
        order.next_run_at = ctx.now()
        history(ctx, order, "charge", "not_found", "the gateway never saw it; charging again")
        return None
    if reason is not None or (charge is not None and charge.status in ("declined", "error")):
        why = reason or (charge.message if charge is not None else None) or "declined"
        order.reason = f"payment declined: {why}"[:4000]
        return "declined"
    if charge is not None and charge.lease_until is not None:
        # its request is at the gateway (or died there): settled soon
        order.next_run_at = ctx.now() + RECOVER_RETRY
        history(ctx, order, "charge", "pending", "the charge is in flight; will check again")
        return None
    # pending: the gateway did not answer; ask again later (reconciliation settles it)
    order.next_run_at = ctx.now() + PENDING_RETRY
    history(ctx, order, "charge", "pending", "the gateway did not answer; will check again")
    return None
