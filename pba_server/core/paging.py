"""Every ``*List`` operation answers one page shape: ``items``, ``total`` (of
all that match), and the ``offset`` and ``limit`` it was asked for (docs/api.md).
``EventList`` alone pages by cursor (``after`` -> ``next_cursor``): events keep
arriving and a cursor never skips or repeats one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from pba_server.core.errors import ValidationError

MAX_PAGE = 1000
DEFAULT_LIMIT = 100

T = TypeVar("T")


def check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValidationError("offset", "must not be negative")
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be between 1 and {MAX_PAGE}")


def count(session: Session, q: Select[*tuple[Any, ...]]) -> int:
    """How many rows ``q`` selects, ignoring any order, offset or limit."""
    return int(session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0)


def rows(
    session: Session, q: Select[*tuple[Any, ...]], offset: int, limit: int
) -> tuple[list[Any], int]:
    """One page of ``q``'s rows (``q`` carries its order) and the total."""
    check_page(offset, limit)
    total = count(session, q)
    return list(session.execute(q.offset(offset).limit(limit)).all()), total


def scalars(
    session: Session, q: Select[*tuple[Any, ...]], offset: int, limit: int
) -> tuple[list[Any], int]:
    """As :func:`rows`, for a query of one entity or column."""
    check_page(offset, limit)
    total = count(session, q)
    return list(session.scalars(q.offset(offset).limit(limit)).all()), total


def sliced(items: Sequence[T], offset: int, limit: int) -> tuple[list[T], int]:
    """One page of a list built in Python (a catalog, a plugin registry)."""
    check_page(offset, limit)
    return list(items[offset : offset + limit]), len(items)
