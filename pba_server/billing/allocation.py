"""Settling invoices from an account's prepaid credit and payments, oldest
first or as named, and the hooks told when some were settled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.billing import ledger
from pba_server.billing.documents import invoice_event
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import Invoice, Payment, PaymentAllocation
from pba_server.billing.rules import INVOICE_STATES, outstanding, settle_status
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError

# Called with (ctx, account) in the same transaction after credit or a payment
# settled some of the account's invoices (dunning resumes services from here).
SETTLEMENT_HOOKS: list[Callable[[CallContext, Account], None]] = []


def _available_credit(ctx: CallContext, account_id: int, currency: str) -> Decimal:
    row = ledger.balance_row(ctx, account_id, currency)
    return max(-row.credit, ZERO)


def open_payments(ctx: CallContext, account_id: int) -> list[Payment]:
    """The account's payments with an unallocated remainder, oldest first, locked."""
    return list(
        ctx.session.scalars(
            select(Payment)
            .where(Payment.account_id == account_id, Payment.allocated < Payment.amount)
            .order_by(Payment.id)
            .with_for_update()
        )
    )


def apply_credit(
    ctx: CallContext,
    acc: Account,
    invoices: Sequence[Invoice],
    *,
    payment: Payment | None = None,
) -> list[PaymentAllocation]:
    """Settle ``invoices`` in order from the account's prepaid credit.

    With ``payment``, at most its unallocated amount is used and the
    allocations are its own; otherwise credit is drawn from payments with an
    unallocated remainder oldest first, then from other credit (credit notes,
    adjustments).
    """
    budget = _available_credit(ctx, acc.id, acc.currency)
    if payment is not None:
        budget = min(budget, payment.amount - payment.allocated)
        sources: list[Payment] = [payment]
    else:
        sources = open_payments(ctx, acc.id)
    made: list[PaymentAllocation] = []
    for inv in invoices:
        if budget <= 0:
            break
        amount = min(outstanding(inv), budget)
        if amount <= 0:
            continue
        INVOICE_STATES.next(inv.status, "settle")
        tx = ledger.post(
            ctx,
            kind="allocation",
            account_id=acc.id,
            currency=acc.currency,
            memo=f"credit applied to invoice {inv.number}",
            legs=[Leg("customer_credit", acc.id, amount), Leg("receivable", acc.id, -amount)],
            document_type="invoice",
            document_id=inv.id,
        )
        left = amount
        for src in sources:
            take = min(left, src.amount - src.allocated)
            if take > 0:
                src.allocated += take
                left -= take
                made.append(
                    PaymentAllocation(
                        payment_id=src.id,
                        invoice_id=inv.id,
                        transaction_id=tx.id,
                        amount=take,
                        at=ctx.now(),
                    )
                )
        if left > 0:
            made.append(
                PaymentAllocation(
                    payment_id=None,
                    invoice_id=inv.id,
                    transaction_id=tx.id,
                    amount=left,
                    at=ctx.now(),
                )
            )
        inv.paid_amount += amount
        settle_status(inv)
        if inv.status == "paid":
            invoice_event(ctx, "invoice.paid", inv)
        budget -= amount
    ctx.session.add_all(made)
    ctx.session.flush()
    if made:
        for hook in SETTLEMENT_HOOKS:
            hook(ctx, acc)
    return made


def unpaid_invoices(ctx: CallContext, acc: Account, invoice_ids: list[int] | None) -> list[Invoice]:
    q = select(Invoice).where(
        Invoice.account_id == acc.id, Invoice.status.in_(("issued", "partially_paid"))
    )
    if invoice_ids is not None:
        if len(set(invoice_ids)) != len(invoice_ids):
            raise ValidationError("invoice_ids", "names an invoice twice")
        q = q.where(Invoice.id.in_(invoice_ids))
    rows = {i.id: i for i in ctx.session.scalars(q.order_by(Invoice.id).with_for_update())}
    if invoice_ids is None:
        # oldest first: by due date, then by number order
        return sorted(rows.values(), key=lambda i: (i.due_date or date.max, i.seq or 0, i.id))
    missing = [i for i in invoice_ids if i not in rows]
    if missing:
        raise ValidationError(
            "invoice_ids", f"invoice {missing[0]} is not an unpaid issued invoice of the account"
        )
    return [rows[i] for i in invoice_ids]
