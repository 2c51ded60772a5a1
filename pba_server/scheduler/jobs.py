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
from collections.abc import Mapping

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.jobs import JobContext, JobSpec
from pba_server.core.runtime import Runtime
from pba_server.events import runtime as events_runtime
from pba_server.provisioning import runtime as provisioning
from pba_server.scheduler.models import ScheduledJob

log = logging.getLogger("pba.jobs")

Job = JobSpec  # the scheduler's name for a feature's job spec


def _ensure_rows(engine: Engine, jobs: Mapping[str, Job], clock: Clock) -> None:
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


def run_due(engine: Engine, runtime: Runtime, jobs: Mapping[str, Job]) -> list[str]:
    """Run every due job of ``jobs`` (``App.jobs``: what the features declare)
    this process manages to claim; returns their names."""
    clock = runtime.clock
    _ensure_rows(engine, jobs, clock)
    ran = []
    for job in jobs.values():
        if not _claim(engine, job, clock):
            continue
        status, error, summary = "ok", None, ""
        try:
            with UnitOfWork(engine) as uow:
                summary = job.run(JobContext(uow=uow, clock=clock, runtime=runtime))
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

    def __init__(
        self, engine: Engine, runtime: Runtime, jobs: Mapping[str, Job], seconds: float = 30.0
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.engine = engine
        self.runtime = runtime
        self.clock = runtime.clock
        self.jobs = jobs
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
            run_due(self.engine, self.runtime, self.jobs)
        except Exception:
            log.exception("scheduler tick failed")
        finally:
            self._lock.release()

    def start(self) -> None:
        self.scheduler.start()
        # event delivery has its own thread: woken after each commit that
        # raised events, and every few seconds for retries that fall due
        events_runtime.start(self.engine)
        provisioning.start(self.engine, self.runtime)
        from pba_server.orders import engine as orders_engine

        orders_engine.start(self.engine, self.runtime)  # order workflows, woken after commit

    def stop(self) -> None:
        events_runtime.stop(self.engine)
        provisioning.stop(self.engine)
        from pba_server.orders import engine as orders_engine

        orders_engine.stop(self.engine)
        self.scheduler.shutdown(wait=False)
