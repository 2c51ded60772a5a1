"""Periodic work of the payments feature: recovery of charges whose request
died (lease expired), reconciliation of charges and refunds left pending, and
the first auto-pay attempt of newly issued invoices."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.payments import autopay
from pba_server.payments.reconcile import reconcile


def jobs(settings: Settings) -> list[JobSpec]:
    return [
        JobSpec(
            "payments-recover",
            timedelta(seconds=15),
            lambda j: reconcile(j.uow, j.runtime, expired_only=True),
        ),
        JobSpec("payments-reconcile", timedelta(minutes=5), lambda j: reconcile(j.uow, j.runtime)),
        JobSpec(
            "payments-autopay",
            timedelta(minutes=1),
            lambda j: autopay.run_autopay(j.uow, j.clock, runtime=j.runtime),
        ),
    ]
