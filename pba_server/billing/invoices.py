"""Invoices: drafts and their lines, issuing (tax, number, due date, booking),
voiding, reading, listing and rendering."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, or_, select

from pba_server.accounts.models import Account, Contact
from pba_server.accounts.records import get_account
from pba_server.billing import allocation, ledger, render
from pba_server.billing.balances import check_credit
from pba_server.billing.common import (
    BILLING,
    READERS,
    billable,
    check_reason,
    day_start,
    seller_of,
    today_for,
)
from pba_server.billing.documents import (
    get_invoice,
    invoice_event,
    invoice_info,
    invoice_info_from,
    invoice_path,
    lines_of,
)
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import Invoice, InvoiceLine, LedgerTransaction, TaxRule
from pba_server.billing.numbering import next_feed_position, next_number
from pba_server.billing.rules import INVOICE_STATES, settle_status, update_totals
from pba_server.billing.tax import REVERSE_CHARGE_NOTE, line_amounts
from pba_server.billing.tax_rules import tax_rule_for
from pba_server.billing.terms import net_days_of
from pba_server.billing.types import (
    InvoiceInfo,
    InvoiceLineInput,
    InvoicePage,
    InvoiceStatus,
    RenderedDocument,
    RenderFormat,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.money import MAX_AMOUNT, money, to_decimal
from pba_server.core.operations import operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path

MAX_LINES = 1000


def _price_line(ctx: CallContext, ln: InvoiceLine, inv: Invoice, buyer: Account) -> None:
    """(Re)compute a line's tax and amounts from its rule and the buyer."""
    rule: TaxRule | None
    if ln.explicit_tax_rule and ln.tax_rule_id is not None:
        rule = ctx.session.get(TaxRule, ln.tax_rule_id)
    else:
        rule = tax_rule_for(ctx, inv.issuer_id, buyer)
    reverse = bool(rule and rule.reverse_charge and buyer.tax_id)
    rate = Decimal(0) if rule is None or reverse else rule.rate
    amounts = line_amounts(
        ln.quantity,
        ln.unit_price,
        ln.discount,
        rate,
        inclusive=ln.tax_inclusive,
        currency=inv.currency,
    )
    if amounts.total < 0:
        raise ValidationError("discount", "makes the line negative; use a credit note instead")
    if amounts.total >= MAX_AMOUNT:
        raise ValidationError("unit_price", "the line total is too large")
    ln.tax_rule_id = rule.id if rule else None
    ln.tax_name = rule.name if rule else None
    ln.tax_rate = rate
    ln.net, ln.tax, ln.total = amounts.net, amounts.tax, amounts.total
    if reverse:
        inv.reverse_charge = True


def _new_line(
    ctx: CallContext, inv: Invoice, buyer: Account, li: InvoiceLineInput, position: int, field: str
) -> InvoiceLine:
    cur = inv.currency
    desc = li.description.strip()
    if not desc or len(desc) > 255:
        raise ValidationError(f"{field}.description", "must be 1 to 255 characters")
    qty = to_decimal(li.quantity, f"{field}.quantity")
    if qty <= 0 or qty != qty.quantize(Decimal("0.0001")):
        raise ValidationError(f"{field}.quantity", "must be positive with at most 4 decimals")
    price = money(li.unit_price, cur, f"{field}.unit_price")
    if price < 0:
        raise ValidationError(f"{field}.unit_price", "must not be negative; use a credit note")
    discount = money(li.discount, cur, f"{field}.discount")
    if discount < 0:
        raise ValidationError(f"{field}.discount", "must not be negative")
    if li.period_start and li.period_end and li.period_end < li.period_start:
        raise ValidationError(f"{field}.period_end", "is before period_start")
    if li.tax_rule_id is not None:
        rule = ctx.session.get(TaxRule, li.tax_rule_id)
        if rule is None or rule.seller_id != inv.issuer_id or not rule.active:
            raise ValidationError(
                f"{field}.tax_rule_id", f"no tax rule {li.tax_rule_id} of the seller"
            )
    ln = InvoiceLine(
        invoice_id=inv.id,
        position=position,
        description=desc,
        quantity=qty,
        unit_price=price,
        discount=discount,
        tax_inclusive=li.tax_inclusive,
        tax_rule_id=li.tax_rule_id,
        explicit_tax_rule=li.tax_rule_id is not None,
        tax_rate=ZERO,
        net=ZERO,
        tax=ZERO,
        total=ZERO,
        credited=ZERO,
        period_start=li.period_start,
        period_end=li.period_end,
        link_type=li.link_type,
        link_id=(li.link_id or None) and li.link_id[:64],
    )
    _price_line(ctx, ln, inv, buyer)
    return ln


