"""Credit notes: reducing an issued invoice in full or by lines, and reading them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.billing import ledger
from pba_server.billing.common import BILLING, READERS, check_reason
from pba_server.billing.documents import get_invoice, invoice_path, lines_of
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import CreditNote, CreditNoteLine, InvoiceLine
from pba_server.billing.numbering import next_number
from pba_server.billing.rules import INVOICE_STATES, outstanding, settle_status
from pba_server.billing.tax import split_credit
from pba_server.billing.types import (
    CreditNoteInfo,
    CreditNoteLineInfo,
    CreditNoteLineInput,
    CreditNotePage,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.money import money, quantize
from pba_server.core.operations import operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path


def _cn_info(ctx: CallContext, cn: CreditNote) -> CreditNoteInfo:
    c = cn.currency
    rows = ctx.session.execute(
        select(CreditNoteLine, InvoiceLine.description)
        .join(InvoiceLine, InvoiceLine.id == CreditNoteLine.invoice_line_id)
        .where(CreditNoteLine.credit_note_id == cn.id)
        .order_by(CreditNoteLine.id)
    ).all()
    return CreditNoteInfo(
        id=cn.id,
        number=cn.number,
        issuer_id=cn.issuer_id,
        account_id=cn.account_id,
        invoice_id=cn.invoice_id,
        currency=c,
        net=quantize(cn.net, c),
        tax=quantize(cn.tax, c),
        total=quantize(cn.total, c),
        to_credit_balance=quantize(cn.to_credit_balance, c),
        reason=cn.reason,
        issued_at=cn.issued_at,
        lines=[
            CreditNoteLineInfo(
                id=ln.id,
                invoice_line_id=ln.invoice_line_id,
                description=d,
                net=quantize(ln.net, c),
                tax=quantize(ln.tax, c),
                total=quantize(ln.total, c),
            )
            for ln, d in rows
        ],
    )


@operation("CreditNoteCreate", roles=BILLING, mutating=True)
def credit_note_create(
    ctx: CallContext,
    *,
    invoice_id: int,
    reason: str,
    lines: list[CreditNoteLineInput] | None = None,
) -> CreditNoteInfo:
    """Reduce an issued invoice, in full (no ``lines``) or by lines (each up to
    what is left of it). Tax is credited in proportion. The unpaid part of the
    invoice is reduced first; what was already paid beyond the new total
    becomes the account's prepaid credit. Numbered in the issuer's credit
    note sequence."""
    inv = get_invoice(ctx, invoice_id, for_update=True)
    INVOICE_STATES.next(inv.status, "credit")
    why = check_reason(reason)
    inv_lines = {ln.id: ln for ln in lines_of(ctx, [inv.id])[inv.id]}
    cur = inv.currency
    wanted: list[tuple[InvoiceLine, Decimal]] = []
    if lines is None:
        wanted = [(ln, ln.total - ln.credited) for ln in inv_lines.values()]
        wanted = [(ln, a) for ln, a in wanted if a > 0]
        if not wanted:
            raise InvalidState(f"invoice {inv.number} is already fully credited")
    else:
        if not lines:
            raise ValidationError("lines", "must name at least one line")
        seen: set[int] = set()
        for i, cl in enumerate(lines):
            ln = inv_lines.get(cl.invoice_line_id)
            if ln is None or ln.id in seen:
                raise ValidationError(
                    f"lines[{i}].invoice_line_id", "not a line of the invoice (or named twice)"
                )
            seen.add(ln.id)
            left = ln.total - ln.credited
            amount = left if cl.amount is None else money(cl.amount, cur, f"lines[{i}].amount")
            if amount <= 0 or amount > left:
                raise ValidationError(
                    f"lines[{i}].amount",
                    f"must be more than 0 and at most {quantize(left, cur)} {cur}",
                )
            wanted.append((ln, amount))
    total = sum((a for _ln, a in wanted), ZERO)
    to_receivable = min(total, outstanding(inv))
    to_credit = total - to_receivable
    ledger.balance_row(ctx, inv.account_id, cur)  # lock order: balance before number
    seq, number = next_number(ctx, inv.issuer_id, "credit_note")
    cn = CreditNote(
        issuer_id=inv.issuer_id,
        account_id=inv.account_id,
        invoice_id=inv.id,
        number=number,
        seq=seq,
        currency=cur,
        net=ZERO,
        tax=ZERO,
        total=total,
        to_credit_balance=to_credit,
        reason=why,
        issued_at=ctx.now(),
    )
    ctx.session.add(cn)
    ctx.session.flush()
    legs: list[Leg] = []
    for ln, amount in wanted:
        net, tax = split_credit(amount, ln.tax, ln.total, cur)
        if ln.credited + amount == ln.total:  # the last credit takes exactly what is left
            done_tax = ctx.session.scalar(
                select(func.coalesce(func.sum(CreditNoteLine.tax), 0)).where(
                    CreditNoteLine.invoice_line_id == ln.id
                )
            )
            tax = ln.tax - Decimal(done_tax)
            net = amount - tax
        ln.credited += amount
        cn.net += net
        cn.tax += tax
        ctx.session.add(
            CreditNoteLine(
                credit_note_id=cn.id, invoice_line_id=ln.id, net=net, tax=tax, total=amount
            )
        )
        legs.append(Leg("revenue", inv.issuer_id, net))
        if tax:
            legs.append(Leg("tax_payable", inv.issuer_id, tax, str(ln.tax_rule_id)))
    legs += [
        Leg("receivable", inv.account_id, -to_receivable),
        Leg("customer_credit", inv.account_id, -to_credit),
    ]
    inv.credited_amount += total
    inv.paid_amount -= to_credit  # the overpaid part moves to prepaid credit
    settle_status(inv)
    ledger.post(
        ctx,
        kind="credit_note",
        account_id=inv.account_id,
        currency=cur,
        memo=f"credit note {number} for invoice {inv.number}",
        legs=legs,
        document_type="credit_note",
        document_id=cn.id,
    )
    audit.record(
        ctx,
        "credit_note",
        cn.id,
        invoice_path(ctx, inv),
        {"invoice": inv.number, "total": total, "reason": why},
    )
    return _cn_info(ctx, cn)


def _get_cn(ctx: CallContext, credit_note_id: int) -> CreditNote:
    row = ctx.session.execute(
        select(CreditNote, Account.path)
        .join(Account, Account.id == CreditNote.account_id)
        .where(CreditNote.id == credit_note_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"credit note {credit_note_id} not found")
    return row[0]  # type: ignore[no-any-return]


@operation("CreditNoteGet", roles=READERS)
def credit_note_get(ctx: CallContext, *, credit_note_id: int) -> CreditNoteInfo:
    """One credit note with its lines."""
    return _cn_info(ctx, _get_cn(ctx, credit_note_id))


@operation("CreditNoteList", roles=READERS)
def credit_note_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    invoice_id: int | None = None,
    offset: int = 0,
    limit: int = 100,
) -> CreditNotePage:
    """Credit notes of an account's subtree (default: the caller's), optionally of one invoice."""
    check_page(offset, limit)
    path = visible_path(ctx, account_id)
    q = select(CreditNote).join(Account, Account.id == CreditNote.account_id)
    q = q.where(Account.path.startswith(path, autoescape=True))
    if invoice_id is not None:
        q = q.where(CreditNote.invoice_id == invoice_id)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(CreditNote.id).offset(offset).limit(limit)).all()
    return CreditNotePage(
        items=[_cn_info(ctx, r) for r in rows], total=total, offset=offset, limit=limit
    )
