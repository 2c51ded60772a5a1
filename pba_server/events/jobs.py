"""Periodic work of the events feature."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.events import retention


def jobs(settings: Settings) -> list[JobSpec]:
    days = settings.event_retention_days
    return [
        JobSpec(
            "purge-events",
            timedelta(hours=6),
            lambda j: retention.purge(j.uow, j.clock, days=days),
        )
    ]
