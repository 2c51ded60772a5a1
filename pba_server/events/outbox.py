"""Raising events: the one seam every feature calls, inside its own transaction.

``emit`` writes the event and one delivery row per matching handler in the
caller's transaction, so a rolled-back change leaves neither and a committed
one loses neither. After commit the process's deliverer is nudged; the
periodic pass picks up whatever a nudge missed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import String, any_, bindparam, func, insert, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from pba_server.core.context import CallContext
from pba_server.core.schema import dump
from pba_server.events import runtime
from pba_server.events.catalog import EVENT_TYPES
from pba_server.events.models import Delivery, Event, EventHandler

# any constant: the key of the PostgreSQL advisory lock that serializes sequencing
_SEQUENCE_LOCK = 0x7062615F657673  # "pba_evs"


def emit(
    ctx: CallContext,
    type: str,
    subject: tuple[str, object],
    payload: dict[str, Any],
    *,
    account_id: int,
    account_path: str,
) -> Event:
    """Record event ``type`` about ``subject`` (kind, id) concerning an account.

    ``payload`` holds the fields EventTypeList documents for ``type``.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}: add it to pba_server.events.catalog")
    now = ctx.now()
    ev = Event(
        type=type,
        occurred_at=now,
        account_id=account_id,
        account_path=account_path,
        subject_type=subject[0],
        subject_id=str(subject[1]),
        payload=payload_json(payload),
        correlation_id=ctx.correlation_id[:64],
    )
    ctx.session.add(ev)
    ctx.session.flush()
    handlers = _handlers_for(ctx, ev)
    for h in handlers:
        ctx.session.add(
            Delivery(
                event_id=ev.id,
                handler_id=h.id,
                status="pending",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
                give_up_at=runtime.add_seconds(now, h.retry_for_seconds),
            )
        )
    engine = ctx.session.get_bind()
    ctx.uow.after_commit(lambda: runtime.nudge(engine))
    return ev


def payload_json(payload: dict[str, Any]) -> str:
    """An event's payload as stored (the same text for emit and emit_many)."""
    return json.dumps(dump(payload), sort_keys=True, default=str)


class NewEvent(NamedTuple):
    """One event for :func:`emit_many`: like emit's arguments."""

    subject: tuple[str, object]
    payload: dict[str, Any]
    account_id: int
    account_path: str


Writer = Callable[[Session, Any, list[dict[str, Any]]], Any]


