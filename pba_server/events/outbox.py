"""Raising events: the one seam every feature calls, inside its own transaction.

``emit`` writes the event and one delivery row per matching handler in the
caller's transaction, so a rolled-back change leaves neither and a committed
one loses neither. After commit the process's deliverer is nudged; the
periodic pass picks up whatever a nudge missed.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, text, update
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
        payload=json.dumps(dump(payload), sort_keys=True, default=str),
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
    ids = list(session.scalars(select(Event.id).where(Event.seq.is_(None)).order_by(Event.id)))
    if not ids:
        return 0
    top = session.scalar(select(func.max(Event.seq))) or 0
    session.execute(update(Event), [{"id": eid, "seq": top + n} for n, eid in enumerate(ids, 1)])
    return len(ids)
