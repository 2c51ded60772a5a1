"""Card numbers are refused whatever separates their digits (issue 14, item 9):
unit tables and properties for the rule, and every separator through a real
operation on both protocols."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
import zeep
from hypothesis import given
from hypothesis import strategies as st

from pba_server.core.carddata import find_card_number, is_card_number, luhn

# test PANs of the issuers (Luhn-valid)
PANS = [
    "4111111111111111",  # Visa
    "4012888888881881",
    "4222222222222",  # Visa, 13 digits
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # Amex
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "36227206271667",  # Diners, 14 digits
    "6200000000000005",  # UnionPay
]

SEPARATED = {
    "space": "4111 1111 1111 1111",
    "double_space": "4111  1111  1111  1111",
    "dash": "4111-1111-1111-1111",
    "dot": "4111.1111.1111.1111",
    "slash": "4111/1111/1111/1111",
    "nbsp": "4111\u00a01111\u00a01111\u00a01111",
    "thin_space": "4111\u20091111\u20091111\u20091111",
    "tab": "4111\t1111\t1111\t1111",
    "underscore": "4111_1111_1111_1111",
    "mixed": "4111 -1111._1111 / 1111",
    "newline": "4111\n1111\n1111\n1111",
    "glued_letters": "x4111111111111111y",
    "glued_digit": "04111111111111111",
    "glued_digits_grouped": "004111 1111 1111 1111",
    "trailing_digits": "4111 1111 1111 11112",
    "then_expiry": "card 4111 1111 1111 1111 12/27",
    "fullwidth_digits": "\uff14" + "\uff11" * 15,
    "amex_groups": "3782 822463 10005",
}

ORDINARY = {
    "luhn_fails": "Order 4111111111111112",
    "invoice": "INV-2026-000123",
    "invoice_and_date": "Invoice 2026/000123 of 31.01.2026",
    "date": "2026-01-31",
    "dates": "from 2026-01-31 to 2026-02-28",
    "phone_de": "+49 30 1234 5678",
    "phone_us": "+1 (555) 123-4567",
    "phone_long": "+353 87 1234 5678",
    "phone_then_date": "+49 151 2345 6789, 2026-01-31",
    "iban": "DE89 3704 0044 0532 0130 00",
    "iban_compact": "DE89370400440532013000",
    "list": "4111, 1111, 1111, 1111",
    "short": "1234 5678 9012",
    "no_issuer": "1234 5678 9012 3452",  # Luhn-valid, no issuer starts with 1
}


@pytest.mark.parametrize("pan", PANS)
def test_issuer_test_numbers_are_card_numbers(pan: str) -> None:
    assert luhn(pan) and is_card_number(pan) and find_card_number(f"pay with {pan} please")


@pytest.mark.parametrize("value", SEPARATED.values(), ids=SEPARATED.keys())
def test_a_card_number_is_found_whatever_separates_its_digits(value: str) -> None:
    assert find_card_number(value)


@pytest.mark.parametrize("value", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_numbers_pass(value: str) -> None:
    assert not find_card_number(value)


_SEPARATOR_RUNS = st.text(
    st.sampled_from([" ", "\u00a0", "\t", ".", "/", "-", "_", "\u2007", "\u3000", "*", "|"]),
    min_size=1,
    max_size=3,
)


@given(
    pan=st.sampled_from(PANS),
    cuts=st.lists(st.integers(1, 18), max_size=5),
    seps=st.lists(_SEPARATOR_RUNS, min_size=5, max_size=5),
    before=st.sampled_from(["", "x", "card: ", "Pay "]),
    after=st.sampled_from(["", "y", " thanks", " exp 12/27"]),
)
def test_any_separators_between_the_digits_are_seen_through(
    pan: str, cuts: list[int], seps: list[str], before: str, after: str
) -> None:
    pieces, last = [], 0
    for cut in sorted({c for c in cuts if c < len(pan)}):
        pieces.append(pan[last:cut])
        last = cut
    pieces.append(pan[last:])
    value = pieces[0] + "".join(s + p for s, p in zip(seps, pieces[1:], strict=False))
    assert find_card_number(before + value + after)


@given(
    pan=st.sampled_from([p for p in PANS if len(p) == 16]),
    seps=st.lists(_SEPARATOR_RUNS, min_size=3, max_size=3),
    before=st.sampled_from(["", "0", "12", "x9"]),
    after=st.sampled_from(["", "7", "5y"]),
)
def test_digits_glued_onto_a_grouped_card_number_are_seen_through(
    pan: str, seps: list[str], before: str, after: str
) -> None:
    """Up to 3 digits glued onto the outer groups of a card written in 4s."""
    groups = [pan[k : k + 4] for k in range(0, 16, 4)]
    value = groups[0] + "".join(s + g for s, g in zip(seps, groups[1:], strict=True))
    assert find_card_number(before + value + after)


@given(
    year=st.integers(1900, 2100),
    month=st.integers(1, 12),
    day=st.integers(1, 28),
    sep=st.sampled_from(["-", ".", "/"]),
    number=st.integers(0, 10**6 - 1),
    prefix=st.sampled_from(["INV", "CN", "ORD", "Q"]),
)
def test_dates_and_invoice_numbers_pass(
    year: int, month: int, day: int, sep: str, number: int, prefix: str
) -> None:
    assert not find_card_number(
        f"{prefix}-{year}-{number:06d} of {year}{sep}{month:02d}{sep}{day:02d}"
    )
    assert not find_card_number(f"{day:02d}{sep}{month:02d}{sep}{year} {prefix}{year}{number:06d}")


@given(
    country=st.integers(1, 999),
    rest=st.lists(st.integers(0, 9999), min_size=2, max_size=3),
)
def test_phone_numbers_pass(country: int, rest: list[int]) -> None:
    body = " ".join(f"{x:04d}" for x in rest)
    assert not find_card_number(f"+{country} {body}")
    assert not find_card_number(f"Tel. +{country} ({rest[0]:04d}) {body}, fax +{country} {body}")


# ---------------------------------------------------------------- the real API


@pytest.mark.parametrize("name", SEPARATED.keys())
def test_every_separator_is_refused_through_xmlrpc_and_soap(api: Any, name: str) -> None:
    value = SEPARATED[name]
    with pytest.raises(xmlrpc.client.Fault) as x:
        api.xmlrpc().AccountCreate({"type": "customer_personal", "name": f"Ann {value}"})
    assert x.value.faultCode == 4001 and "name: looks like a card number" in x.value.faultString
    assert value not in x.value.faultString
    with pytest.raises(zeep.exceptions.Fault) as e:
        api.soap().AccountCreate(
            type="customer_personal",
            name="Ann",
            contacts=[{"kind": "billing", "name": "Ann", "email": "a@b.example", "phone": value}],
        )
    assert e.value.code.endswith("Client.Validation")
    assert "contacts[0].phone: looks like a card number" in e.value.message
    assert value not in e.value.message
    assert api.xmlrpc().AccountList({})["total"] == 0


def test_ordinary_numbers_are_accepted_through_the_api(api: Any) -> None:
    soap = api.soap()
    for i, value in enumerate(ORDINARY.values()):
        acc = soap.AccountCreate(
            type="customer_personal",
            name=f"Customer {i} {value}",
            contacts=[{"kind": "billing", "name": "A", "email": "a@b.example", "phone": value}],
        )
        assert acc.name.endswith(value) and acc.contacts[0].phone == value