def _issue(
    ctx: CallContext, inv: Invoice, buyer: Account, *, check_limit: bool, apply_credit: bool
) -> None:
    inv.status = INVOICE_STATES.next(inv.status, "issue")
    lines = ctx.session.scalars(
        select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id).order_by(InvoiceLine.position)
    ).all()
    if not lines:
        raise InvalidState(f"invoice {inv.id} has no lines")
    inv.reverse_charge = False
    inv.buyer_tax_id = buyer.tax_id
    for ln in lines:  # taxes as of issue: the buyer's country or tax id may have changed
        _price_line(ctx, ln, inv, buyer)
    update_totals(inv, lines)
    if check_limit:
        check_credit(ctx, buyer.id, inv.total)
    # lock order (core/db.py): the buyer's open payments (credit applied
    # below), then its balance row, before the number sequence and the feed
    # counter, as every path that posts and then numbers
    if apply_credit:
        allocation.open_payments(ctx, buyer.id)
    ledger.balance_row(ctx, buyer.id, inv.currency)
    inv.seq, inv.number = next_number(ctx, inv.issuer_id, "invoice")
    inv.feed_position = next_feed_position(ctx)
    inv.issued_at = ctx.now()
    inv.due_date = today_for(ctx) + timedelta(days=net_days_of(ctx, buyer.id))
    if inv.reverse_charge:
        note = REVERSE_CHARGE_NOTE.format(tax_id=buyer.tax_id)
        inv.notes = f"{inv.notes}\n{note}" if inv.notes else note
    legs = [Leg("receivable", buyer.id, inv.total), Leg("revenue", inv.issuer_id, -inv.subtotal)]
    for ln in lines:
        if ln.tax:
            legs.append(Leg("tax_payable", inv.issuer_id, -ln.tax, str(ln.tax_rule_id)))
    if inv.total > 0:
        ledger.post(
            ctx,
            kind="invoice",
            account_id=buyer.id,
            currency=inv.currency,
            memo=f"invoice {inv.number}",
            legs=legs,
            document_type="invoice",
            document_id=inv.id,
        )
    settle_status(inv)
    ctx.session.flush()
    invoice_event(ctx, "invoice.issued", inv)
    if apply_credit and inv.status != "paid":
        allocation.apply_credit(ctx, buyer, [inv])


@operation("InvoiceCreate", roles=BILLING, mutating=True)
def invoice_create(
    ctx: CallContext,
    *,
    account_id: int,
    lines: list[InvoiceLineInput] | None = None,
    issue: bool = False,
    notes: str | None = None,
    check_credit_limit: bool = False,
    apply_credit: bool = True,
    autopay: bool | None = None,
) -> InvoiceInfo:
    """A one-off invoice from the account's seller, as a draft or issued at once
    (``issue``; see InvoiceIssue for ``check_credit_limit`` and ``apply_credit``).
    Amounts are in the account's currency. ``autopay`` (default true): once
    issued, the invoice is charged to the account's default payment method."""
    buyer = billable(ctx, account_id)
    if buyer.status == "closed":
        raise InvalidState(f"account {buyer.id} is closed")
    issuer = seller_of(ctx, buyer)
    if len(lines or []) > MAX_LINES:
        raise ValidationError("lines", f"at most {MAX_LINES} lines per invoice")
    if notes is not None and len(notes) > 4000:
        raise ValidationError("notes", "must be at most 4000 characters")
    inv = Invoice(
        issuer_id=issuer.id,
        account_id=buyer.id,
        currency=buyer.currency,
        status="draft",
        created_at=ctx.now(),
        subtotal=ZERO,
        tax_total=ZERO,
        total=ZERO,
        paid_amount=ZERO,
        credited_amount=ZERO,
        reverse_charge=False,
        notes=(notes or "").strip() or None,
        autopay=True if autopay is None else autopay,
    )
    ctx.session.add(inv)
    ctx.session.flush()
    new = [_new_line(ctx, inv, buyer, li, i + 1, f"lines[{i}]") for i, li in enumerate(lines or [])]
    ctx.session.add_all(new)
    update_totals(inv, new)
    ctx.session.flush()
    audit.record(
        ctx, "invoice", inv.id, buyer.path, {"created": {"lines": len(new), "total": inv.total}}
    )
    if issue:
        _issue(ctx, inv, buyer, check_limit=check_credit_limit, apply_credit=apply_credit)
        audit.record(ctx, "invoice", inv.id, buyer.path, {"issued": inv.number})
    return invoice_info(ctx, inv)


