"""Card data never enters the system: any string that looks like a card number
(a Luhn-valid run of 12-19 digits, spaces and dashes allowed) is refused.

The dispatcher applies this to every string parameter of every operation, so
a PAN pasted into a name, a note or a reason is refused before anything is
stored or logged; the fault never repeats the value.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pba_server.core.errors import ValidationError

_DIGIT_RUN = re.compile(r"(?:\d[ -]?){12,19}")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def refuse_card_data(field: str, value: str) -> None:
    for m in _DIGIT_RUN.finditer(value):
        digits = re.sub(r"\D", "", m.group())
        if 12 <= len(digits) <= 19 and luhn(digits):
            raise ValidationError(
                field, "looks like a card number: send the gateway's token, never card data"
            )


def refuse_in(field: str, value: Any) -> None:
    """Walk a coerced argument (strings, lists, dataclasses) and refuse card data."""
    if isinstance(value, str):
        refuse_card_data(field, value)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            refuse_in(f"{field}[{i}]", v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            refuse_in(f"{field}.{f.name}", getattr(value, f.name))
