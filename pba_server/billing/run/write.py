"""The billing run's writes: ids taken from the sequences in one statement,
rows written with COPY (PostgreSQL) or multi-row INSERTs (SQLite), the
billed subscriptions advanced in one statement (a subscription changed since
it was read raises :class:`BatchConflict`), scheduled plan migrations."""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, text, update
from sqlalchemy.orm import Session

from pba_server.billing.run.data import Res
from pba_server.billing.run.sql import is_pg
from pba_server.subscriptions.models import Subscription, SubscriptionResource

log = logging.getLogger("pba.billing_run")


class BatchConflict(Exception):
    """A subscription changed under the batch (an order, a cancellation): the
    batch is rolled back and done again."""


def alloc_ids(session: Session, table: str, n: int) -> list[int]:
    """``n`` new primary keys of ``table`` in one statement.

    PostgreSQL: from the table's sequence. SQLite: above the current maximum;
    safe because the run's transaction holds SQLite's write lock (BEGIN
    IMMEDIATE) from its start."""
    if n == 0:
        return []
    if is_pg(session):
        rows = session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": n},
        )
        return [int(r[0]) for r in rows]
    top = session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
    start = int(top) + 1
    return list(range(start, start + n))


def bulk_insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` (dicts with the same keys): COPY on PostgreSQL, a
    multi-row INSERT on SQLite."""
    if not rows:
        return 0
    tbl = table.__table__ if hasattr(table, "__table__") else table
    started = time.perf_counter()
    try:
        return _bulk_insert(session, tbl, rows)
    finally:
        log.debug("%s: %d rows in %.3f s", tbl.name, len(rows), time.perf_counter() - started)


def _bulk_insert(session: Session, tbl: Any, rows: list[dict[str, Any]]) -> int:
    if is_pg(session):
        cols = list(rows[0])
        raw = session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            sql = f"COPY {tbl.name} ({', '.join(cols)}) FROM STDIN"
            with cur.copy(sql) as cp:
                for i in range(0, len(rows), 5000):
                    cp.write(copy_text(rows[i : i + 5000], cols))
    else:
        for i in range(0, len(rows), 5000):
            session.execute(tbl.insert(), rows[i : i + 5000])
    return len(rows)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if v is True:
        return "t"
    if v is False:
        return "f"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)  # int, Decimal, date


_TRANSLATE = operator.methodcaller("translate", _COPY_ESCAPES)


def _column_text(values: list[Any]) -> Iterable[str]:
    """One column's values as COPY text, with a C-level formatter when the
    column holds one plain type (most do), else value by value."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind in (int, Decimal):
            return map(str, values)
        if kind is date:
            return map(date.isoformat, values)
        if kind is datetime:
            return map(datetime.isoformat, values)
        if kind is str:
            return map(_TRANSLATE, values)
    return map(_copy_value, values)


def copy_text(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> bytes:
    """Rows in COPY's text format, formatted column by column (several times
    cheaper than the driver's per-value dumpers)."""
    columns = [_column_text([r[c] for r in rows]) for c in cols]
    return "".join([line + "\n" for line in map("\t".join, zip(*columns, strict=True))]).encode()


def migrate_subscriptions(session: Session, moves: list[tuple[int, int, list[Res]]]) -> int:
    """Pin the migrated subscriptions to their new plan version and its rates
    (rare: a few statements per subscription)."""
    for sid, vid, srs in moves:
        session.execute(
            update(Subscription)
            .where(Subscription.id == sid)
            .values(plan_version_id=vid)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            delete(SubscriptionResource)
            .where(SubscriptionResource.subscription_id == sid)
            .execution_options(synchronize_session=False)
        )
        if srs:
            session.execute(
                insert(SubscriptionResource),
                [{"subscription_id": sid, **r._asdict()} for r in srs],
            )
    return len(moves)


def update_subscriptions(session: Session, updates: list[dict[str, Any]]) -> int:
    """Advance the billed subscriptions: PostgreSQL copies the new values into
    a temporary table and updates from it in one statement; SQLite runs one
    prepared UPDATE for all rows."""
    if not updates:
        return 0
    if is_pg(session):
        session.execute(
            text(
                "CREATE TEMP TABLE IF NOT EXISTS billing_run_subs (id integer, "
                "period_start date, period_end date, next_billing_date date, "
                "status varchar(16), promotion_cycles_left integer, cancel_reason text, "
                "updated_at timestamptz, old_next date) ON COMMIT DELETE ROWS"
            )
        )
        cols = (
            "id",
            "period_start",
            "period_end",
            "next",
            "status",
            "cycles",
            "reason",
            "updated",
            "old_next",
        )
        raw = session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur, cur.copy("COPY billing_run_subs FROM STDIN") as cp:  # type: ignore[attr-defined]
            cp.write(copy_text(updates, [f"b_{c}" for c in cols]))
        result = session.execute(
            text(
                "UPDATE subscriptions s SET period_start = v.period_start, "
                "period_end = v.period_end, next_billing_date = v.next_billing_date, "
                "status = v.status, promotion_cycles_left = v.promotion_cycles_left, "
                "cancel_reason = v.cancel_reason, updated_at = v.updated_at "
                "FROM billing_run_subs v WHERE s.id = v.id "
                "AND s.next_billing_date = v.old_next AND s.status = 'active'"
            )
        )
        changed = getattr(result, "rowcount", -1)
        session.execute(text("DELETE FROM billing_run_subs"))
        if changed != len(updates):
            raise BatchConflict(f"{len(updates) - changed} subscription(s) changed meanwhile")
        return len(updates)
    t = Subscription.__table__
    assert isinstance(t, Table)
    session.execute(
        update(t)
        .where(
            t.c.id == bindparam("b_id"),
            t.c.next_billing_date == bindparam("b_old_next"),
            t.c.status == "active",
        )
        .values(
            period_start=bindparam("b_period_start"),
            period_end=bindparam("b_period_end"),
            next_billing_date=bindparam("b_next"),
            status=bindparam("b_status"),
            promotion_cycles_left=bindparam("b_cycles"),
            cancel_reason=bindparam("b_reason"),
            updated_at=bindparam("b_updated"),
        )
        .execution_options(synchronize_session=False),
        updates,
    )
    return len(updates)
