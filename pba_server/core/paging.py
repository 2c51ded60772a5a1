from __future__ import annotations

from pba_server.core.errors import ValidationError

MAX_PAGE = 1000


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValidationError("offset", "must not be negative")
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be between 1 and {MAX_PAGE}")
