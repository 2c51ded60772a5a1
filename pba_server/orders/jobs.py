"""Periodic work of the orders feature: workflow steps that fell due (the
workflow thread also runs them when woken after a commit)."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobContext, JobSpec


def run_orders(job: JobContext) -> str:
    from pba_server.orders import engine as orders_engine

    n = orders_engine.run_orders(job.engine, job.runtime)
    return f"{n} order step(s) run"


def jobs(settings: Settings) -> list[JobSpec]:
    return [JobSpec("orders-run", timedelta(minutes=1), run_orders)]
