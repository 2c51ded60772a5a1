"""Pure invoice rules, no session: the invoice state machine, the status a
reader sees (overdue is derived), what is outstanding and the stored status
after a settlement, the invoice totals, document number formats, and the
invoice lines of a priced plan period. Values in, values out."""

from __future__ import annotations

import string
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pba_server.billing.models import Invoice, InvoiceLine
from pba_server.billing.types import InvoiceLineInput, InvoiceStatus, LineLink
from pba_server.catalog.types import PriceQuoteInfo
from pba_server.core.errors import ValidationError
from pba_server.core.money import MAX_AMOUNT, quantize
from pba_server.core.states import StateMachine

ZERO = Decimal(0)

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


def check_number_format(fmt: str) -> str:
    """A document number format, trimmed, or ValidationError: only {seq} (required) and {year}."""
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


def invoice_status(inv: Invoice, today: date) -> InvoiceStatus:
    """The status a reader sees: an unpaid invoice past its due date is overdue."""
    if inv.status in ("issued", "partially_paid") and inv.due_date and inv.due_date < today:
        return "overdue"
    return inv.status  # type: ignore[return-value]


def outstanding(inv: Invoice) -> Decimal:
    """What is left to pay on the invoice."""
    return inv.total - inv.paid_amount - inv.credited_amount


def plain(v: Decimal) -> Decimal:
    """Without trailing zeros and never in exponent form (30, not 3E+1)."""
    return v.quantize(Decimal(1)) if v == v.to_integral_value() else v.normalize()


def update_totals(inv: Invoice, lines: Sequence[InvoiceLine]) -> None:
    """Set the invoice's subtotal, tax and total from its lines."""
    inv.subtotal = sum((ln.net for ln in lines), ZERO)
    inv.tax_total = sum((ln.tax for ln in lines), ZERO)
    inv.total = sum((ln.total for ln in lines), ZERO)
    if inv.total >= MAX_AMOUNT:
        raise ValidationError("lines", "the invoice total is too large")


def settle_status(inv: Invoice) -> None:
    """The stored status after a payment, credit or refund changed what is left."""
    if outstanding(inv) == 0:
        inv.status = "paid"
    elif inv.paid_amount > 0:
        inv.status = "partially_paid"
    else:
        inv.status = "issued"


def plan_lines(
    quote: PriceQuoteInfo,
    *,
    period_start: date | None = None,
    period_end: date | None = None,
    link_type: LineLink = "subscription",
    link_id: str | None = None,
) -> list[InvoiceLineInput]:
    """Invoice lines for the charges of one priced plan period (a quote from
    :func:`pba_server.catalog.quotes.quote`), to pass to
    :func:`pba_server.billing.invoices.invoice_create` or
    :func:`pba_server.billing.invoices.invoice_add_line`. Not an API operation:
    orders and the billing run call it.

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
