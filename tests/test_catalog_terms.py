"""Plan terms and field checks as pure functions: no database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pba_server.catalog import checks
from pba_server.catalog.terms import check_periods, check_rates, check_refund, check_trial
from pba_server.catalog.types import PlanPeriod, PlanTrial, ResourceRate
from pba_server.core.errors import ValidationError

D = Decimal


def test_rates_fill_in_template_resources_in_template_order():
    in_template = {7: D(10), 3: D(1), 5: D(2)}
    out = check_rates(in_template, [ResourceRate(5, D(4), unit_recurring_price=D("0.5"))])
    assert [r.resource_id for r in out] == [7, 3, 5]
    assert out[0] == ResourceRate(7, D(10), D(10))  # free, nothing more to buy
    assert out[2].included == D(4) and out[2].unit_recurring_price == D("0.5")


@pytest.mark.parametrize(
    ("rates", "field"),
    [
        ([ResourceRate(9, D(1))], "rates[0].resource_id"),  # not in the template
        ([ResourceRate(1, D(1)), ResourceRate(1, D(2))], "rates[1].resource_id"),
        ([ResourceRate(1, D(5), maximum=D(4))], "rates[0].included"),
        ([ResourceRate(1, D("0.00001"))], "rates[0].included"),
        ([ResourceRate(1, D(1), overage_price=D(1), complimentary=True)], "rates[0].complimentary"),
    ],
)
def test_bad_rates_name_the_field(rates, field):
    with pytest.raises(ValidationError) as e:
        check_rates({1: D(1)}, rates)
    assert e.value.field == field


def test_periods_get_one_default_and_fees_in_the_currency():
    out = check_periods(
        [PlanPeriod(1, "month", D(0), D("9.99")), PlanPeriod(1, "year", D(0), D(99))], "EUR"
    )
    assert [p.is_default for p in out] == [True, False]
    with pytest.raises(ValidationError, match="only one period is default"):
        check_periods(
            [
                PlanPeriod(1, "month", D(0), D(1), is_default=True),
                PlanPeriod(2, "month", D(0), D(1), is_default=True),
            ],
            "EUR",
        )
    with pytest.raises(ValidationError, match="given twice"):
        check_periods([PlanPeriod(1, "month", D(0), D(1))] * 2, "EUR")
    with pytest.raises(ValidationError) as e:
        check_periods([PlanPeriod(1, "month", D(0), D("-1"))], "EUR")
    assert e.value.field == "periods[0].recurring_fee"
    with pytest.raises(ValidationError):
        check_periods([], "EUR")


def test_trial_and_refund_bounds():
    assert check_trial(None) is None
    assert check_trial(PlanTrial(14, "day")) == PlanTrial(14, "day", False)
    with pytest.raises(ValidationError):
        check_trial(PlanTrial(0, "day"))
    assert check_refund("full_within_days", 30) == 30
    with pytest.raises(ValidationError):
        check_refund("full_within_days", 0)
    with pytest.raises(ValidationError):
        check_refund("none", 3651)


@given(st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False))
def test_amounts_with_at_most_four_decimals_pass_unchanged(value):
    assert checks.amount(value, "x") == value


def test_text_is_stripped_and_bounded():
    assert checks.text("  a ", "name") == "a"
    assert checks.opt_text("   ", "description") is None
    with pytest.raises(ValidationError):
        checks.text(" ", "name")
    with pytest.raises(ValidationError):
        checks.text("x" * 256, "name")