@operation("InvoiceAddLine", roles=BILLING, mutating=True)
def invoice_add_line(ctx: CallContext, *, invoice_id: int, line: InvoiceLineInput) -> InvoiceInfo:
    """Add a line to a draft invoice."""
    inv = get_invoice(ctx, invoice_id, for_update=True)
    INVOICE_STATES.next(inv.status, "add_line")
    buyer = get_account(ctx, inv.account_id)
    n = (
        ctx.session.scalar(
            select(func.count()).select_from(InvoiceLine).where(InvoiceLine.invoice_id == inv.id)
        )
        or 0
    )
    if n >= MAX_LINES:
        raise ValidationError("line", f"at most {MAX_LINES} lines per invoice")
    ln = _new_line(ctx, inv, buyer, line, n + 1, "line")
    ctx.session.add(ln)
    ctx.session.flush()
    update_totals(inv, lines_of(ctx, [inv.id])[inv.id])
    audit.record(ctx, "invoice", inv.id, buyer.path, {"line_added": ln.description})
    return invoice_info(ctx, inv)


@operation("InvoiceIssue", roles=BILLING, mutating=True)
def invoice_issue(
    ctx: CallContext,
    *,
    invoice_id: int,
    check_credit_limit: bool = False,
    apply_credit: bool = True,
) -> InvoiceInfo:
    """Issue a draft: taxes are fixed, the next gapless number of the issuer is
    given, the due date follows the account's payment terms, and the amount is
    booked to the account. From here the invoice never changes except by
    payments and credit notes.

    ``check_credit_limit``: the invoice is "on account" and is refused with
    Client.CreditLimitExceeded if it would take the account past its credit
    limit. ``apply_credit``: settle it from the account's prepaid credit."""
    inv = get_invoice(ctx, invoice_id, for_update=True)
    buyer = get_account(ctx, inv.account_id)
    _issue(ctx, inv, buyer, check_limit=check_credit_limit, apply_credit=apply_credit)
    audit.record(ctx, "invoice", inv.id, buyer.path, {"issued": inv.number})
    return invoice_info(ctx, inv)


@operation("InvoiceGet", roles=READERS)
def invoice_get(ctx: CallContext, *, invoice_id: int) -> InvoiceInfo:
    """One invoice with its lines."""
    return invoice_info(ctx, get_invoice(ctx, invoice_id))


