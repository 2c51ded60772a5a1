"""Billing operations: invoices, credit notes, tax rules, offline payments,
balances and statements. Every money movement goes through :mod:`ledger`."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, or_, select

from pba_server import events
from pba_server.accounts.models import Account, Contact
from pba_server.accounts.service import get_account
from pba_server.billing import ledger, render
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import (
    BillingCounter,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    LedgerTransaction,
    NumberSequence,
    Payment,
    PaymentAllocation,
    PaymentTerms,
    TaxRule,
)
from pba_server.billing.tax import REVERSE_CHARGE_NOTE, line_amounts, split_credit
from pba_server.billing.types import (
    AdjustmentInfo,
    AllocationInfo,
    BalanceInfo,
    CreditNoteInfo,
    CreditNoteLineInfo,
    CreditNoteLineInput,
    CreditNotePage,
    DocumentKind,
    InvoiceInfo,
    InvoiceLineInfo,
    InvoiceLineInput,
    InvoicePage,
    InvoiceStatus,
    LineLink,
    NumberFormatInfo,
    PaymentInfo,
    PaymentMethod,
    PaymentPage,
    PaymentTermsInfo,
    RenderedDocument,
    RenderFormat,
    StatementInfo,
    StatementLine,
    TaxRuleInfo,
    TaxRulePage,
)
from pba_server.catalog.types import PriceQuoteInfo
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import (
    CreditLimitExceeded,
    Forbidden,
    InvalidState,
    NotFound,
    ValidationError,
)
from pba_server.core.money import MAX_AMOUNT, money, quantize, to_decimal
from pba_server.core.operations import operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path
from pba_server.core.states import StateMachine

BILLING = frozenset({"billing"})
READERS = frozenset({"billing", "sales", "support", "readonly"})
SELLERS = ("provider", "reseller")
DEFAULT_FORMATS = {"invoice": "INV-{year}-{seq:06d}", "credit_note": "CN-{year}-{seq:06d}"}
FEED = "invoice_feed"
MAX_NET_DAYS = 365
MAX_LINES = 1000

# Called with (ctx, account) in the same transaction after credit or a payment
# settled some of the account's invoices (dunning resumes services from here).
SETTLEMENT_HOOKS: list[Callable[[CallContext, Account], None]] = []

# Stored states; "overdue" is derived on read (issued or partially paid, past due).
INVOICE_STATES = StateMachine(
    "invoice",
    {
        ("draft", "add_line"): "draft",
        ("draft", "issue"): "issued",
        ("draft", "void"): "void",
        ("issued", "void"): "void",
        ("issued", "settle"): "issued",
        ("partially_paid", "settle"): "partially_paid",
        ("paid", "settle"): "paid",
        ("issued", "credit"): "issued",
        ("partially_paid", "credit"): "partially_paid",
        ("paid", "credit"): "paid",
    },
)


# ---------------------------------------------------------------- helpers


def _today(ctx: CallContext) -> date:
    return ctx.now().astimezone(UTC).date()


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def seller_of(ctx: CallContext, acc: Account) -> Account:
    """The account that sells to ``acc``: its nearest provider or reseller ancestor.

    A department is billed like a customer by its enterprise's seller.
    """
    ids = [int(p) for p in acc.path.strip("/").split("/")][:-1]
    rows = {a.id: a for a in ctx.session.scalars(select(Account).where(Account.id.in_(ids)))}
    for aid in reversed(ids):
        if rows[aid].type in SELLERS:
            return rows[aid]  # type: ignore[no-any-return]
    raise ValidationError("account_id", f"account {acc.id} has no seller to bill it")


def _billable(ctx: CallContext, account_id: int) -> Account:
    """A customer account the caller may bill: visible, below the caller's own,
    and sold to by the caller's account or one below it (an enterprise does not
    bill its departments; their seller does)."""
    acc = get_account(ctx, account_id)
    if acc.id == ctx.principal.account_id or acc.type == "provider":
        raise Forbidden(f"account {acc.id} is billed by its parent, not by itself")
    _require_seller_side(ctx, seller_of(ctx, acc).path, acc.id)
    return acc


def _require_seller_side(ctx: CallContext, issuer_path: str, account_id: int) -> None:
    if not ctx.principal.sees(issuer_path):
        raise Forbidden(f"only the seller of account {account_id} (or its parents) bills it")


def _net_days(ctx: CallContext, account_id: int) -> int:
    row = ctx.session.get(PaymentTerms, account_id)
    return row.net_days if row else 0


def _next_number(ctx: CallContext, issuer_id: int, kind: str) -> tuple[int, str]:
    """The next gapless number of ``issuer_id``'s ``kind`` sequence.

    The sequence row is locked until the issuing transaction ends, so
    concurrent issuers queue and a rolled-back issue gives its number back.
    """
    ledger.upsert_ignore(
        ctx.session,
        NumberSequence,
        {"issuer_id": issuer_id, "kind": kind, "format": DEFAULT_FORMATS[kind], "last_number": 0},
    )
    seq = ctx.session.scalar(
        select(NumberSequence)
        .where(NumberSequence.issuer_id == issuer_id, NumberSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert seq is not None
    seq.last_number += 1
    return seq.last_number, seq.format.format(seq=seq.last_number, year=ctx.now().year)


def _next_feed_position(ctx: CallContext) -> int:
    """A server-wide position for InvoiceList's cursor.

    The counter row stays locked until the issuing transaction commits, so
    positions become visible in increasing order: a reader that has seen
    position N has seen every position below it, and a cursor never skips one.
    """
    ledger.upsert_ignore(ctx.session, BillingCounter, {"name": FEED, "value": 0})
    row = ctx.session.scalar(
        select(BillingCounter)
        .where(BillingCounter.name == FEED)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    row.value += 1
    return int(row.value)


def _check_format(fmt: str) -> str:
    fmt = fmt.strip()
    if not 1 <= len(fmt) <= 64:
        raise ValidationError("format", "must be 1 to 64 characters")
    names = []
    try:
        for _lit, name, spec, conv in string.Formatter().parse(fmt):
            if name is None:
                continue
            if name not in ("seq", "year") or conv or (spec and not spec.rstrip("d").isdigit()):
                raise ValidationError(
                    "format", "may only use {seq}, {seq:06d} (any width) and {year}"
                )
            names.append(name)
        fmt.format(seq=1, year=2000)
    except (ValueError, IndexError):
        raise ValidationError("format", "is not a valid number format") from None
    if "seq" not in names:
        raise ValidationError("format", "must contain {seq}")
    return fmt


def _status(inv: Invoice, today: date) -> InvoiceStatus:
    if inv.status in ("issued", "partially_paid") and inv.due_date and inv.due_date < today:
        return "overdue"
    return inv.status  # type: ignore[return-value]


def _outstanding(inv: Invoice) -> Decimal:
    return inv.total - inv.paid_amount - inv.credited_amount


def _q(v: Decimal, cur: str) -> Decimal:
    return quantize(v, cur)


def _plain(v: Decimal) -> Decimal:
    """Without trailing zeros and never in exponent form (30, not 3E+1)."""
    return v.quantize(Decimal(1)) if v == v.to_integral_value() else v.normalize()


def _line_info(ln: InvoiceLine, cur: str) -> InvoiceLineInfo:
    return InvoiceLineInfo(
        id=ln.id,
        position=ln.position,
        description=ln.description,
        quantity=_plain(ln.quantity),
        unit_price=_q(ln.unit_price, cur),
        discount=_q(ln.discount, cur),
        tax_inclusive=ln.tax_inclusive,
        tax_rate=_plain(ln.tax_rate),
        net=_q(ln.net, cur),
        tax=_q(ln.tax, cur),
        total=_q(ln.total, cur),
        credited=_q(ln.credited, cur),
        link_type=ln.link_type,  # type: ignore[arg-type]
        tax_rule_id=ln.tax_rule_id,
        tax_name=ln.tax_name,
        period_start=ln.period_start,
        period_end=ln.period_end,
        link_id=ln.link_id,
    )


def _lines_of(ctx: CallContext, invoice_ids: list[int]) -> dict[int, list[InvoiceLine]]:
    out: dict[int, list[InvoiceLine]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        for ln in ctx.session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id.in_(invoice_ids))
            .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
        ):
            out[ln.invoice_id].append(ln)
    return out


def _invoice_info(inv: Invoice, lines: list[InvoiceLine], today: date) -> InvoiceInfo:
    c = inv.currency
    return InvoiceInfo(
        id=inv.id,
        issuer_id=inv.issuer_id,
        account_id=inv.account_id,
        currency=c,
        status=_status(inv, today),
        subtotal=_q(inv.subtotal, c),
        tax_total=_q(inv.tax_total, c),
        total=_q(inv.total, c),
        paid=_q(inv.paid_amount, c),
        credited=_q(inv.credited_amount, c),
        outstanding=_q(_outstanding(inv), c),
        reverse_charge=inv.reverse_charge,
        created_at=inv.created_at,
        lines=[_line_info(ln, c) for ln in lines],
        number=inv.number,
        issued_at=inv.issued_at,
        due_date=inv.due_date,
        feed_position=inv.feed_position,
        notes=inv.notes,
        autopay=inv.autopay,
    )


def invoice_info(ctx: CallContext, inv: Invoice) -> InvoiceInfo:
    return _invoice_info(inv, _lines_of(ctx, [inv.id])[inv.id], _today(ctx))


def _get_invoice(ctx: CallContext, invoice_id: int, *, for_update: bool = False) -> Invoice:
    q = select(Invoice, Account.path).join(Account, Account.id == Invoice.account_id)
    q = q.where(Invoice.id == invoice_id)
    if for_update:
        q = q.with_for_update(of=Invoice)
    row = ctx.session.execute(q).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"invoice {invoice_id} not found")
    if for_update:  # changing it is the seller's business
        issuer_path = ctx.session.scalar(select(Account.path).where(Account.id == row[0].issuer_id))
        _require_seller_side(ctx, str(issuer_path), row[0].account_id)
    return row[0]  # type: ignore[no-any-return]


def _invoice_path(ctx: CallContext, inv: Invoice) -> str:
    return str(ctx.session.scalar(select(Account.path).where(Account.id == inv.account_id)))


def _invoice_event(ctx: CallContext, type: str, inv: Invoice) -> None:
    """invoice.issued / invoice.paid, in the transaction of the change."""
    events.emit(
        ctx,
        type,
        ("invoice", inv.id),
        {
            "invoice_id": inv.id,
            "number": inv.number,
            "total": _q(inv.total, inv.currency),
            "currency": inv.currency,
            "due_date": inv.due_date,
        },
        account_id=inv.account_id,
        account_path=_invoice_path(ctx, inv),
    )


def _buyer_region(ctx: CallContext, account_id: int) -> str:
    state = ctx.session.scalar(
        select(Contact.state).where(Contact.account_id == account_id).order_by(Contact.id).limit(1)
    )
    return (state or "").strip()


def _tax_rule_for(ctx: CallContext, issuer_id: int, buyer: Account) -> TaxRule | None:
    if not buyer.country:
        return None
    region = _buyer_region(ctx, buyer.id)
    rules = ctx.session.scalars(
        select(TaxRule).where(
            TaxRule.seller_id == issuer_id,
            TaxRule.buyer_country == buyer.country,
            TaxRule.buyer_region.in_(("", region)),
            TaxRule.active.is_(True),
        )
    ).all()
    # a rule for the buyer's region beats the one for the whole country
    return max(rules, key=lambda r: r.buyer_region != "", default=None)


def _price_line(ctx: CallContext, ln: InvoiceLine, inv: Invoice, buyer: Account) -> None:
    """(Re)compute a line's tax and amounts from its rule and the buyer."""
    rule: TaxRule | None
    if ln.explicit_tax_rule and ln.tax_rule_id is not None:
        rule = ctx.session.get(TaxRule, ln.tax_rule_id)
    else:
        rule = _tax_rule_for(ctx, inv.issuer_id, buyer)
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


