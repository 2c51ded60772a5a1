"""The domains' checks as pure functions: no database, no registrar."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pba_server.catalog.types import PlanPeriod
from pba_server.core.errors import ValidationError
from pba_server.domains import checks
from pba_server.domains.types import DomainContact, TldPrice

D = Decimal


def test_prices_are_checked_and_sorted_by_years():
    out = checks.check_prices(
        [TldPrice(2, D("20"), D("18")), TldPrice(1, D("10.5"), D("9"), D("7"))], "EUR"
    )
    assert [p.years for p in out] == [1, 2]
    assert out[0] == TldPrice(1, D("10.50"), D("9.00"), D("7.00"))
    assert out[1].transfer is None


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        ([], "prices"),
        ([TldPrice(0, D(1), D(1))], "prices[0].years"),
        ([TldPrice(11, D(1), D(1))], "prices[0].years"),
        ([TldPrice(1, D(1), D(1)), TldPrice(1, D(2), D(2))], "prices[1].years"),
        ([TldPrice(1, D(-1), D(1))], "prices[0].register"),
        ([TldPrice(1, D(1), None)], "prices[0].renew"),  # type: ignore[arg-type]
        ([TldPrice(1, D(1), D(1), D("0.001"))], "prices[0].transfer"),
    ],
)
def test_bad_prices_name_the_field(prices, field):
    with pytest.raises(ValidationError) as e:
        checks.check_prices(prices, "EUR")
    assert e.value.field == field


def test_plan_periods_turn_the_first_price_into_setup_or_renewal_fees():
    prices = [
        TldPrice(1, D(12), D(10), D(8)),  # first year dearer: a setup fee
        TldPrice(2, D(15), D(20)),  # first period cheaper: a renewal fee; no transfer
    ]
    assert checks.plan_periods(prices, "register") == [
        PlanPeriod(1, "year", D(2), D(10), D(0), is_default=True),
        PlanPeriod(2, "year", D(0), D(15), D(5), is_default=False),
    ]
    assert checks.plan_periods(prices, "transfer") == [
        PlanPeriod(1, "year", D(0), D(8), D(2), is_default=True),
    ]
    assert checks.plan_periods([TldPrice(1, D(1), D(1))], "transfer") == []


def test_contacts_by_role_cleaned():
    out = checks.check_contacts(
        [
            DomainContact("registrant", " Jane ", "jane@example.test", country="de"),
            DomainContact("tech", "Ops", "ops@example.test"),
        ]
    )
    assert sorted(out) == ["registrant", "tech"]
    assert out["registrant"].name == "Jane" and out["registrant"].country == "DE"


@pytest.mark.parametrize(
    ("contacts", "field"),
    [
        ([], "contacts"),
        ([DomainContact("owner", "A", "a@b.test")], "contacts[0].role"),  # type: ignore[arg-type]
        (
            [DomainContact("admin", "A", "a@b.test"), DomainContact("admin", "B", "b@b.test")],
            "contacts[1].role",
        ),
        ([DomainContact("admin", " ", "a@b.test")], "contacts[0].name"),
        ([DomainContact("admin", "A", "not-an-address")], "contacts[0].email"),
        ([DomainContact("admin", "A", "a@b.test", country="DEU")], "contacts[0].country"),
        ([DomainContact("admin", "A", "a@b.test", city="x" * 256)], "contacts[0].city"),
    ],
)
def test_bad_contacts_name_the_field(contacts, field):
    with pytest.raises(ValidationError) as e:
        checks.check_contacts(contacts)
    assert e.value.field == field
