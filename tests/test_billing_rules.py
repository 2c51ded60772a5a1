"""The pure invoice rules (pba_server.billing.rules), without a database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pba_server.billing.models import Invoice, InvoiceLine
from pba_server.billing.rules import (
    INVOICE_STATES,
    check_number_format,
    invoice_status,
    outstanding,
    plain,
    plan_lines,
    settle_status,
    update_totals,
)
from pba_server.catalog.types import PriceQuoteInfo, QuoteLine
from pba_server.core.errors import InvalidState, ValidationError

D = Decimal
DAY = date(2026, 3, 10)


def _invoice(status: str = "issued", total: str = "100.00", **kw: object) -> Invoice:
    values: dict[str, object] = {
        "status": status,
        "currency": "USD",
        "total": D(total),
        "paid_amount": D(0),
        "credited_amount": D(0),
    }
    return Invoice(**(values | kw))


@pytest.mark.parametrize(
    ("status", "due", "seen"),
    [
        ("issued", date(2026, 3, 9), "overdue"),
        ("partially_paid", date(2026, 3, 9), "overdue"),
        ("issued", DAY, "issued"),  # due today is not overdue yet
        ("issued", None, "issued"),
        ("paid", date(2026, 1, 1), "paid"),
        ("void", date(2026, 1, 1), "void"),
        ("draft", None, "draft"),
    ],
)
def test_overdue_is_derived_from_the_due_date(status: str, due: date | None, seen: str) -> None:
    assert invoice_status(_invoice(status, due_date=due), DAY) == seen


def test_settlement_status_follows_what_is_left() -> None:
    inv = _invoice(paid_amount=D("40.00"))
    settle_status(inv)
    assert (inv.status, outstanding(inv)) == ("partially_paid", D("60.00"))
    inv.credited_amount = D("60.00")
    settle_status(inv)
    assert (inv.status, outstanding(inv)) == ("paid", D(0))
    credited_only = _invoice(credited_amount=D("10.00"))
    settle_status(credited_only)
    assert credited_only.status == "issued"


def test_the_state_machine_refuses_illegal_moves() -> None:
    assert INVOICE_STATES.next("draft", "issue") == "issued"
    with pytest.raises(InvalidState):
        INVOICE_STATES.next("void", "settle")
    with pytest.raises(InvalidState):
        INVOICE_STATES.next("paid", "add_line")


def _line(net: str, tax: str) -> InvoiceLine:
    return InvoiceLine(net=D(net), tax=D(tax), total=D(net) + D(tax))


def test_totals_sum_the_lines_and_refuse_a_huge_invoice() -> None:
    inv = _invoice(total="0")
    update_totals(inv, [_line("10.00", "1.90"), _line("5.00", "0")])
    assert (inv.subtotal, inv.tax_total, inv.total) == (D("15.00"), D("1.90"), D("16.90"))
    with pytest.raises(ValidationError):
        update_totals(inv, [_line("600000000000000.00", "0")] * 2)


@pytest.mark.parametrize("fmt", ["INV-{year}-{seq:06d}", "{seq}", " R{seq:3d}/{year} "])
def test_number_formats_that_are_accepted(fmt: str) -> None:
    assert check_number_format(fmt) == fmt.strip()


@pytest.mark.parametrize(
    "fmt", ["", "INV-{year}", "{seq!r}", "{name}", "{seq:x}", "{seq", "x" * 65, "{0}"]
)
def test_number_formats_that_are_refused(fmt: str) -> None:
    with pytest.raises(ValidationError):
        check_number_format(fmt)


def test_plain_numbers_have_no_exponent_or_trailing_zeros() -> None:
    assert [str(plain(D(v))) for v in ("30.00", "19.5000", "0.0166", "3E+1")] == [
        "30",
        "19.5",
        "0.0166",
        "30",
    ]


def _quote(lines: list[QuoteLine], inclusive: bool = False) -> PriceQuoteInfo:
    charges = sum((ln.amount for ln in lines if ln.kind != "discount"), D(0))
    discount = sum((ln.amount for ln in lines if ln.kind == "discount"), D(0))
    return PriceQuoteInfo(
        account_id=1,
        plan_id=1,
        plan_version=1,
        currency="USD",
        period_count=1,
        period_unit="month",
        price_source="plan",
        lines=lines,
        subtotal=charges,
        discount=discount,
        total=charges + discount,
        tax_inclusive=inclusive,
    )


cents = st.integers(min_value=0, max_value=10**7).map(lambda c: D(c) / 100)


@given(
    amounts=st.lists(cents, min_size=1, max_size=6),
    percent=st.integers(min_value=0, max_value=100),
    inclusive=st.booleans(),
)
def test_plan_lines_keep_the_quote_total(
    amounts: list[Decimal], percent: int, inclusive: bool
) -> None:
    charges = [QuoteLine("recurring", f"Charge {i}", D(1), a, a) for i, a in enumerate(amounts)]
    cut = (sum(amounts, D(0)) * percent / 100).quantize(D("0.01"))
    lines = plan_lines(
        _quote([*charges, QuoteLine("discount", "Off", D(1), -cut, -cut)], inclusive)
    )
    assert (
        sum((ln.quantity * ln.unit_price - ln.discount for ln in lines), D(0))
        == sum(amounts, D(0)) - cut
    )
    assert all(0 <= ln.discount <= ln.quantity * ln.unit_price for ln in lines)
    assert all(ln.tax_inclusive is inclusive for ln in lines)
    assert len(lines) == sum(1 for a in amounts if a)  # lines of zero are left out


def test_a_discount_larger_than_the_charges_is_refused() -> None:
    quote = _quote(
        [
            QuoteLine("recurring", "Plan", D(1), D("5.00"), D("5.00")),
            QuoteLine("discount", "Off", D(1), D("-6.00"), D("-6.00")),
        ]
    )
    with pytest.raises(ValidationError):
        plan_lines(quote)


def test_a_unit_price_finer_than_a_cent_is_billed_as_one_unit() -> None:
    (ln,) = plan_lines(
        _quote([QuoteLine("resource_recurring", "Disk", D(3), D("0.0166"), D("0.05"))])
    )
    assert (ln.quantity, ln.unit_price) == (D(1), D("0.05"))
