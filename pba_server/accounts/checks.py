"""Field checks of the accounts rooms: values in, values out, no session.

Each returns the cleaned value or raises :class:`ValidationError` naming the field.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pba_server.accounts.types import Role
from pba_server.core.auth import ROLES
from pba_server.core.errors import ValidationError
from pba_server.core.money import money

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOGIN_RE = re.compile(r"^[A-Za-z0-9._@+-]{3,128}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
MIN_PASSWORD = 10


def text(value: str, field: str, max_len: int = 255, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value


def opt_text(value: str | None, field: str, max_len: int = 255) -> str | None:
    if value is None:
        return None
    value = text(value, field, max_len, required=False)
    return value or None


def country(value: str | None, field: str = "country") -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip().upper()
    if not COUNTRY_RE.match(value):
        raise ValidationError(field, "must be an ISO 3166-1 alpha-2 code such as DE or US")
    return value


def email(value: str, field: str) -> str:
    value = value.strip()
    if not EMAIL_RE.match(value) or len(value) > 255:
        raise ValidationError(field, f"not a valid e-mail address: {value!r}")
    return value


def credit_limit(value: Decimal, currency: str) -> Decimal:
    amount = money(value, currency, "credit_limit")
    if amount < 0:
        raise ValidationError("credit_limit", "must not be negative")
    return amount


def role_list(roles: list[Role], field: str = "roles") -> str:
    if not roles:
        raise ValidationError(field, "at least one role is required")
    for r in roles:
        if r not in ROLES:
            raise ValidationError(field, f"unknown role {r!r}")
    return ",".join(sorted(set(roles)))


def check_password(password: str, field: str = "password") -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValidationError(field, "is too long")
    return password
