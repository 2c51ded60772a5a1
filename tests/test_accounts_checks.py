"""The accounts' field checks as pure functions: no database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pba_server.accounts import checks
from pba_server.core.errors import ValidationError


def test_text_is_stripped_and_bounded():
    assert checks.text("  Acme  ", "name") == "Acme"
    with pytest.raises(ValidationError) as e:
        checks.text("   ", "name")
    assert e.value.field == "name"
    with pytest.raises(ValidationError):
        checks.text("x" * 256, "name")
    assert checks.text("x" * 10, "name", 10) == "x" * 10


def test_optional_text_clears_on_empty():
    assert checks.opt_text(None, "tax_id") is None
    assert checks.opt_text("  ", "tax_id") is None
    assert checks.opt_text(" DE123 ", "tax_id", 64) == "DE123"
    with pytest.raises(ValidationError):
        checks.opt_text("x" * 65, "tax_id", 64)


def test_country_is_two_upper_letters():
    assert checks.country(None) is None
    assert checks.country(" ") is None
    assert checks.country(" de ") == "DE"
    with pytest.raises(ValidationError) as e:
        checks.country("DEU", "contacts[0].country")
    assert e.value.field == "contacts[0].country"


def test_email():
    assert checks.email(" a@b.example ", "email") == "a@b.example"
    for bad in ("a@b", "no at.example", "a b@c.example", "a@" + "b" * 250 + ".example"):
        with pytest.raises(ValidationError):
            checks.email(bad, "email")


def test_credit_limit_in_the_currency_and_not_negative():
    assert checks.credit_limit(Decimal("10.5"), "EUR") == Decimal("10.50")
    with pytest.raises(ValidationError):
        checks.credit_limit(Decimal(-1), "EUR")
    with pytest.raises(ValidationError):
        checks.credit_limit(Decimal("0.001"), "EUR")


def test_roles_are_known_sorted_and_unique():
    assert checks.role_list(["sales", "billing", "sales"]) == "billing,sales"
    with pytest.raises(ValidationError):
        checks.role_list([])
    with pytest.raises(ValidationError):
        checks.role_list(["root"])  # type: ignore[list-item]


def test_password_length():
    assert checks.check_password("x" * 10) == "x" * 10
    for bad in ("x" * 9, "x" * 1025):
        with pytest.raises(ValidationError):
            checks.check_password(bad)


def test_login_pattern():
    assert checks.LOGIN_RE.match("jane.doe+ops@example")
    assert not checks.LOGIN_RE.match("ab")
    assert not checks.LOGIN_RE.match("has space")
