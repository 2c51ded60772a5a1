"""Purging old events and their delivery log (the job ``purge-events``).

An event older than ``event_retention_days`` (setting, default 90; 0 keeps
everything) is deleted with its deliveries and their attempts, unless one of
its deliveries is not finished: pending, sending or failed (a failed one may
still be retried with DeliveryRetry) - those are never purged. The newest
event is always kept, so the polling cursor (EventList's ``seq``) never
starts again from 1. An integrator polling with a cursor older than the
retention period misses what was purged.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, exists, func, select

from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.events.models import Delivery, DeliveryAttempt, Event

UNFINISHED = ("pending", "sending", "failed")
BATCH = 5000

DEFAULT_DAYS = 90  # the setting's default


def purge(uow: UnitOfWork, clock: Clock, *, days: int = DEFAULT_DAYS, batch: int = BATCH) -> str:
    keep = days
    if keep <= 0:
        return "event retention is off"
    s = uow.session
    cutoff = clock.now() - timedelta(days=keep)
    newest = s.scalar(select(func.max(Event.seq)))
    if newest is None:
        return "0 event(s) purged"
    unfinished = exists().where(Delivery.event_id == Event.id, Delivery.status.in_(UNFINISHED))
    ids = list(
        s.scalars(
            select(Event.id)
            .where(
                Event.occurred_at < cutoff,
                Event.seq.is_not(None),
                Event.seq < newest,
                ~unfinished,
            )
            .order_by(Event.id)
            .limit(batch)
        )
    )
    if not ids:
        return "0 event(s) purged"
    deliveries = select(Delivery.id).where(Delivery.event_id.in_(ids))
    s.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))
    s.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
    s.execute(delete(Event).where(Event.id.in_(ids)))
    return f"{len(ids)} event(s) older than {keep} days purged"
