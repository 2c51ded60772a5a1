"""Proration as pure functions: worked examples, edge dates and properties."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pba_server.subscriptions.periods import add_periods
from pba_server.subscriptions.proration import (
    PeriodPrice,
    Window,
    change_price,
    prorate,
    refund_amount,
    resource_price,
)

D = Decimal


def pp(**lines: str) -> PeriodPrice:
    return PeriodPrice({k: (k, D(v)) for k, v in lines.items()})


# ---------------------------------------------------------------- examples (docs/proration.md)


def test_worked_example_upgrade_mid_month() -> None:
    # 30-day April; upgrade on 16 April: 15 days left
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 16))
    assert (w.total_days, w.remaining_days, w.used_days) == (30, 15, 15)
    c = change_price(pp(plan="10.00"), pp(plan="25.00"), w, "EUR")
    assert [ln.amount for ln in c.lines] == [D("-5.00"), D("12.50")]
    assert (c.credit, c.charge, c.net) == (D("-5.00"), D("12.50"), D("7.50"))


def test_worked_example_rounding_half_up() -> None:
    # 31-day March, change on 21 March: 11 of 31 days; 9.99 * 11/31 = 3.5448...
    w = Window(date(2026, 3, 1), date(2026, 4, 1), date(2026, 3, 21))
    assert prorate(D("9.99"), w, "EUR") == D("3.54")
    assert prorate(D("19.99"), w, "EUR") == D("7.09")  # 7.0932
    assert prorate(D("1000"), w, "JPY") == D("355")  # 354.8 -> 355, no minor unit
    assert prorate(D("1.000"), w, "BHD") == D("0.355")  # three minor digits


def test_31_january_period_is_28_days_in_2026_and_29_in_2028() -> None:
    end = add_periods(date(2026, 1, 31), 1, "month")
    assert end == date(2026, 2, 28)
    w = Window(date(2026, 1, 31), end, date(2026, 2, 14))
    assert (w.total_days, w.remaining_days) == (28, 14)
    assert prorate(D("28.00"), w, "EUR") == D("14.00")
    end = add_periods(date(2028, 1, 31), 1, "month")
    assert end == date(2028, 2, 29)
    w = Window(date(2028, 1, 31), end, date(2028, 2, 14))
    assert (w.total_days, w.remaining_days) == (29, 15)
    # the next period returns to the anchor day: 28 Feb -> 31 Mar, 31 days
    nxt = add_periods(date(2026, 2, 28), 1, "month", anchor_day=31)
    assert Window(date(2026, 2, 28), nxt, date(2026, 2, 28)).total_days == 31


def test_edges_first_day_last_day_and_outside() -> None:
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 1))
    assert prorate(D("30"), w, "USD") == D("30.00")
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 30))
    assert prorate(D("30"), w, "USD") == D("1.00")
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 5, 1))
    assert prorate(D("30"), w, "USD") == D("0.00")
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 3, 1))  # before: whole period
    assert prorate(D("30"), w, "USD") == D("30.00")
    with pytest.raises(ValueError):
        Window(date(2026, 4, 1), date(2026, 4, 1), date(2026, 4, 1))
    with pytest.raises(ValueError):
        prorate(D("-1"), w, "USD")


def test_unchanged_lines_are_left_out_and_resources_prorate() -> None:
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 21))  # 10 of 30 days
    old = pp(plan="30.00", **{"resource:7": "6.00"})
    new = pp(plan="30.00", **{"resource:7": "12.00"})
    c = change_price(old, new, w, "EUR")
    assert [(ln.kind, ln.key, ln.amount) for ln in c.lines] == [
        ("credit", "resource:7", D("-2.00")),
        ("charge", "resource:7", D("4.00")),
    ]
    assert c.net == D("2.00")
    assert resource_price(D("1.50"), D("4"), D("3"), "EUR") == D("18.00")


def test_downgrade_is_a_net_credit() -> None:
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 11))  # 20 of 30
    c = change_price(pp(plan="30.00"), pp(plan="15.00"), w, "EUR")
    assert c.net == D("-10.00")


def test_refund_policies() -> None:
    w = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 11))
    assert refund_amount(D("30"), w, "EUR", policy="none") == D("0.00")
    assert refund_amount(D("30"), w, "EUR", policy="prorated") == D("20.00")
    kw = {"policy": "full_within_days", "refund_days": 14, "started_on": date(2026, 4, 1)}
    assert refund_amount(D("30"), w, "EUR", **kw) == D("30.00")  # type: ignore[arg-type]
    late = Window(date(2026, 4, 1), date(2026, 5, 1), date(2026, 4, 20))
    assert refund_amount(D("30"), late, "EUR", **kw) == D("0.00")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        refund_amount(D("30"), w, "EUR", policy="sometimes")


# ---------------------------------------------------------------- properties

CURRENCIES = st.sampled_from(["EUR", "USD", "JPY", "BHD"])
AMOUNTS = st.decimals(min_value=0, max_value=100000, places=2, allow_nan=False)
UNITS = st.sampled_from([(1, "month"), (3, "month"), (12, "month"), (1, "year"), (30, "day")])


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)))
    count, unit = draw(UNITS)
    end = add_periods(start, count, unit)
    offset = draw(st.integers(min_value=-5, max_value=(end - start).days + 5))
    return Window(start, end, start + timedelta(days=offset))


def prices(draw: st.DrawFn, currency: str) -> PeriodPrice:
    from pba_server.core.money import quantize

    keys = draw(st.lists(st.sampled_from(["plan", "resource:1", "resource:2"]), unique=True))
    return PeriodPrice({k: (k, quantize(draw(AMOUNTS), currency)) for k in keys})


@settings(max_examples=300, deadline=None)
@given(w=windows(), amount=AMOUNTS, currency=CURRENCIES)
def test_property_prorate_never_exceeds_full_price(w: Window, amount: D, currency: str) -> None:
    from pba_server.core.money import quantize

    full = quantize(amount, currency)
    got = prorate(full, w, currency)
    assert D(0) <= got <= full
    assert got == quantize(got, currency)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), w=windows(), currency=CURRENCIES)
def test_property_change_and_reverse_same_day_cost_nothing(
    data: st.DataObject, w: Window, currency: str
) -> None:
    a = prices(data.draw, currency)
    b = prices(data.draw, currency)
    there = change_price(a, b, w, currency)
    back = change_price(b, a, w, currency)
    assert there.net + back.net == 0
    assert there.net == there.charge + there.credit
    assert -there.credit <= a.total and there.charge <= b.total


@settings(max_examples=200, deadline=None)
@given(w=windows(), amount=AMOUNTS, currency=CURRENCIES)
def test_property_used_plus_remaining_is_the_period(w: Window, amount: D, currency: str) -> None:
    assert w.used_days + w.remaining_days == w.total_days
    later = Window(w.period_start, w.period_end, w.on + timedelta(days=1))
    # a later change never prorates more
    assert prorate(amount, later, currency) <= prorate(amount, w, currency)
