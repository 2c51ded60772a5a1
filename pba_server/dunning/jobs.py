"""Periodic work of the dunning feature: reminders, fees and suspensions of
overdue invoices (commits per invoice)."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.dunning import service


def jobs(settings: Settings) -> list[JobSpec]:
    return [
        JobSpec(
            "dunning",
            timedelta(hours=1),
            lambda j: service.run_dunning(j.engine, j.clock, j.runtime),
        )
    ]
