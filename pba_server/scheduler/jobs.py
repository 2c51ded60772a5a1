"""Periodic work that runs exactly once per period across all server processes.

APScheduler only fires a tick in every process (its job stores must never be
shared, so it cannot decide who runs). The decision is the database's: a job
is a row in ``scheduled_jobs``; a tick claims each due row with
``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's write lock does
the same for the embedded case), moves ``next_run_at`` one interval on and
commits, then runs the job. Other processes skip a locked row and find it no
longer due. A process that dies mid-job loses that run; the next period runs
as usual, so jobs must be safe to run late and again (purges, and later the
billing run, are).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pba_server.billing import run as billing_run
from pba_server.core import idempotency
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.models import LoginFailure, UsedNonce
from pba_server.domains import jobs as domains_jobs
from pba_server.dunning import service as dunning
from pba_server.events import retention as events_retention
from pba_server.events import runtime as events_runtime
from pba_server.payments import autopay
from pba_server.payments import service as payments
from pba_server.provisioning import runtime as provisioning
from pba_server.scheduler.models import ScheduledJob

log = logging.getLogger("pba.jobs")


@dataclass(frozen=True)
class Job:
    name: str
    interval: timedelta
    run: Callable[[UnitOfWork, Clock], str]  # returns a one-line summary


def _run_orders(uow: UnitOfWork, clock: Clock) -> str:
    from pba_server.orders import engine as orders_engine

    n = orders_engine.run_orders(uow.session.get_bind(), clock)  # type: ignore[arg-type]
    return f"{n} order step(s) run"


def _subscriptions_lifecycle(uow: UnitOfWork, clock: Clock) -> str:
    from pba_server.subscriptions.service import lifecycle

    return lifecycle(uow, clock)


def _purge_idempotency_keys(uow: UnitOfWork, clock: Clock) -> str:
    n = idempotency.purge(uow.session, clock.now())
    return f"{n} idempotency key(s) older than {idempotency.retention_days()} day(s) removed"


def _purge_nonces(uow: UnitOfWork, clock: Clock) -> str:
    result = uow.session.execute(
        delete(UsedNonce).where(UsedNonce.seen_at < clock.now() - timedelta(minutes=10))
    )
    return f"{getattr(result, 'rowcount', 0)} WS-Security nonce(s) removed"


def _purge_login_failures(uow: UnitOfWork, clock: Clock) -> str:
    # the longest lockout is 15 minutes; a day-old count no longer slows anyone
    result = uow.session.execute(
        delete(LoginFailure).where(LoginFailure.last_failure_at < clock.now() - timedelta(days=1))
    )
    return f"{getattr(result, 'rowcount', 0)} stale login-failure count(s) removed"


JOBS: dict[str, Job] = {
    j.name: j
    for j in (
        Job("purge-idempotency-keys", timedelta(hours=1), _purge_idempotency_keys),
        Job("purge-nonces", timedelta(minutes=10), _purge_nonces),
        Job("purge-login-failures", timedelta(hours=6), _purge_login_failures),
        Job("payments-reconcile", timedelta(minutes=5), payments.reconcile),
        Job("domains-expiry", timedelta(days=1), domains_jobs.expiry),
        Job("registrar-balance", timedelta(days=1), domains_jobs.registrar_balance),
        Job("provisioning-run", timedelta(seconds=30), provisioning.job),
        Job("orders-run", timedelta(minutes=1), _run_orders),
        Job("subscriptions-lifecycle", timedelta(hours=1), _subscriptions_lifecycle),
        Job("payments-autopay", timedelta(minutes=1), autopay.run_autopay),
        Job("purge-events", timedelta(hours=6), events_retention.purge),
        Job("billing-run", timedelta(days=1), billing_run.job),
        Job("dunning", timedelta(hours=1), dunning.job),
    )
}


def _ensure_rows(engine: Engine, jobs: dict[str, Job], clock: Clock) -> None:
    """Insert a row for each new job (first run due now); concurrent inserts are fine."""
    with UnitOfWork(engine) as uow:
        known = set(uow.session.scalars(select(ScheduledJob.name)))
        missing = [name for name in jobs if name not in known]
        if not missing:
            return
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(ScheduledJob).on_conflict_do_nothing(index_elements=["name"])
        uow.session.execute(
            stmt, [{"name": n, "next_run_at": clock.now(), "runs": 0} for n in missing]
        )
        uow.commit()


def _claim(engine: Engine, job: Job, clock: Clock) -> bool:
    with UnitOfWork(engine) as uow:
        now = clock.now()
        row = uow.session.scalar(
            select(ScheduledJob)
            .where(ScheduledJob.name == job.name, ScheduledJob.next_run_at <= now)
            .with_for_update(skip_locked=True)
        )
        if row is None:
            return False  # not due, or another process is claiming it right now
        row.next_run_at = now + job.interval
        row.last_started_at = now
        row.last_status = "running"
        row.runs = (row.runs or 0) + 1
        uow.commit()
        return True


def run_due(engine: Engine, clock: Clock, jobs: dict[str, Job] | None = None) -> list[str]:
    """Run every due job this process manages to claim; returns their names."""
    jobs = jobs or JOBS
    _ensure_rows(engine, jobs, clock)
    ran = []
    for job in jobs.values():
        if not _claim(engine, job, clock):
            continue
        status, error, summary = "ok", None, ""
        try:
            with UnitOfWork(engine) as uow:
                summary = job.run(uow, clock)
                uow.commit()
        except Exception as exc:
            log.exception("job %s failed", job.name)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        with UnitOfWork(engine) as uow:
            row = uow.session.get(ScheduledJob, job.name)
            if row is not None:
                row.last_finished_at = clock.now()
                row.last_status = status
                row.last_error = error
                uow.commit()
        log.info("job %s: %s%s", job.name, status, f" ({summary})" if summary else "")
        ran.append(job.name)
    return ran


class Ticker:
    """Fires :func:`run_due` every ``seconds`` on APScheduler's own thread."""

    def __init__(self, engine: Engine, clock: Clock, seconds: float = 30.0) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.engine = engine
        self.clock = clock
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.add_job(
            self.tick,
            "interval",
            seconds=seconds,
            max_instances=1,
            coalesce=True,
            id="pba-tick",
        )

    def tick(self) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            run_due(self.engine, self.clock)
        except Exception:
            log.exception("scheduler tick failed")
        finally:
            self._lock.release()

    def start(self) -> None:
        self.scheduler.start()
        # event delivery has its own thread: woken after each commit that
        # raised events, and every few seconds for retries that fall due
        events_runtime.start(self.engine)
        provisioning.start(self.engine, self.clock)
        from pba_server.orders import engine as orders_engine

        orders_engine.start(self.engine, self.clock)  # order workflows, woken after commit

    def stop(self) -> None:
        events_runtime.stop(self.engine)
        provisioning.stop(self.engine)
        from pba_server.orders import engine as orders_engine

        orders_engine.stop()
        self.scheduler.shutdown(wait=False)
