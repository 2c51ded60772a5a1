"""Field checks shared by the catalog's rooms: values in, values out, no session.

Each returns the cleaned value or raises :class:`ValidationError` naming the field.
"""

from __future__ import annotations

from decimal import Decimal

from pba_server.core.errors import ValidationError
from pba_server.core.money import money, to_decimal

MAX_QUANTITY_DECIMALS = 4  # resource amounts and unit prices: the Money column's scale


def text(value: str, field: str, max_len: int = 255) -> str:
    value = value.strip()
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value


def opt_text(value: str | None, field: str, max_len: int = 4000) -> str | None:
    if value is None or not value.strip():
        return None
    return text(value, field, max_len)


def amount(value: Decimal, field: str, *, positive: bool = False) -> Decimal:
    """A resource amount or unit price: not negative, at most 4 decimals."""
    d = to_decimal(value, field)
    if d < 0 or (positive and d == 0):
        raise ValidationError(field, "must be positive" if positive else "must not be negative")
    if d != d.quantize(Decimal(1).scaleb(-MAX_QUANTITY_DECIMALS)):
        raise ValidationError(field, f"must have at most {MAX_QUANTITY_DECIMALS} decimals")
    return d


def fee(value: Decimal, currency: str, field: str) -> Decimal:
    d = money(value, currency, field)
    if d < 0:
        raise ValidationError(field, "must not be negative")
    return d
