"""Auto-pay: an issued invoice is charged to the buyer's default payment method.

The job ``payments-autopay`` (payments/jobs.py) takes each invoice issued
with ``autopay`` on and not attempted yet, marks it attempted (one
conditional UPDATE, committed: exactly one process wins it) and calls
:func:`autopay_invoice` with attempt 1. Dunning calls it again on its
schedule days with attempt 2, 3, ...

Each attempt is a :func:`pba_server.payments.charges.payment_charge` with the
idempotency key ``autopay:<invoice>:<attempt>`` made by the invoice's issuer
(a system call context): the pending row is committed before the gateway is
called, so an attempt is made once however often it is asked for, and an
answer lost on the way is settled by the reconciliation job. A decline
raises ``payment.failed`` and leaves the invoice unpaid.
"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account
from pba_server.billing.models import Invoice
from pba_server.core.clock import Clock
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import PaymentDeclined, PbaError
from pba_server.core.runtime import Runtime
from pba_server.payments.models import GatewayPayment, PluginInstance, StoredPaymentMethod

log = logging.getLogger("pba.payments")

AutopayResult = Literal["captured", "declined", "pending", "skipped"]
PAYABLE = ("issued", "partially_paid")
BATCH = 200


def autopay_key(invoice_id: int, attempt: int) -> str:
    return f"autopay:{invoice_id}:{attempt}"


def _result(status: str) -> AutopayResult:
    if status == "captured":
        return "captured"
    if status == "pending":
        return "pending"
    return "declined"  # declined, or error (the gateway refused the request)


def autopay_invoice(
    engine: Engine,
    clock: Clock,
    invoice_id: int,
    *,
    attempt: int = 1,
    runtime: Runtime,
) -> AutopayResult:
    """Charge an issued invoice's outstanding amount to the buyer's default
    payment method (attempt ``attempt``; the same attempt twice is charged
    once). "skipped": no default method, nothing outstanding, or the invoice
    (or its account, PaymentAutopaySet) opted out. Runs its own
    transactions: call it outside any. ``runtime``: the app's (its secret
    box opens the gateway's settings)."""
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    from pba_server.payments import charges, methods

    key = autopay_key(invoice_id, attempt)
    with UnitOfWork(engine) as uow:
        s = uow.session
        inv = s.get(Invoice, invoice_id)
        if inv is None or not inv.autopay or inv.status not in PAYABLE:
            return "skipped"
        if inv.total - inv.paid_amount - inv.credited_amount <= 0:
            return "skipped"
        seen = s.scalar(
            select(GatewayPayment).where(
                GatewayPayment.account_id == inv.account_id, GatewayPayment.client_key == key
            )
        )
        if seen is not None:
            return _result(seen.status)
        method = s.scalar(
            select(StoredPaymentMethod)
            .join(PluginInstance, PluginInstance.id == StoredPaymentMethod.instance_id)
            .where(
                StoredPaymentMethod.account_id == inv.account_id,
                StoredPaymentMethod.status == "active",
                StoredPaymentMethod.is_default.is_(True),
                PluginInstance.status == "active",
            )
        )
        if method is None or not methods.autopay_enabled(s, inv.account_id):
            return "skipped"
        issuer = s.get(Account, inv.issuer_id)
        assert issuer is not None
        ctx = system_context(
            uow,
            clock,
            account_id=issuer.id,
            account_path=issuer.path,
            operation="PaymentAutopay",
            runtime=runtime,
        )
        try:
            info = charges.payment_charge(
                ctx, payment_method_id=method.id, idempotency_key=key, invoice_id=invoice_id
            )
        except PaymentDeclined:
            return "declined"  # recorded, payment.failed raised; dunning tries again
        except IntegrityError:  # a concurrent call made this attempt first
            uow.rollback()
            return "pending"
        except PbaError as exc:  # e.g. the invoice was paid meanwhile
            log.warning("auto-pay of invoice %s: %s", invoice_id, exc)
            uow.rollback()
            return "skipped"
        uow.commit()
        return _result(info.status)


def run_autopay(uow: UnitOfWork, clock: Clock, *, runtime: Runtime) -> str:
    """The job: attempt 1 for every newly issued auto-pay invoice, once."""
    engine = uow.session.get_bind()
    assert isinstance(engine, Engine)
    ids = list(
        uow.session.scalars(
            select(Invoice.id)
            .where(
                Invoice.autopay.is_(True),
                Invoice.autopay_attempted_at.is_(None),
                Invoice.status.in_(PAYABLE),
            )
            .order_by(Invoice.id)
            .limit(BATCH)
        )
    )
    uow.rollback()  # no locks held while charging
    counts: dict[str, int] = {}
    for invoice_id in ids:
        with UnitOfWork(engine) as claim:
            won = claim.session.execute(
                update(Invoice)
                .where(Invoice.id == invoice_id, Invoice.autopay_attempted_at.is_(None))
                .values(autopay_attempted_at=clock.now())
            )
            claim.commit()
        if getattr(won, "rowcount", 0) != 1:
            continue  # another process took it
        try:
            result = autopay_invoice(engine, clock, invoice_id, attempt=1, runtime=runtime)
        except Exception:
            log.exception("auto-pay of invoice %s failed", invoice_id)
            result = "error"  # type: ignore[assignment]
        counts[result] = counts.get(result, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to auto-pay"
