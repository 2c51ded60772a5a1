"""Leases on work in flight (habit 4, after a crash).

A worker that owns a row in flight -- a gateway charge being made, a
provisioning operation being run -- holds a lease on it: ``lease_until`` is
set when it takes the row and renewed every :data:`RENEW_EVERY` seconds by a
:class:`LeaseKeeper` thread, on its own connection, while the call runs. If
the process dies the renewals stop and the lease expires within
:data:`LEASE`; recovery (payments reconciliation, the provisioning run, the
order runner) takes a row whose lease expired at once, instead of waiting an
age threshold meant for rows whose worker is merely slow.

A row whose ``lease_until`` is None is owned by nobody and recovered by the
age thresholds that applied before leases.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from pba_server.core.clock import Clock

log = logging.getLogger("pba.leases")

LEASE = timedelta(seconds=15)
RENEW_EVERY = 5.0  # seconds; three renewals may fail before the lease runs out


def lease_until(clock: Clock) -> datetime:
    """A fresh lease's end, from now."""
    return clock.now() + LEASE


def expired(until: datetime | None, now: datetime) -> bool:
    return until is not None and until <= now


class LeaseKeeper:
    """Renews ``entity.lease_until`` (or ``column``) of the row ``row_id``
    while the ``with`` body runs, only while ``owned`` (where-clauses) holds.

    Renewals are short transactions of their own; a failed one is logged and
    retried at the next beat (the lease is three beats long)."""

    def __init__(
        self,
        engine: Any,
        clock: Clock,
        entity: Any,
        row_id: int,
        *owned: Any,
        column: str = "lease_until",
    ) -> None:
        self.engine, self.clock, self.entity, self.row_id = engine, clock, entity, row_id
        self.owned, self.column = owned, column
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(
            target=self._run, name=f"pba-lease-{self.entity.__tablename__}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def renew(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(self.entity)
                .where(self.entity.id == self.row_id, *self.owned)
                .values({self.column: lease_until(self.clock)})
            )

    def _run(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                self.renew()
            except Exception as exc:
                log.warning(
                    "lease on %s %s not renewed: %s",
                    self.entity.__tablename__,
                    self.row_id,
                    type(exc).__name__,
                )