@operation("InvoiceList", roles=READERS)
def invoice_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: InvoiceStatus | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    issued_after: int | None = None,
    offset: int = 0,
    limit: int = 100,
) -> InvoicePage:
    """Invoices of an account's subtree (default: the caller's), by status and
    issue date range [date_from, date_to], ordered by id.

    Incremental pull: pass ``issued_after`` (0 the first time, then the
    page's ``next_cursor``) to get only invoices issued since, in issue order;
    repeating with each next_cursor never misses or repeats an invoice.
    ``offset`` is ignored then."""
    check_page(offset, limit)
    path = visible_path(ctx, account_id)
    today = today_for(ctx)
    q = select(Invoice).join(Account, Account.id == Invoice.account_id)
    q = q.where(Account.path.startswith(path, autoescape=True))
    past_due = and_(Invoice.due_date.is_not(None), Invoice.due_date < today)
    if status == "overdue":
        q = q.where(Invoice.status.in_(("issued", "partially_paid")), past_due)
    elif status in ("issued", "partially_paid"):
        q = q.where(Invoice.status == status, or_(Invoice.due_date.is_(None), ~past_due))
    elif status:
        q = q.where(Invoice.status == status)
    if date_from:
        q = q.where(Invoice.issued_at >= day_start(date_from))
    if date_to:
        q = q.where(Invoice.issued_at < day_start(date_to + timedelta(days=1)))
    if issued_after is not None:
        if issued_after < 0:
            raise ValidationError("issued_after", "must not be negative")
        q = q.where(Invoice.feed_position > issued_after)
        total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = list(ctx.session.scalars(q.order_by(Invoice.feed_position).limit(limit)))
        offset = 0
        cursor = rows[-1].feed_position if rows else issued_after
    else:
        total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = list(ctx.session.scalars(q.order_by(Invoice.id).offset(offset).limit(limit)))
        cursor = max((r.feed_position or 0 for r in rows), default=0)
    lines = lines_of(ctx, [r.id for r in rows])
    return InvoicePage(
        items=[invoice_info_from(r, lines[r.id], today) for r in rows],
        total=total,
        offset=offset,
        limit=limit,
        next_cursor=cursor or 0,
    )


@operation("InvoiceVoid", roles=BILLING, mutating=True)
def invoice_void(ctx: CallContext, *, invoice_id: int, reason: str) -> InvoiceInfo:
    """Void a draft, or an issued invoice nothing has been paid or credited on
    (its booking is reversed; its number stays used). Otherwise use a credit note."""
    inv = get_invoice(ctx, invoice_id, for_update=True)
    why = check_reason(reason)
    was = inv.status
    if was != "draft" and (inv.paid_amount or inv.credited_amount):
        raise InvalidState(
            f"invoice {inv.number} has payments or credit notes; use a credit note instead"
        )
    inv.status = INVOICE_STATES.next(was if was in ("draft", "void") else "issued", "void")
    if was != "draft":
        booked = ctx.session.scalar(
            select(LedgerTransaction).where(
                LedgerTransaction.document_type == "invoice",
                LedgerTransaction.document_id == inv.id,
                LedgerTransaction.kind == "invoice",
            )
        )
        if booked is not None:
            ledger.reverse(ctx, booked, kind="void", memo=f"invoice {inv.number} void: {why}")
    inv.voided_at = ctx.now()
    audit.record(ctx, "invoice", inv.id, invoice_path(ctx, inv), {"void": why, "was": was})
    return invoice_info(ctx, inv)


@operation("InvoiceRender", roles=READERS)
def invoice_render(
    ctx: CallContext, *, invoice_id: int, format: RenderFormat = "html"
) -> RenderedDocument:
    """The invoice as a document for the customer: HTML, or PDF (base64), with
    the seller's and buyer's details, number, dates, lines, tax and totals."""
    inv = get_invoice(ctx, invoice_id)
    info = invoice_info(ctx, inv)
    parties = {
        a.id: a
        for a in ctx.session.scalars(
            select(Account).where(Account.id.in_((inv.issuer_id, inv.account_id)))
        )
    }
    contacts: dict[int, Contact | None] = {
        aid: ctx.session.scalar(
            select(Contact).where(Contact.account_id == aid).order_by(Contact.id).limit(1)
        )
        for aid in parties
    }
    seller = render.Party.of(parties[inv.issuer_id], contacts[inv.issuer_id])
    buyer = render.Party.of(parties[inv.account_id], contacts[inv.account_id])
    name = info.number or f"draft-{inv.id}"
    if format == "pdf":
        return RenderedDocument(
            invoice_id=inv.id,
            format="pdf",
            content_type="application/pdf",
            filename=f"{name}.pdf",
            content=render.pdf_base64(info, seller, buyer),
        )
    return RenderedDocument(
        invoice_id=inv.id,
        format="html",
        content_type="text/html; charset=utf-8",
        filename=f"{name}.html",
        content=render.html(info, seller, buyer),
    )
