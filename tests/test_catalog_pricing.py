"""Pricing rules as pure functions: fast, exhaustive (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pba_server.catalog import parameters, pricing
from pba_server.catalog.pricing import Discount, Fees, Period, Rate, price_period
from pba_server.catalog.types import OrderParameter
from pba_server.core.errors import ValidationError
from pba_server.core.money import MINOR_UNITS

ZERO = Decimal(0)


def money_st(places: int = 2, max_value: int = 10_000) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=0, max_value=max_value, places=places, allow_nan=False, allow_infinity=False
    )


periods_st = st.builds(
    Period, count=st.integers(1, 36), unit=st.sampled_from(["day", "month", "year"])
)
rates_st = st.lists(
    st.builds(
        Rate,
        resource_id=st.integers(1, 1_000_000),
        name=st.just("r"),
        included=money_st(0, 1000),
        maximum=st.none(),
        unit_setup=money_st(4, 100),
        unit_recurring=money_st(4, 100),
        overage=money_st(4, 10),
        optional=st.booleans(),
        complimentary=st.booleans(),
    ),
    max_size=5,
    unique_by=lambda r: r.resource_id,
)
discount_st = st.one_of(
    st.none(),
    st.builds(
        Discount,
        percent=st.decimals(min_value=Decimal("0.0001"), max_value=100, places=4),
        amount=st.none(),
        on_setup=st.booleans(),
        on_recurring=st.booleans(),
        cycles=st.one_of(st.none(), st.integers(1, 12)),
    ),
    st.builds(
        Discount,
        percent=st.none(),
        amount=money_st(2, 100_000).filter(lambda d: d > 0),
        on_setup=st.booleans(),
        on_recurring=st.booleans(),
        cycles=st.one_of(st.none(), st.integers(1, 12)),
    ),
)


@st.composite
def orders(draw: st.DrawFn) -> dict:
    currency = draw(st.sampled_from(["USD", "JPY", "BHD", "EUR"]))
    places = MINOR_UNITS[currency]
    rates = draw(rates_st)
    options = [r.resource_id for r in rates if r.optional and draw(st.booleans())]
    extra = {
        r.resource_id: draw(money_st(0, 100))
        for r in rates
        if not r.complimentary and draw(st.booleans())
    }
    return {
        "currency": currency,
        "period": draw(periods_st),
        "fees": Fees(draw(money_st(places)), draw(money_st(places)), draw(money_st(places))),
        "rates": rates,
        "options": options,
        "extra": extra,
        "discount": draw(discount_st),
        "cycle": draw(st.integers(1, 24)),
    }


@settings(max_examples=400, deadline=None)
@given(orders())
def test_totals_never_negative_and_sum_from_lines(order: dict) -> None:
    priced = price_period(**order)
    exp = Decimal(1).scaleb(-MINOR_UNITS[order["currency"]])
    assert priced.total >= 0
    assert priced.total == sum((ln.amount for ln in priced.lines), ZERO)
    assert priced.subtotal == sum((ln.amount for ln in priced.lines if ln.kind != "discount"), ZERO)
    assert priced.total == priced.subtotal + priced.discount
    assert priced.discount <= 0
    for ln in priced.lines:
        assert ln.amount == ln.amount.quantize(exp), "every line is in minor units"
    kinds = [ln.kind for ln in priced.lines]
    assert ("setup" in kinds) == (order["cycle"] == 1)
    assert "resource_setup" not in kinds or order["cycle"] == 1


@settings(max_examples=200, deadline=None)
@given(orders())
def test_discount_only_within_its_cycles(order: dict) -> None:
    priced = price_period(**order)
    d = order["discount"]
    if d is None or not d.applies_in(order["cycle"]):
        assert priced.discount == 0


@settings(max_examples=200, deadline=None)
@given(orders())
def test_full_percent_discount_on_everything_is_free(order: dict) -> None:
    order["discount"] = Discount(percent=Decimal(100), on_setup=True, on_recurring=True)
    assert price_period(**order).total == 0


def test_rounding_half_up_per_line_and_per_currency() -> None:
    rate = Rate(1, "Traffic", ZERO, unit_recurring=Decimal("0.005"))
    for currency, expected in [("USD", Decimal("0.01")), ("JPY", ZERO), ("BHD", Decimal("0.005"))]:
        priced = price_period(
            currency=currency,
            period=Period(1, "month"),
            fees=Fees(ZERO, ZERO),
            rates=[rate],
            extra={1: Decimal(1)},
        )
        lines = [ln for ln in priced.lines if ln.kind == "resource_recurring"]
        assert sum((ln.amount for ln in lines), ZERO) == expected
    # 2.5 yen rounds half up to 3
    priced = price_period(
        currency="JPY",
        period=Period(1, "month"),
        fees=Fees(ZERO, Decimal(25)),
        rates=[],
        discount=Discount(percent=Decimal(10)),
    )
    assert priced.discount == Decimal(-3) and priced.total == Decimal(22)


def test_periods_months_and_renewal() -> None:
    assert pricing.months_in(Period(3, "month")) == 3
    assert pricing.months_in(Period(2, "year")) == 24
    assert pricing.months_in(Period(15, "day")) == Decimal("0.5")
    rate = Rate(7, "Disk", Decimal(10), unit_setup=Decimal(1), unit_recurring=Decimal("0.5"))
    fees = Fees(Decimal("20.00"), Decimal("30.00"), Decimal("2.00"))
    first = price_period(
        currency="USD", period=Period(1, "year"), fees=fees, rates=[rate], extra={7: Decimal(4)}
    )
    assert [(ln.kind, ln.amount) for ln in first.lines] == [
        ("setup", Decimal("20.00")),
        ("recurring", Decimal("30.00")),
        ("resource_setup", Decimal("4.00")),
        ("resource_recurring", Decimal("24.00")),  # 4 x 0.50 x 12
    ]
    second = price_period(
        currency="USD",
        period=Period(1, "year"),
        fees=fees,
        rates=[rate],
        extra={7: Decimal(4)},
        cycle=2,
    )
    assert [(ln.kind, ln.amount) for ln in second.lines] == [
        ("recurring", Decimal("30.00")),
        ("recurring", Decimal("2.00")),  # renewal fee
        ("resource_recurring", Decimal("24.00")),
    ]


def test_promotion_for_n_cycles_then_full_price() -> None:
    d = Discount(percent=Decimal(50), on_setup=False, on_recurring=True, cycles=2)
    fees = Fees(Decimal("10.00"), Decimal("20.00"))
    totals = [
        price_period(
            currency="USD", period=Period(1, "month"), fees=fees, rates=[], discount=d, cycle=c
        ).total
        for c in (1, 2, 3)
    ]
    assert totals == [Decimal("20.00"), Decimal("10.00"), Decimal("20.00")]


def test_fixed_discount_never_below_zero() -> None:
    priced = price_period(
        currency="EUR",
        period=Period(1, "month"),
        fees=Fees(Decimal("3.00"), Decimal("5.00")),
        rates=[],
        discount=Discount(amount=Decimal("50.00"), on_setup=True, on_recurring=False),
    )
    assert priced.discount == Decimal("-3.00") and priced.total == Decimal("5.00")


def test_selection_faults_name_the_input() -> None:
    rates = [
        Rate(1, "Disk", Decimal(10), maximum=Decimal(20)),
        Rate(2, "mod_perl", ZERO, optional=True, unit_recurring=Decimal(2)),
        Rate(3, "Mail", Decimal(5), complimentary=True),
    ]
    cases = [
        ({"options": [9]}, "options[0]"),
        ({"options": [1]}, "options[0]"),
        ({"options": [2, 2]}, "options[1]"),
        ({"extra": {1: Decimal(11)}}, "resources[0].quantity"),
        ({"extra": {1: Decimal(-1)}}, "resources[0].quantity"),
        ({"extra": {3: Decimal(1)}}, "resources[0].quantity"),
        ({"extra": {8: Decimal(1)}}, "resources[0].resource_id"),
    ]
    for kw, field in cases:
        with pytest.raises(ValidationError) as e:
            pricing.selected_units(rates, kw.get("options", []), kw.get("extra", {}))
        assert e.value.field == field, kw
    with pytest.raises(ValidationError) as e:
        pricing.selected_units([Rate(4, "x", ZERO, maximum=ZERO, optional=True)], [4], {})
    assert e.value.field == "options"
    units = pricing.selected_units(rates, [2], {1: Decimal(10)})
    assert units == {1: (Decimal(10), Decimal(10)), 2: (ZERO, Decimal(1)), 3: (Decimal(5), ZERO)}


@given(
    used=money_st(2, 10_000),
    bought=money_st(0, 100),
    included=money_st(0, 1000),
    price=money_st(4, 10),
)
def test_overage_only_above_included_and_bought(
    used: Decimal, bought: Decimal, included: Decimal, price: Decimal
) -> None:
    rate = Rate(1, "Traffic", included, overage=price)
    charge = pricing.overage_charge(
        rate, used=used, bought=bought, months=Decimal(1), currency="USD"
    )
    assert charge >= 0
    if used <= included + bought:
        assert charge == 0
    free = Rate(1, "Traffic", included, complimentary=True)
    assert (
        pricing.overage_charge(free, used=used, bought=bought, months=Decimal(1), currency="USD")
        == 0
    )


def test_overage_story_numbers() -> None:
    rate = Rate(1, "Traffic", Decimal(500), overage=Decimal("0.05"))
    assert pricing.overage_charge(
        rate, used=Decimal(723), bought=ZERO, months=Decimal(1), currency="USD"
    ) == Decimal("11.15")


def test_promotion_checks() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    base = pricing.PromotionTerms(
        status="active",
        plan_ids=frozenset({1}),
        periods=frozenset({Period(3, "month")}),
        valid_from=now - timedelta(days=1),
        valid_to=now + timedelta(days=1),
        max_uses=10,
        used_count=0,
        currency=None,
    )
    ok = {"plan_id": 1, "period": Period(3, "month"), "currency": "USD", "now": now}
    pricing.check_promotion(base, **ok)
    bad = [
        (base.__class__(**{**base.__dict__, "status": "disabled"}), ok, "disabled"),
        (base, {**ok, "now": now + timedelta(days=2)}, "expired"),
        (base, {**ok, "now": now - timedelta(days=2)}, "not valid yet"),
        (base.__class__(**{**base.__dict__, "used_count": 10}), ok, "used up"),
        (base, {**ok, "plan_id": 2}, "this plan"),
        (base, {**ok, "period": Period(1, "month")}, "1 month"),
        (base.__class__(**{**base.__dict__, "currency": "EUR"}), ok, "in EUR"),
    ]
    for terms, kw, why in bad:
        with pytest.raises(ValidationError) as e:
            pricing.check_promotion(terms, **kw)
        assert e.value.field == "promotion_code" and why in e.value.message


def test_order_parameter_values() -> None:
    defs = parameters.check_definitions(
        [
            OrderParameter("hostname", "hostname"),
            OrderParameter("os", "string", pattern="debian-12|ubuntu-24.04"),
            OrderParameter("cores", "integer", required=False),
        ],
        "order_parameters",
    )
    assert parameters.check_values(defs, {"hostname": "vps1.example.com", "os": "debian-12"}) == {
        "hostname": "vps1.example.com",
        "os": "debian-12",
    }
    for values, field in [
        ({"os": "debian-12"}, "parameters.hostname"),
        ({"hostname": "-bad-", "os": "debian-12"}, "parameters.hostname"),
        ({"hostname": "a.b", "os": "windows"}, "parameters.os"),
        ({"hostname": "a.b", "os": "debian-12", "cores": "two"}, "parameters.cores"),
        ({"hostname": "a.b", "os": "debian-12", "colour": "red"}, "parameters.colour"),
    ]:
        with pytest.raises(ValidationError) as e:
            parameters.check_values(defs, values)
        assert e.value.field == field
    for bad, field in [
        ([OrderParameter("Host Name", "string")], "p[0].name"),
        ([OrderParameter("a", "string"), OrderParameter("a", "integer")], "p[1].name"),
        ([OrderParameter("a", "string", pattern="(")], "p[0].pattern"),
    ]:
        with pytest.raises(ValidationError) as e:
            parameters.check_definitions(bad, "p")
        assert e.value.field == field