def emit_many(
    session: Session,
    type: str,
    new: Sequence[NewEvent],
    *,
    now: datetime,
    correlation_id: str = "",
    writer: Writer | None = None,
) -> list[int]:
    """Record many events of ``type`` at once, set-based: what :func:`emit`
    does for each, in the session's transaction, in a handful of statements.

    Ids come from the events' own id sequence (PostgreSQL: ``nextval``;
    SQLite: above the maximum, under the write lock the transaction holds
    since BEGIN IMMEDIATE), in ``new``'s order; ``seq`` is left to
    :func:`assign_sequence` after commit, as for ``emit``, so EventList shows
    them exactly as events emitted one by one. Handlers are read once per
    call; one delivery per event and matching enabled handler of its account
    or an account above it. The process's deliverer is nudged after commit.
    ``writer(session, table, rows)`` inserts rows (default :func:`insert_rows`;
    the billing run passes its COPY writer). Returns the new events' ids.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}: add it to pba_server.events.catalog")
    if not new:
        return []
    writer = writer or insert_rows
    ids = _alloc_event_ids(session, len(new))
    corr = correlation_id[:64]
    rows = [
        {
            "id": eid,
            "seq": None,
            "type": type,
            "occurred_at": now,
            "account_id": e.account_id,
            "account_path": e.account_path,
            "subject_type": e.subject[0],
            "subject_id": str(e.subject[1]),
            "payload": payload_json(e.payload),
            "correlation_id": corr,
        }
        for eid, e in zip(ids, new, strict=True)
    ]
    writer(session, Event.__table__, rows)
    by_path = _handlers_by_path(session, {e.account_path for e in new}, type)
    if by_path:
        deliveries = []
        for eid, e in zip(ids, new, strict=True):
            for p in ancestor_paths(e.account_path):
                for hid, retry_for in by_path.get(p, ()):
                    deliveries.append(
                        {
                            "event_id": eid,
                            "handler_id": hid,
                            "status": "pending",
                            "attempts": 0,
                            "created_at": now,
                            "next_attempt_at": now,
                            "give_up_at": runtime.add_seconds(now, retry_for),
                        }
                    )
        writer(session, Delivery.__table__, deliveries)
    engine = session.get_bind()
    sa_event.listen(session, "after_commit", lambda _s: runtime.nudge(engine), once=True)
    return ids


_CHUNK = 5000


def insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> Any:
    """The default writer of :func:`emit_many`: Core executemany INSERTs in
    chunks (psycopg pipelines them; SQLite is in-process)."""
    conn = session.connection()
    for i in range(0, len(rows), _CHUNK):
        conn.execute(insert(table), rows[i : i + _CHUNK])
    return len(rows)


def _alloc_event_ids(session: Session, n: int) -> list[int]:
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, :n)"
            ),
            {"n": n},
        )
        return [int(r[0]) for r in rows]
    top = session.scalar(select(func.coalesce(func.max(Event.id), 0)))
    return list(range(int(top or 0) + 1, int(top or 0) + 1 + n))


def _handlers_by_path(
    session: Session, paths: set[str], type: str
) -> dict[str, list[tuple[int, int]]]:
    """Enabled handlers matching ``type`` of the accounts ``paths`` or above
    them, by account path: (handler id, retry_for_seconds), in id order."""
    wanted = {a for p in paths for a in ancestor_paths(p)}
    out: dict[str, list[tuple[int, int]]] = {}
    if not wanted:
        return out
    q = (
        select(
            EventHandler.id,
            EventHandler.account_path,
            EventHandler.event_types,
            EventHandler.retry_for_seconds,
        )
        .where(EventHandler.deleted_at.is_(None), EventHandler.enabled.is_(True))
        .order_by(EventHandler.id)
    )
    ordered = sorted(wanted)
    if session.get_bind().dialect.name == "postgresql":
        # one array parameter, not one per path
        arg = bindparam("paths", ordered, type_=ARRAY(String()))
        chunks = [EventHandler.account_path == any_(arg)]
    else:
        chunks = [
            EventHandler.account_path.in_(ordered[i : i + 500]) for i in range(0, len(ordered), 500)
        ]
    for cond in chunks:
        for hid, path, types, retry_for in session.execute(q.where(cond)):
            if matches(types, type):
                out.setdefault(path, []).append((hid, retry_for))
    return out


def _handlers_for(ctx: CallContext, ev: Event) -> list[EventHandler]:
    """Enabled handlers of the event's account or any account above it."""
    ancestors = ancestor_paths(ev.account_path)
    cache_key = "events:handlers"
    by_path: dict[str, list[EventHandler]] | None = ctx.cache.get(cache_key)
    if by_path is None:
        by_path = {}
        ctx.cache[cache_key] = by_path
    missing = [p for p in ancestors if p not in by_path]
    if missing:
        for p in missing:
            by_path[p] = []
        rows = ctx.session.scalars(
            select(EventHandler).where(
                EventHandler.account_path.in_(missing),
                EventHandler.deleted_at.is_(None),
                EventHandler.enabled.is_(True),
            )
        )
        for h in rows:
            by_path[h.account_path].append(h)
    out = []
    for p in ancestors:
        for h in by_path[p]:
            if h.deleted_at is None and h.enabled and matches(h.event_types, ev.type):
                out.append(h)
    return out


def ancestor_paths(path: str) -> list[str]:
    """ "/1/7/42/" -> ["/1/", "/1/7/", "/1/7/42/"]."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def matches(event_types: str, type: str) -> bool:
    for pattern in event_types.split():
        if pattern == "*" or pattern == type:
            return True
        if pattern.endswith(".*") and type.startswith(pattern[:-1]):
            return True
    return False


def assign_sequence(session: Session) -> int:
    """Give committed, unsequenced events the next cursor numbers (in id order).

    Runs under one lock (PostgreSQL advisory lock; SQLite has one writer), so
    two sequencers never hand out the same numbers and a reader never sees
    number n+1 committed before n. Returns how many were numbered.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SEQUENCE_LOCK})
        # one statement however many (a billing run raises thousands at once)
        top = session.scalar(select(func.max(Event.seq))) or 0
        numbered = (
            select(Event.id, func.row_number().over(order_by=Event.id).label("n"))
            .where(Event.seq.is_(None))
            .subquery()
        )
        done = session.execute(
            update(Event)
            .where(Event.id == numbered.c.id)
            .values(seq=top + numbered.c.n)
            .execution_options(synchronize_session=False)
        )
        return int(done.rowcount)  # type: ignore[attr-defined]
    ids = list(session.scalars(select(Event.id).where(Event.seq.is_(None)).order_by(Event.id)))
    if not ids:
        return 0
    top = session.scalar(select(func.max(Event.seq))) or 0
    session.execute(update(Event), [{"id": eid, "seq": top + n} for n, eid in enumerate(ids, 1)])
    return len(ids)
