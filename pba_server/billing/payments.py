"""Offline payments: recording them, allocating what is left of them,
giving them back (card refunds), and listing them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.billing import ledger
from pba_server.billing.allocation import apply_credit, unpaid_invoices
from pba_server.billing.common import BILLING, READERS, billable, seller_of, today_for
from pba_server.billing.documents import get_invoice
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import Invoice, Payment, PaymentAllocation
from pba_server.billing.rules import settle_status
from pba_server.billing.types import AllocationInfo, PaymentInfo, PaymentMethod, PaymentPage
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.money import money, quantize
from pba_server.core.operations import operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path


def _payment_info(ctx: CallContext, payments: Sequence[Payment]) -> list[PaymentInfo]:
    ids = [p.id for p in payments]
    allocs: dict[int, list[AllocationInfo]] = {i: [] for i in ids}
    if ids:
        for a, num in ctx.session.execute(
            select(PaymentAllocation, Invoice.number)
            .join(Invoice, Invoice.id == PaymentAllocation.invoice_id)
            .where(PaymentAllocation.payment_id.in_(ids))
            .order_by(PaymentAllocation.id)
        ):
            allocs[a.payment_id].append(
                AllocationInfo(
                    a.invoice_id, quantize(a.amount, _currency_of(payments, a.payment_id)), num
                )
            )
    return [
        PaymentInfo(
            id=p.id,
            account_id=p.account_id,
            issuer_id=p.issuer_id,
            currency=p.currency,
            amount=quantize(p.amount, p.currency),
            unallocated=quantize(p.amount - p.allocated, p.currency),
            method=p.method,  # type: ignore[arg-type]
            reference=p.reference,
            received_on=p.received_on,
            recorded_at=p.recorded_at,
            allocations=allocs[p.id],
        )
        for p in payments
    ]


def _currency_of(payments: Sequence[Payment], payment_id: int) -> str:
    return next(p.currency for p in payments if p.id == payment_id)


@operation("PaymentRecord", roles=BILLING, mutating=True)
def payment_record(
    ctx: CallContext,
    *,
    account_id: int,
    amount: Decimal,
    method: PaymentMethod,
    reference: str,
    received_on: date,
    invoice_ids: list[int] | None = None,
    allocate: bool = True,
) -> PaymentInfo:
    """Record an offline payment (bank transfer, cheque, cash) received from the
    account, in its currency. With ``allocate`` it settles the named invoices in
    the order given, or else the unpaid ones oldest first; the rest stays on
    the account as prepaid credit."""
    acc = billable(ctx, account_id)
    amt = money(amount, acc.currency, "amount")
    if amt <= 0:
        raise ValidationError("amount", "must be positive")
    ref = reference.strip()
    if not 1 <= len(ref) <= 128:
        raise ValidationError("reference", "must be 1 to 128 characters")
    if received_on > today_for(ctx):
        raise ValidationError("received_on", "is in the future")
    if invoice_ids is not None and not allocate:
        raise ValidationError("invoice_ids", "names invoices to allocate to, but allocate is false")
    issuer = seller_of(ctx, acc)
    targets = unpaid_invoices(ctx, acc, invoice_ids) if allocate else []
    p = Payment(
        account_id=acc.id,
        issuer_id=issuer.id,
        currency=acc.currency,
        amount=amt,
        allocated=ZERO,
        method=method,
        reference=ref,
        received_on=received_on,
        recorded_at=ctx.now(),
    )
    ctx.session.add(p)
    ctx.session.flush()
    ledger.post(
        ctx,
        kind="payment",
        account_id=acc.id,
        currency=acc.currency,
        memo=f"{method.replace('_', ' ')} {ref}",
        legs=[Leg("cash", issuer.id, amt, method), Leg("customer_credit", acc.id, -amt)],
        document_type="payment",
        document_id=p.id,
    )
    if method != "card":  # card payments: payments raises it, with the charge
        events.emit(
            ctx,
            "payment.succeeded",
            ("payment", p.id),
            {"payment_id": p.id, "amount": amt, "currency": acc.currency, "method": method}
            | {"reason": None, "charge_id": None, "invoice_id": None},
            account_id=acc.id,
            account_path=acc.path,
        )
    apply_credit(ctx, acc, targets, payment=p)
    audit.record(
        ctx, "payment", p.id, acc.path, {"amount": amt, "method": method, "reference": ref}
    )
    return _payment_info(ctx, [p])[0]


def payment_refund_entries(ctx: CallContext, payment_id: int, amount: Decimal, memo: str) -> None:
    """Give back ``amount`` of a payment (a card refund): first from what is
    unallocated, then by undoing its allocations newest first, so the invoices
    paid with it become unpaid again. The refunded money counts as used up
    (``allocated``), so it is never allocated again. The caller checks the
    amount against what is left."""
    p = ctx.session.get(Payment, payment_id, with_for_update=True, populate_existing=True)
    if p is None:
        raise NotFound(f"payment {payment_id} not found")
    acc = get_account(ctx, p.account_id)
    need = amount - (p.amount - p.allocated)
    if need > 0:
        for a in ctx.session.scalars(
            select(PaymentAllocation)
            .where(PaymentAllocation.payment_id == p.id)
            .order_by(PaymentAllocation.id.desc())
            .with_for_update()
        ).all():
            if need <= 0:
                break
            take = min(a.amount, need)
            inv = get_invoice(ctx, a.invoice_id, for_update=True)
            ledger.post(
                ctx,
                kind="deallocation",
                account_id=acc.id,
                currency=p.currency,
                memo=f"refund undoes payment on invoice {inv.number}",
                legs=[Leg("receivable", acc.id, take), Leg("customer_credit", acc.id, -take)],
                document_type="invoice",
                document_id=inv.id,
            )
            inv.paid_amount -= take
            settle_status(inv)
            p.allocated -= take
            need -= take
            if take == a.amount:
                ctx.session.delete(a)
            else:
                a.amount -= take
        if need > 0:
            raise InvalidState(f"payment {p.id} has less than {amount} left to refund")
    ledger.post(
        ctx,
        kind="refund",
        account_id=acc.id,
        currency=p.currency,
        memo=memo,
        legs=[Leg("customer_credit", acc.id, amount), Leg("cash", p.issuer_id, -amount, p.method)],
        document_type="payment",
        document_id=p.id,
    )
    p.allocated += amount
    ctx.session.flush()


@operation("PaymentAllocate", roles=BILLING, mutating=True)
def payment_allocate(
    ctx: CallContext, *, payment_id: int, invoice_ids: list[int] | None = None
) -> PaymentInfo:
    """Allocate what is left of a payment to the named unpaid invoices (in that
    order) or to the oldest unpaid ones."""
    row = ctx.session.execute(
        select(Payment, Account.path)
        .join(Account, Account.id == Payment.account_id)
        .where(Payment.id == payment_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"payment {payment_id} not found")
    p = ctx.session.get(Payment, payment_id, with_for_update=True, populate_existing=True)
    assert p is not None
    acc = billable(ctx, p.account_id)
    if p.allocated >= p.amount:
        raise InvalidState(f"payment {p.id} is fully allocated")
    made = apply_credit(ctx, acc, unpaid_invoices(ctx, acc, invoice_ids), payment=p)
    audit.record(
        ctx, "payment", p.id, acc.path, {"allocated": [[a.invoice_id, a.amount] for a in made]}
    )
    return _payment_info(ctx, [p])[0]


@operation("PaymentList", roles=READERS)
def payment_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    offset: int = 0,
    limit: int = 100,
) -> PaymentPage:
    """Payments received from an account's subtree (default: the caller's), by
    date received [date_from, date_to], newest first."""
    check_page(offset, limit)
    path = visible_path(ctx, account_id)
    q = select(Payment).join(Account, Account.id == Payment.account_id)
    q = q.where(Account.path.startswith(path, autoescape=True))
    if date_from:
        q = q.where(Payment.received_on >= date_from)
    if date_to:
        q = q.where(Payment.received_on <= date_to)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Payment.id.desc()).offset(offset).limit(limit)).all()
    return PaymentPage(items=_payment_info(ctx, rows), total=total, offset=offset, limit=limit)
