"""Events operations: the catalog of event types and polling the events.
Handlers, deliveries and notification templates are :mod:`pba_server.notify`'s."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select

from pba_server.core import paging
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path
from pba_server.events.catalog import EVENT_TYPES
from pba_server.events.models import Event
from pba_server.events.outbox import assign_sequence
from pba_server.events.types import EventInfo, EventPage, EventTypePage

# ---------------------------------------------------------------- catalog


@operation("EventTypeList", roles=ANY_ROLE)
def event_type_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> EventTypePage:
    """Every event type the server raises, with the fields of its payload."""
    names, total = paging.sliced(sorted(EVENT_TYPES), offset, limit)
    return EventTypePage([EVENT_TYPES[name].info() for name in names], total, offset, limit)


# ---------------------------------------------------------------- polling


def _event_info(ev: Event) -> EventInfo:
    return EventInfo(
        seq=ev.seq or 0,
        id=ev.id,
        type=ev.type,
        occurred_at=ev.occurred_at,
        account_id=ev.account_id,
        subject_type=ev.subject_type,
        subject_id=ev.subject_id,
        payload=ev.payload,
        correlation_id=ev.correlation_id,
    )


@operation("EventList", roles=ANY_ROLE)
def event_list(
    ctx: CallContext,
    *,
    after: int = 0,
    account_id: int | None = None,
    types: list[str] | None = None,
    limit: int = 100,
) -> EventPage:
    """Events about ``account_id``'s subtree (default: the caller's) with a cursor
    above ``after``, oldest first. ``types`` filters by type name (``invoice.*``
    matches a family). Keep ``next_cursor`` and pass it as ``after`` next time:
    cursors are gap-free and in publication order, so no event is skipped."""
    check_page(0, limit)
    if after < 0:
        raise ValidationError("after", "must not be negative")
    path = visible_path(ctx, account_id)
    for i, t in enumerate(types or []):
        if t not in EVENT_TYPES and not (t.endswith(".*") and t != ".*"):
            raise ValidationError(f"types[{i}]", f"unknown event type {t!r}")
    assign_sequence(ctx.session)
    q = (
        select(Event)
        .where(Event.seq > after, Event.account_path.startswith(path, autoescape=True))
        .order_by(Event.seq)
    )
    if types:
        exact = [t for t in types if not t.endswith(".*")]
        families = [t[:-1] for t in types if t.endswith(".*")]
        conds: list[ColumnElement[bool]] = [Event.type.in_(exact)] if exact else []
        conds += [Event.type.startswith(f, autoescape=True) for f in families]
        q = q.where(or_(*conds))
    rows = list(ctx.session.scalars(q.limit(limit)))
    return EventPage(
        items=[_event_info(e) for e in rows],
        next_cursor=rows[-1].seq or after if rows else after,
    )
