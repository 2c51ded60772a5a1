"""Pure rules: money, wire coercion, state machines (no database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.money import MINOR_UNITS, Money, money, quantize, to_decimal
from pba_server.core.schema import MinLen, coerce, dump, quantize_amounts
from pba_server.core.states import StateMachine


@given(
    st.decimals(
        min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False
    ),
    st.sampled_from(sorted(MINOR_UNITS)),
)
def test_quantize_is_idempotent_and_within_half_a_minor_unit(amount, currency):
    q = quantize(amount, currency)
    assert quantize(q, currency) == q
    assert abs(q - amount) <= Decimal(1).scaleb(-MINOR_UNITS[currency]) / 2
    assert -q.as_tuple().exponent == MINOR_UNITS[currency] or q == 0


def test_quantize_rounds_half_up():
    assert quantize(Decimal("0.005"), "USD") == Decimal("0.01")
    assert quantize(Decimal("-0.005"), "USD") == Decimal("-0.01")
    assert quantize(Decimal("2.5"), "JPY") == Decimal("3")
    assert quantize(Decimal("1.0005"), "KWD") == Decimal("1.001")


def test_money_refuses_floats_and_extra_precision():
    with pytest.raises(ValidationError):
        to_decimal(0.1, "amount")
    with pytest.raises(ValidationError):
        money("1.001", "USD", "amount")
    with pytest.raises(ValidationError):
        money("1.5", "JPY", "amount")
    with pytest.raises(ValidationError):
        to_decimal("NaN", "amount")
    with pytest.raises(ValidationError):
        to_decimal("1e20", "amount")
    assert money("12.5", "USD", "amount") == Decimal("12.50")


@dataclass
class Inner:
    kind: Literal["a", "b"]
    when: datetime | None = None


@dataclass
class Outer:
    n: int
    items: list[Inner]
    amount: Decimal | None = None


def test_coerce_nested_and_paths():
    v = coerce(
        Outer,
        {"n": "3", "items": [{"kind": "a", "when": "2026-01-02T03:04:05Z"}], "amount": "1.50"},
        "",
    )
    assert v == Outer(
        n=3, items=[Inner("a", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))], amount=Decimal("1.50")
    )
    with pytest.raises(ValidationError) as e:
        coerce(Outer, {"n": 1, "items": [{"kind": "a"}, {"kind": "z"}]}, "")
    assert e.value.field == "items[1].kind"
    with pytest.raises(ValidationError) as e:
        coerce(Outer, {"n": 1}, "")
    assert e.value.field == "items"
    with pytest.raises(ValidationError):
        coerce(int, True, "n")
    with pytest.raises(ValidationError):
        coerce(int, 2**70, "n")
    with pytest.raises(ValidationError):
        coerce(str, "a\x00b", "s")


def test_coerce_times_are_utc():
    plus2 = timezone(timedelta(hours=2))
    got = coerce(datetime, datetime(2026, 1, 1, 12, tzinfo=plus2), "t")
    assert got == datetime(2026, 1, 1, 10, tzinfo=UTC) and got.tzinfo == UTC
    # XML-RPC dateTime.iso8601 has no zone: it means UTC
    assert coerce(datetime, datetime(2026, 1, 1, 12), "t").tzinfo == UTC


@given(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=4,
        min_value=Decimal("-1e9"),
        max_value=Decimal("1e9"),
    )
)
def test_dump_then_coerce_roundtrips_money(amount):
    assert coerce(Decimal, dump(amount), "x") == amount


def test_state_machine():
    sm = StateMachine("thing", {("a", "go"): "b", ("b", "back"): "a"})
    assert sm.next("a", "go") == "b"
    with pytest.raises(InvalidState) as e:
        sm.next("b", "go")
    assert "cannot go a b thing" in e.value.message
    assert sm.allowed("b") == ["back"]


@pytest.mark.parametrize(
    "text",
    ["1E+2", "1e2", "NaN", "Infinity", "-Infinity", "+1", " 1", "1 ", "1.", ".5", "1_000", ""],
)
def test_decimal_text_is_digits_with_an_optional_sign_and_point(text):
    with pytest.raises(ValidationError) as e:
        coerce(Decimal, text, "amount")
    assert e.value.field == "amount"


@pytest.mark.parametrize("text", ["0", "-0", "12", "-12.50", "0.0001"])
def test_plain_decimal_text_is_read_exactly(text):
    assert coerce(Decimal, text, "amount") == Decimal(text)
    assert str(coerce(Decimal, text, "amount")) == text


@pytest.mark.parametrize(
    "text", ["2026-12-02T00:57:10", "2026-12-02", "2026-12-02 00:57:10Z", "20261202T005710Z"]
)
def test_a_date_time_text_carries_an_offset(text):
    with pytest.raises(ValidationError) as e:
        coerce(datetime, text, "since")
    assert e.value.field == "since"


def test_min_len_is_checked_by_the_table():
    tp = Annotated[list[int], MinLen(1)]
    assert coerce(tp, [1], "ids") == [1]
    with pytest.raises(ValidationError) as e:
        coerce(tp, [], "ids")
    assert e.value.field == "ids"


@dataclass
class _Line:
    amount: Money
    unit_price: Decimal


@dataclass
class _Doc:
    currency: str
    total: Money
    lines: list[_Line] = field(default_factory=list)
    fee: Money | None = None


def test_result_money_is_quantized_to_the_currency_and_rates_are_kept():
    doc = _Doc("EUR", Decimal("19"), [_Line(Decimal("28.9900"), Decimal("0.0250"))])
    got = quantize_amounts(_Doc, doc)
    assert str(got.total) == "19.00" and got.fee is None
    assert str(got.lines[0].amount) == "28.99" and str(got.lines[0].unit_price) == "0.0250"
    assert str(quantize_amounts(_Doc, _Doc("JPY", Decimal("0"))).total) == "0"
    assert str(doc.total) == "19"  # a copy: the service's value is not changed