def _totals(inv: Invoice, lines: Sequence[InvoiceLine]) -> None:
    inv.subtotal = sum((ln.net for ln in lines), ZERO)
    inv.tax_total = sum((ln.tax for ln in lines), ZERO)
    inv.total = sum((ln.total for ln in lines), ZERO)
    if inv.total >= MAX_AMOUNT:
        raise ValidationError("lines", "the invoice total is too large")


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


def _settle_status(inv: Invoice) -> None:
    if _outstanding(inv) == 0:
        inv.status = "paid"
    elif inv.paid_amount > 0:
        inv.status = "partially_paid"
    else:
        inv.status = "issued"


def _available_credit(ctx: CallContext, account_id: int, currency: str) -> Decimal:
    row = ledger.balance_row(ctx, account_id, currency)
    return max(-row.credit, ZERO)


def _open_payments(ctx: CallContext, account_id: int) -> list[Payment]:
    """The account's payments with an unallocated remainder, oldest first, locked."""
    return list(
        ctx.session.scalars(
            select(Payment)
            .where(Payment.account_id == account_id, Payment.allocated < Payment.amount)
            .order_by(Payment.id)
            .with_for_update()
        )
    )


def _apply_credit(
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
        sources = _open_payments(ctx, acc.id)
    made: list[PaymentAllocation] = []
    for inv in invoices:
        if budget <= 0:
            break
        amount = min(_outstanding(inv), budget)
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
        _settle_status(inv)
        if inv.status == "paid":
            _invoice_event(ctx, "invoice.paid", inv)
        budget -= amount
    ctx.session.add_all(made)
    ctx.session.flush()
    if made:
        for hook in SETTLEMENT_HOOKS:
            hook(ctx, acc)
    return made


def _unpaid_invoices(
    ctx: CallContext, acc: Account, invoice_ids: list[int] | None
) -> list[Invoice]:
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


# ---------------------------------------------------------------- credit limit


def exposure(ctx: CallContext, account_id: int, currency: str) -> Decimal:
    """What the account owes now: unsettled issued invoices and adjustments,
    less prepaid credit.

    A reseller's exposure is what it owes its own seller; what its customers
    owe the reseller is not counted (their debts are the reseller's risk, not
    its parent's).
    """
    receivable, credit = ledger.balance_of(ctx.session, account_id, currency)
    return receivable + credit


def check_credit(
    ctx: CallContext, account_id: int, amount: Decimal, *, pending: Decimal = ZERO
) -> None:
    """Refuse ``amount`` more on account when exposure + pending orders + it
    would pass the credit limit (``Client.CreditLimitExceeded``).

    Orders call this before accepting an order that is not paid up front,
    passing the total of the account's other pending orders in ``pending``.
    """
    acc = get_account(ctx, account_id, for_update=True)
    owed = exposure(ctx, acc.id, acc.currency)
    after = owed + pending + amount
    if after > acc.credit_limit:
        c = acc.currency
        raise CreditLimitExceeded(
            f"account {acc.id}: exposure {_q(owed, c)} {c} + pending {_q(pending, c)} "
            f"+ {_q(amount, c)} = {_q(after, c)} exceeds the credit limit "
            f"{_q(acc.credit_limit, c)} {c} (available {_q(acc.credit_limit - owed - pending, c)})"
        )


# ---------------------------------------------------------------- settings


@operation("PaymentTermsSet", roles=BILLING | {"sales"}, mutating=True)
def payment_terms_set(ctx: CallContext, *, account_id: int, net_days: int) -> PaymentTermsInfo:
    """Set an account's payment terms: invoices are due ``net_days`` after issue
    (0, the default, means due on issue)."""
    acc = _billable(ctx, account_id)
    if not 0 <= net_days <= MAX_NET_DAYS:
        raise ValidationError("net_days", f"must be between 0 and {MAX_NET_DAYS}")
    row = ctx.session.get(PaymentTerms, acc.id)
    before = row.net_days if row else 0
    if row is None:
        ctx.session.add(PaymentTerms(account_id=acc.id, net_days=net_days))
    else:
        row.net_days = net_days
    audit.record(
        ctx, "payment_terms", acc.id, acc.path, {"net_days": {"from": before, "to": net_days}}
    )
    return PaymentTermsInfo(account_id=acc.id, net_days=net_days)


@operation("DocumentNumberFormatSet", roles=BILLING, mutating=True)
def document_number_format_set(
    ctx: CallContext, *, kind: DocumentKind, format: str, issuer_id: int | None = None
) -> NumberFormatInfo:
    """Set how an issuer's invoice or credit note numbers look, e.g.
    ``INV-{year}-{seq:06d}``. ``{seq}`` is the gapless sequence number (never
    reset), ``{year}`` the year of issue. Only numbers issued later change."""
    issuer = get_account(ctx, issuer_id if issuer_id is not None else ctx.principal.account_id)
    if issuer.type not in SELLERS:
        raise ValidationError("issuer_id", "only the provider and resellers issue documents")
    fmt = _check_format(format)
    ledger.upsert_ignore(
        ctx.session,
        NumberSequence,
        {"issuer_id": issuer.id, "kind": kind, "format": fmt, "last_number": 0},
    )
    seq = ctx.session.scalar(
        select(NumberSequence)
        .where(NumberSequence.issuer_id == issuer.id, NumberSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert seq is not None
    before = seq.format
    seq.format = fmt
    audit.record(
        ctx,
        "number_format",
        f"{issuer.id}:{kind}",
        issuer.path,
        {"format": {"from": before, "to": fmt}},
    )
    return NumberFormatInfo(issuer_id=issuer.id, kind=kind, format=fmt, last_number=seq.last_number)


# ---------------------------------------------------------------- tax rules


def _tax_info(r: TaxRule) -> TaxRuleInfo:
    return TaxRuleInfo(
        id=r.id,
        seller_id=r.seller_id,
        buyer_country=r.buyer_country,
        name=r.name,
        rate=_plain(r.rate),
        reverse_charge=r.reverse_charge,
        buyer_region=r.buyer_region or None,
    )


@operation("TaxRuleSet", roles=BILLING, mutating=True)
def tax_rule_set(
    ctx: CallContext,
    *,
    buyer_country: str,
    name: str,
    rate: Decimal,
    reverse_charge: bool = False,
    buyer_region: str | None = None,
    seller_id: int | None = None,
) -> TaxRuleInfo:
    """Create or replace the seller's tax rule for buyers in a country (and
    optionally one region, which then wins over the country's rule).

    ``rate`` is a percentage. With ``reverse_charge`` a buyer with a tax id is
    charged no tax and the invoice carries reverse-charge wording. Whether a
    price includes the tax is a property of the price (the line), not the rule.
    Invoices already issued keep the rate they were issued with.
    """
    seller = get_account(ctx, seller_id if seller_id is not None else ctx.principal.account_id)
    if seller.type not in SELLERS:
        raise ValidationError("seller_id", "only the provider and resellers sell")
    country = buyer_country.strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise ValidationError("buyer_country", "must be an ISO 3166-1 alpha-2 code")
    region = (buyer_region or "").strip()
    if len(region) > 128:
        raise ValidationError("buyer_region", "must be at most 128 characters")
    nm = name.strip()
    if not 1 <= len(nm) <= 64:
        raise ValidationError("name", "must be 1 to 64 characters")
    r = to_decimal(rate, "rate")
    if not 0 <= r <= 100 or r != r.quantize(Decimal("0.0001")):
        raise ValidationError("rate", "must be a percentage from 0 to 100 with at most 4 decimals")
    rule = ctx.session.scalar(
        select(TaxRule)
        .where(
            TaxRule.seller_id == seller.id,
            TaxRule.buyer_country == country,
            TaxRule.buyer_region == region,
        )
        .with_for_update()
    )
    before = _tax_info(rule).__dict__ if rule and rule.active else {}
    if rule is None:
        rule = TaxRule(seller_id=seller.id, buyer_country=country, buyer_region=region)
        ctx.session.add(rule)
    rule.name, rule.rate, rule.reverse_charge, rule.active = nm, r, reverse_charge, True
    ctx.session.flush()
    info = _tax_info(rule)
    audit.record(ctx, "tax_rule", rule.id, seller.path, audit.diff(before, info.__dict__))
    return info


@operation("TaxRuleList", roles=READERS)
def tax_rule_list(
    ctx: CallContext,
    *,
    seller_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> TaxRulePage:
    """The seller's active tax rules (default: the caller's account's), by country and region."""
    seller = get_account(ctx, seller_id if seller_id is not None else ctx.principal.account_id)
    q = (
        select(TaxRule)
        .where(TaxRule.seller_id == seller.id, TaxRule.active.is_(True))
        .order_by(TaxRule.buyer_country, TaxRule.buyer_region)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return TaxRulePage([_tax_info(r) for r in rows], total, offset, limit)


@operation("TaxRuleRemove", roles=BILLING, mutating=True)
def tax_rule_remove(ctx: CallContext, *, tax_rule_id: int) -> bool:
    """Stop applying a tax rule to new invoice lines (issued invoices keep it)."""
    rule = ctx.session.get(TaxRule, tax_rule_id, with_for_update=True)
    seller = ctx.session.get(Account, rule.seller_id) if rule is not None else None
    # another seller's rule is "not found" like a missing one: never name its owner
    if rule is None or not rule.active or seller is None or not ctx.principal.sees(seller.path):
        raise NotFound(f"tax rule {tax_rule_id} not found")
    rule.active = False
    audit.record(ctx, "tax_rule", rule.id, seller.path, {"removed": True})
    return True


# ---------------------------------------------------------------- plan charges


def plan_lines(
    quote: PriceQuoteInfo,
    *,
    period_start: date | None = None,
    period_end: date | None = None,
    link_type: LineLink = "subscription",
    link_id: str | None = None,
) -> list[InvoiceLineInput]:
    """Invoice lines for the charges of one priced plan period (a quote from
    :func:`pba_server.catalog.service.quote`), to pass to :func:`invoice_create`
    or :func:`invoice_add_line`. Not an API operation: orders and the billing
    run call it.

    Every line carries the quote's ``tax_inclusive``: an inclusive plan's (or
    price list's) amounts are gross and the tax rule's tax is extracted from
    them; an exclusive plan's are net and the tax is added on top. The quote's
    discount becomes line discounts, taken from the charged lines in order, each
    by at most its amount, so the lines still sum to the quote's total. Lines of
    zero are left out. A line whose quantity and unit price do not give its
    amount exactly (a unit price finer than the minor unit) is billed as one
    unit at its amount. The invoice must be in the quote's currency.
    """
    left = -sum((ln.amount for ln in quote.lines if ln.kind == "discount"), ZERO)
    out: list[InvoiceLineInput] = []
    for ln in quote.lines:
        if ln.kind == "discount" or ln.amount == 0:
            continue
        cut = min(left, ln.amount)
        left -= cut
        qty, price = ln.quantity, ln.unit_price
        exact = (
            qty > 0
            and qty == qty.quantize(Decimal("0.0001"))
            and price == quantize(price, quote.currency)
            and qty * price == ln.amount
        )
        if not exact:
            qty, price = Decimal(1), ln.amount
        out.append(
            InvoiceLineInput(
                description=ln.description[:255],
                unit_price=price,
                quantity=qty,
                discount=cut,
                tax_inclusive=quote.tax_inclusive,
                period_start=period_start,
                period_end=period_end,
                link_type=link_type,
                link_id=link_id,
            )
        )
    if left:
        raise ValidationError("discount", "is more than the charges it reduces")
    return out


# ---------------------------------------------------------------- invoices


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
    _totals(inv, lines)
    if check_limit:
        check_credit(ctx, buyer.id, inv.total)
    # lock order (core/db.py): the buyer's open payments (credit applied
    # below), then its balance row, before the number sequence and the feed
    # counter, as every path that posts and then numbers
    if apply_credit:
        _open_payments(ctx, buyer.id)
    ledger.balance_row(ctx, buyer.id, inv.currency)
    inv.seq, inv.number = _next_number(ctx, inv.issuer_id, "invoice")
    inv.feed_position = _next_feed_position(ctx)
    inv.issued_at = ctx.now()
    inv.due_date = _today(ctx) + timedelta(days=_net_days(ctx, buyer.id))
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
    _settle_status(inv)
    ctx.session.flush()
    _invoice_event(ctx, "invoice.issued", inv)
    if apply_credit and inv.status != "paid":
        _apply_credit(ctx, buyer, [inv])


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
    buyer = _billable(ctx, account_id)
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
    _totals(inv, new)
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
    inv = _get_invoice(ctx, invoice_id, for_update=True)
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
    _totals(inv, _lines_of(ctx, [inv.id])[inv.id])
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
    inv = _get_invoice(ctx, invoice_id, for_update=True)
    buyer = get_account(ctx, inv.account_id)
    _issue(ctx, inv, buyer, check_limit=check_credit_limit, apply_credit=apply_credit)
    audit.record(ctx, "invoice", inv.id, buyer.path, {"issued": inv.number})
    return invoice_info(ctx, inv)


@operation("InvoiceGet", roles=READERS)
def invoice_get(ctx: CallContext, *, invoice_id: int) -> InvoiceInfo:
    """One invoice with its lines."""
    return invoice_info(ctx, _get_invoice(ctx, invoice_id))


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
    today = _today(ctx)
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
        q = q.where(Invoice.issued_at >= _day_start(date_from))
    if date_to:
        q = q.where(Invoice.issued_at < _day_start(date_to + timedelta(days=1)))
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
    lines = _lines_of(ctx, [r.id for r in rows])
    return InvoicePage(
        items=[_invoice_info(r, lines[r.id], today) for r in rows],
        total=total,
        offset=offset,
        limit=limit,
        next_cursor=cursor or 0,
    )


@operation("InvoiceVoid", roles=BILLING, mutating=True)
def invoice_void(ctx: CallContext, *, invoice_id: int, reason: str) -> InvoiceInfo:
    """Void a draft, or an issued invoice nothing has been paid or credited on
    (its booking is reversed; its number stays used). Otherwise use a credit note."""
    inv = _get_invoice(ctx, invoice_id, for_update=True)
    why = reason.strip()
    if not 1 <= len(why) <= 255:
        raise ValidationError("reason", "must be 1 to 255 characters")
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
    audit.record(ctx, "invoice", inv.id, _invoice_path(ctx, inv), {"void": why, "was": was})
    return invoice_info(ctx, inv)


# ---------------------------------------------------------------- credit notes


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
        net=_q(cn.net, c),
        tax=_q(cn.tax, c),
        total=_q(cn.total, c),
        to_credit_balance=_q(cn.to_credit_balance, c),
        reason=cn.reason,
        issued_at=cn.issued_at,
        lines=[
            CreditNoteLineInfo(
                id=ln.id,
                invoice_line_id=ln.invoice_line_id,
                description=d,
                net=_q(ln.net, c),
                tax=_q(ln.tax, c),
                total=_q(ln.total, c),
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
    inv = _get_invoice(ctx, invoice_id, for_update=True)
    INVOICE_STATES.next(inv.status, "credit")
    why = reason.strip()
    if not 1 <= len(why) <= 255:
        raise ValidationError("reason", "must be 1 to 255 characters")
    inv_lines = {ln.id: ln for ln in _lines_of(ctx, [inv.id])[inv.id]}
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
                    f"lines[{i}].amount", f"must be more than 0 and at most {_q(left, cur)} {cur}"
                )
            wanted.append((ln, amount))
    total = sum((a for _ln, a in wanted), ZERO)
    to_receivable = min(total, _outstanding(inv))
    to_credit = total - to_receivable
    ledger.balance_row(ctx, inv.account_id, cur)  # lock order: balance before number
    seq, number = _next_number(ctx, inv.issuer_id, "credit_note")
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
    _settle_status(inv)
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
        _invoice_path(ctx, inv),
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


# ---------------------------------------------------------------- payments


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
                    a.invoice_id, _q(a.amount, _currency_of(payments, a.payment_id)), num
                )
            )
    return [
        PaymentInfo(
            id=p.id,
            account_id=p.account_id,
            issuer_id=p.issuer_id,
            currency=p.currency,
            amount=_q(p.amount, p.currency),
            unallocated=_q(p.amount - p.allocated, p.currency),
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
    acc = _billable(ctx, account_id)
    amt = money(amount, acc.currency, "amount")
    if amt <= 0:
        raise ValidationError("amount", "must be positive")
    ref = reference.strip()
    if not 1 <= len(ref) <= 128:
        raise ValidationError("reference", "must be 1 to 128 characters")
    if received_on > _today(ctx):
        raise ValidationError("received_on", "is in the future")
    if invoice_ids is not None and not allocate:
        raise ValidationError("invoice_ids", "names invoices to allocate to, but allocate is false")
    issuer = seller_of(ctx, acc)
    targets = _unpaid_invoices(ctx, acc, invoice_ids) if allocate else []
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
    _apply_credit(ctx, acc, targets, payment=p)
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
            inv = _get_invoice(ctx, a.invoice_id, for_update=True)
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
            _settle_status(inv)
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
    acc = _billable(ctx, p.account_id)
    if p.allocated >= p.amount:
        raise InvalidState(f"payment {p.id} is fully allocated")
    made = _apply_credit(ctx, acc, _unpaid_invoices(ctx, acc, invoice_ids), payment=p)
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


# ---------------------------------------------------------------- balances


@operation("BalanceAdjust", roles=BILLING, mutating=True)
def balance_adjust(
    ctx: CallContext, *, account_id: int, amount: Decimal, reason: str
) -> AdjustmentInfo:
    """Adjust what an account owes, outside any invoice: a positive ``amount``
    charges it, a negative one gives it credit (goodwill, write-off). Audited
    with the reason; a mistake is corrected by an opposite adjustment."""
    acc = _billable(ctx, account_id)
    amt = money(amount, acc.currency, "amount")
    if amt == 0:
        raise ValidationError("amount", "must not be zero")
    why = reason.strip()
    if not 1 <= len(why) <= 255:
        raise ValidationError("reason", "must be 1 to 255 characters")
    issuer = seller_of(ctx, acc)
    tx = ledger.post(
        ctx,
        kind="adjustment",
        account_id=acc.id,
        currency=acc.currency,
        memo=why,
        legs=[Leg("customer_credit", acc.id, amt), Leg("adjustments", issuer.id, -amt)],
        document_type="adjustment",
    )
    row = ledger.balance_row(ctx, acc.id, acc.currency)
    audit.record(
        ctx, "balance", acc.id, acc.path, {"adjusted": amt, "reason": why, "transaction": tx.id}
    )
    return AdjustmentInfo(
        transaction_id=tx.id,
        account_id=acc.id,
        currency=acc.currency,
        amount=amt,
        reason=why,
        balance=_q(row.receivable + row.credit, acc.currency),
    )


@operation("AccountBalanceGet", roles=READERS)
def account_balance_get(ctx: CallContext, *, account_id: int | None = None) -> BalanceInfo:
    """An account's balance (what it owes; negative: it has prepaid credit), the
    part of it that is overdue, and its available credit: the credit limit
    minus the exposure (the balance, when positive)."""
    acc = get_account(ctx, account_id if account_id is not None else ctx.principal.account_id)
    c = acc.currency
    receivable, credit = ledger.balance_of(ctx.session, acc.id, c)
    overdue = ctx.session.scalar(
        select(
            func.coalesce(
                func.sum(Invoice.total - Invoice.paid_amount - Invoice.credited_amount), 0
            )
        ).where(
            Invoice.account_id == acc.id,
            Invoice.status.in_(("issued", "partially_paid")),
            Invoice.due_date < _today(ctx),
        )
    )
    bal = receivable + credit
    return BalanceInfo(
        account_id=acc.id,
        currency=c,
        balance=_q(bal, c),
        receivable=_q(receivable, c),
        credit=_q(max(-credit, ZERO), c),
        overdue=_q(Decimal(overdue), c),
        credit_limit=_q(acc.credit_limit, c),
        available_credit=_q(acc.credit_limit - bal, c),
    )


def _doc_numbers(ctx: CallContext, txs: Sequence[LedgerTransaction]) -> dict[tuple[str, int], str]:
    want: dict[str, set[int]] = {}
    for t in txs:
        if t.document_type and t.document_id is not None:
            want.setdefault(t.document_type, set()).add(t.document_id)
    out: dict[tuple[str, int], str] = {}
    for kind, model, col in (
        ("invoice", Invoice, Invoice.number),
        ("credit_note", CreditNote, CreditNote.number),
        ("payment", Payment, Payment.reference),
    ):
        if want.get(kind):
            for i, n in ctx.session.execute(select(model.id, col).where(model.id.in_(want[kind]))):  # type: ignore[attr-defined]
                out[(kind, i)] = n
    return out


@operation("StatementGet", roles=READERS)
def statement_get(
    ctx: CallContext, *, account_id: int, date_from: date, date_to: date
) -> StatementInfo:
    """The account's statement for [date_from, date_to] (UTC days): the opening
    balance, each invoice, credit note, payment, adjustment and void in the
    order booked with the running balance, and the closing balance. Moving
    prepaid credit onto an invoice does not change the balance and is not a line."""
    acc = get_account(ctx, account_id)
    if date_to < date_from:
        raise ValidationError("date_to", "is before date_from")
    c = acc.currency
    start, end = _day_start(date_from), _day_start(date_to + timedelta(days=1))
    mine = and_(
        LedgerEntry.owner_id == acc.id,
        LedgerEntry.currency == c,
        LedgerEntry.ledger_account.in_(ledger.CUSTOMER_ACCOUNTS),
    )
    opening = Decimal(
        ctx.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(mine, LedgerTransaction.at < start)
        )
    )
    rows = ctx.session.execute(
        select(LedgerTransaction, func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .where(mine, LedgerTransaction.at >= start, LedgerTransaction.at < end)
        .group_by(LedgerTransaction.id)
        .order_by(LedgerTransaction.id)
    ).all()
    numbers = _doc_numbers(ctx, [t for t, _s in rows])
    running = opening
    lines: list[StatementLine] = []
    for t, s in rows:
        amount = Decimal(s)
        if amount == 0:
            continue
        running += amount
        key = (t.document_type or "", t.document_id or 0)
        lines.append(
            StatementLine(
                at=t.at,
                kind=t.kind,
                description=t.memo,
                amount=_q(amount, c),
                balance=_q(running, c),
                document_id=t.document_id,
                document_number=numbers.get(key),
            )
        )
    return StatementInfo(
        account_id=acc.id,
        currency=c,
        date_from=date_from,
        date_to=date_to,
        opening_balance=_q(opening, c),
        closing_balance=_q(running, c),
        lines=lines,
    )


# ---------------------------------------------------------------- rendering


@operation("InvoiceRender", roles=READERS)
def invoice_render(
    ctx: CallContext, *, invoice_id: int, format: RenderFormat = "html"
) -> RenderedDocument:
    """The invoice as a document for the customer: HTML, or PDF (base64), with
    the seller's and buyer's details, number, dates, lines, tax and totals."""
    inv = _get_invoice(ctx, invoice_id)
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
