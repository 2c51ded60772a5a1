"""Money: ``Decimal`` amounts with an ISO 4217 currency.

The one documented quantization point is :func:`quantize`: every amount that
enters the system (API input) or is computed for storage is passed through it,
rounding half-up to the currency's minor unit; every result field typed
:data:`Money` goes through it on the way out
(:func:`pba_server.core.schema.quantize_amounts`, called by the dispatcher).
Floats are refused outright, and a decimal string is ``-?digits(.digits)?``.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated

from pba_server.core.errors import ValidationError

# ISO 4217 minor units for the currencies a provider is likely to bill in.
# Anything not listed here is refused rather than guessed.
MINOR_UNITS: dict[str, int] = {
    "AED": 2,
    "ARS": 2,
    "AUD": 2,
    "BGN": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "KZT": 2,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "RON": 2,
    "RSD": 2,
    "RUB": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "UAH": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

MAX_AMOUNT = Decimal("1e15")

# The one decimal grammar on the wire, both protocols: no exponent, sign,
# whitespace, NaN or Infinity ("1E+2" once wrote a 100.00 payment over XML-RPC).
DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class MoneyAmount:
    """Marks a result field as an amount of money: the operation table
    quantizes it to the minor unit of the nearest enclosing ``currency``."""

    def __repr__(self) -> str:
        return "MoneyAmount()"


MONEY_AMOUNT = MoneyAmount()
# An amount in the ``currency`` of its struct (or of the struct around it).
# A plain ``Decimal`` field is a quantity, a rate or a price per unit: its
# precision is kept.
Money = Annotated[Decimal, MONEY_AMOUNT]


def check_currency(code: str, field: str = "currency") -> str:
    if not isinstance(code, str) or code.upper() not in MINOR_UNITS:
        raise ValidationError(field, f"unknown or unsupported currency {code!r}")
    return code.upper()


def to_decimal(value: object, field: str) -> Decimal:
    """Parse a wire value into a Decimal, refusing floats and garbage."""
    if isinstance(value, (bool, float)):
        raise ValidationError(field, "must be a decimal string or number, not a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        if DECIMAL_TEXT.fullmatch(value) is None:
            raise ValidationError(
                field, f"not a decimal number (digits, optional '-' and '.'): {value[:40]!r}"
            )
        try:
            result = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid text
            raise ValidationError(field, f"not a decimal number: {value[:40]!r}") from None
    else:
        raise ValidationError(field, "must be a decimal number")
    if not result.is_finite():
        raise ValidationError(field, "must be a finite number")
    if abs(result) >= MAX_AMOUNT:
        raise ValidationError(field, "is too large")
    return result


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` half-up to the minor unit of ``currency``."""
    exp = Decimal(1).scaleb(-MINOR_UNITS[currency])
    return amount.quantize(exp, rounding=ROUND_HALF_UP)


def money(value: object, currency: str, field: str) -> Decimal:
    """Parse and quantize an amount; more precision than the minor unit is refused."""
    amount = to_decimal(value, field)
    q = quantize(amount, currency)
    if q != amount:
        raise ValidationError(
            field, f"has more decimals than {currency} allows ({MINOR_UNITS[currency]})"
        )
    return q
