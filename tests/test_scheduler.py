"""Periodic jobs run once per period, however many processes tick."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from pba_server.core.db import UnitOfWork
from pba_server.scheduler.jobs import Job, run_due
from pba_server.scheduler.models import ScheduledJob


def test_job_runs_once_per_period_across_concurrent_tickers(env):
    calls = []
    lock = threading.Lock()

    def work(job):
        with lock:
            calls.append(job.clock.now())
        return "counted"

    jobs = {"count": Job("count", timedelta(hours=1), work)}
    engine, clock, runtime = env.app.engine, env.clock, env.app.runtime
    barrier = threading.Barrier(6)

    def tick():
        barrier.wait()
        run_due(engine, runtime, jobs)

    threads = [threading.Thread(target=tick) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert run_due(engine, runtime, jobs) == []  # not due again yet
    clock.freeze(clock.now() + timedelta(hours=1, seconds=1))
    assert run_due(engine, runtime, jobs) == ["count"]
    assert len(calls) == 2
    with UnitOfWork(engine) as uow:
        row = uow.session.scalar(select(ScheduledJob).where(ScheduledJob.name == "count"))
        assert row is not None and row.runs == 2 and row.last_status == "ok"


def test_failing_job_is_recorded_and_runs_next_period(env):
    def boom(job):
        raise RuntimeError("upstream down")

    jobs = {"boom": Job("boom", timedelta(minutes=5), boom)}
    assert run_due(env.app.engine, env.app.runtime, jobs) == ["boom"]
    with UnitOfWork(env.app.engine) as uow:
        row = uow.session.get(ScheduledJob, "boom")
        assert row.last_status == "failed" and "upstream down" in row.last_error


def test_purge_jobs_forget_old_idempotency_keys(api, env):
    admin = api.soap()
    admin.AccountCreate(type="customer_personal", name="A", idempotency_key="old-key")
    start = env.clock.now()
    # kept for idempotency_retention_days (7): a day later the key still replays
    env.clock.freeze(start + timedelta(hours=25))
    assert "purge-idempotency-keys" in run_due(env.app.engine, env.app.runtime, env.app.jobs)
    env.clock.frozen = False
    admin.AccountCreate(type="customer_personal", name="A", idempotency_key="old-key")
    assert admin.AccountList().total == 1
    env.clock.freeze(start + timedelta(days=7, hours=1))
    assert "purge-idempotency-keys" in run_due(env.app.engine, env.app.runtime, env.app.jobs)
    env.clock.frozen = False
    # the key is forgotten: the same key now creates a second account
    admin.AccountCreate(type="customer_personal", name="A", idempotency_key="old-key")
    assert admin.AccountList().total == 2


def test_purge_forgets_day_old_login_failures(env):
    from pba_server.core.models import LoginFailure

    with UnitOfWork(env.app.engine) as uow:
        now = env.clock.now()
        uow.session.add_all(
            [
                LoginFailure(
                    login="old",
                    address="1.2.3.4",
                    failures=9,
                    last_failure_at=now - timedelta(days=2),
                ),
                LoginFailure(login="new", address="1.2.3.4", failures=9, last_failure_at=now),
            ]
        )
        uow.commit()
    assert "purge-login-failures" in run_due(env.app.engine, env.app.runtime, env.app.jobs)
    with UnitOfWork(env.app.engine) as uow:
        assert [r.login for r in uow.session.scalars(select(LoginFailure))] == ["new"]
