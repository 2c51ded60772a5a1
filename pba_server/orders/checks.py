"""What the order operations share that needs no session: who sells
(places, approves, rejects and cancels orders) and the optional-text check.
"""

from __future__ import annotations

from pba_server.core.errors import ValidationError

SELLERS = frozenset({"sales"})  # place, approve, reject, cancel orders (and admin)


def text(value: str | None, field: str, max_len: int = 255) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value.strip()) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value.strip()
