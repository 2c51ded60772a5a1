"""Periodic work of the subscriptions feature: trials, scheduled
cancellations and expiry notices due today."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.subscriptions import service


def jobs(settings: Settings) -> list[JobSpec]:
    days = settings.subscription_expiring_days
    return [
        JobSpec(
            "subscriptions-lifecycle",
            timedelta(hours=1),
            lambda j: service.lifecycle(j.uow, j.clock, j.runtime, expiring_days=days),
        )
    ]
