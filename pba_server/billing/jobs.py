"""Periodic work of the billing feature: the billing run (daily unless
``billing_run_interval_hours`` says otherwise; it commits per batch)."""

from __future__ import annotations

from datetime import timedelta

from pba_server.billing.ports import RenewalOrders
from pba_server.config import Settings
from pba_server.core.jobs import JobSpec


def jobs(settings: Settings) -> list[JobSpec]:
    from pba_server.billing import run as billing_run

    hours = settings.billing_run_interval_hours
    workers = max(1, settings.billing_run_workers)
    return [
        JobSpec(
            billing_run.JOB_NAME,
            timedelta(hours=hours),
            lambda j: billing_run.run(
                j.engine,
                j.clock,
                workers=workers,
                secrets=j.runtime.secrets,
                renewals=j.runtime.port(RenewalOrders),
            ).line(),
        )
    ]
