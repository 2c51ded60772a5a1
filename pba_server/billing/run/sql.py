"""Low-level SQL helpers of the billing run, for both databases: the dialect,
``col = ANY(:array)`` filters, upserts, a transaction per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pba_server.core.db import UnitOfWork


def is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def in_ids(session: Session, col: Any, ids: Iterable[int]) -> Any:
    """``col IN ids``; on PostgreSQL ``col = ANY(:array)``: one parameter
    instead of thousands (the driver parses each statement's placeholders)."""
    values = list(ids)
    if is_pg(session):
        return col == any_(bindparam(None, values, type_=ARRAY(Integer)))
    return col.in_(values)


def upsert(session: Session) -> Any:
    """The dialect's ``insert`` with ``on_conflict_do_*``."""
    return pg_insert if is_pg(session) else sqlite_insert


@contextmanager
def transaction(
    engine: Engine, session: Session | None
) -> Iterator[tuple[Session, Callable[[], None]]]:
    """A transaction per batch, or the caller's session (the BillingRun
    operation: everything in the caller's one transaction)."""
    if session is not None:
        yield session, session.flush
        return
    with UnitOfWork(engine) as uow:
        yield uow.session, uow.commit
