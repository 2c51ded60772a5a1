"""Reading invoices: finding one the caller may see (or change), its lines,
its API shape, and the invoice.* events announcing its changes."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.billing.common import require_seller_side, today_for
from pba_server.billing.models import Invoice, InvoiceLine
from pba_server.billing.rules import invoice_status, outstanding, plain
from pba_server.billing.types import InvoiceInfo, InvoiceLineInfo
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound
from pba_server.core.money import quantize


def line_info(ln: InvoiceLine, cur: str) -> InvoiceLineInfo:
    """An invoice line as the API shows it."""
    return InvoiceLineInfo(
        id=ln.id,
        position=ln.position,
        description=ln.description,
        quantity=plain(ln.quantity),
        unit_price=quantize(ln.unit_price, cur),
        discount=quantize(ln.discount, cur),
        tax_inclusive=ln.tax_inclusive,
        tax_rate=plain(ln.tax_rate),
        net=quantize(ln.net, cur),
        tax=quantize(ln.tax, cur),
        total=quantize(ln.total, cur),
        credited=quantize(ln.credited, cur),
        link_type=ln.link_type,  # type: ignore[arg-type]
        tax_rule_id=ln.tax_rule_id,
        tax_name=ln.tax_name,
        period_start=ln.period_start,
        period_end=ln.period_end,
        link_id=ln.link_id,
    )


def lines_of(ctx: CallContext, invoice_ids: list[int]) -> dict[int, list[InvoiceLine]]:
    """The lines of each invoice, in position order."""
    out: dict[int, list[InvoiceLine]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        for ln in ctx.session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id.in_(invoice_ids))
            .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
        ):
            out[ln.invoice_id].append(ln)
    return out


def invoice_info_from(inv: Invoice, lines: list[InvoiceLine], today: date) -> InvoiceInfo:
    """An invoice and its lines as the API shows them on ``today``."""
    c = inv.currency
    return InvoiceInfo(
        id=inv.id,
        issuer_id=inv.issuer_id,
        account_id=inv.account_id,
        currency=c,
        status=invoice_status(inv, today),
        subtotal=quantize(inv.subtotal, c),
        tax_total=quantize(inv.tax_total, c),
        total=quantize(inv.total, c),
        paid=quantize(inv.paid_amount, c),
        credited=quantize(inv.credited_amount, c),
        outstanding=quantize(outstanding(inv), c),
        reverse_charge=inv.reverse_charge,
        created_at=inv.created_at,
        lines=[line_info(ln, c) for ln in lines],
        number=inv.number,
        issued_at=inv.issued_at,
        due_date=inv.due_date,
        feed_position=inv.feed_position,
        notes=inv.notes,
        autopay=inv.autopay,
    )


def invoice_info(ctx: CallContext, inv: Invoice) -> InvoiceInfo:
    """An invoice with its lines as the API shows it."""
    return invoice_info_from(inv, lines_of(ctx, [inv.id])[inv.id], today_for(ctx))


def get_invoice(ctx: CallContext, invoice_id: int, *, for_update: bool = False) -> Invoice:
    """An invoice the caller sees; ``for_update`` locks it and requires the seller's side."""
    q = select(Invoice, Account.path).join(Account, Account.id == Invoice.account_id)
    q = q.where(Invoice.id == invoice_id)
    if for_update:
        q = q.with_for_update(of=Invoice)
    row = ctx.session.execute(q).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"invoice {invoice_id} not found")
    if for_update:  # changing it is the seller's business
        issuer_path = ctx.session.scalar(select(Account.path).where(Account.id == row[0].issuer_id))
        require_seller_side(ctx, str(issuer_path), row[0].account_id)
    return row[0]  # type: ignore[no-any-return]


def invoice_path(ctx: CallContext, inv: Invoice) -> str:
    """The account path of the invoice's buyer."""
    return str(ctx.session.scalar(select(Account.path).where(Account.id == inv.account_id)))


def invoice_event(ctx: CallContext, type: str, inv: Invoice) -> None:
    """invoice.issued / invoice.paid, in the transaction of the change."""
    events.emit(
        ctx,
        type,
        ("invoice", inv.id),
        {
            "invoice_id": inv.id,
            "number": inv.number,
            "total": quantize(inv.total, inv.currency),
            "currency": inv.currency,
            "due_date": inv.due_date,
        },
        account_id=inv.account_id,
        account_path=invoice_path(ctx, inv),
    )
