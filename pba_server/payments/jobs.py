"""Periodic work of the payments feature: reconciliation of charges left
pending, and the first auto-pay attempt of newly issued invoices."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.payments import autopay
from pba_server.payments import service as payments


def jobs(settings: Settings) -> list[JobSpec]:
    return [
        JobSpec(
            "payments-reconcile", timedelta(minutes=5), lambda j: payments.reconcile(j.uow, j.clock)
        ),
        JobSpec(
            "payments-autopay", timedelta(minutes=1), lambda j: autopay.run_autopay(j.uow, j.clock)
        ),
    ]
