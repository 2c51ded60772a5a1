"""Jobs that keep the core's own tables small: idempotency keys, WS-Security
nonces and login-failure counts past their use."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from pba_server.config import Settings
from pba_server.core import idempotency
from pba_server.core.jobs import JobContext, JobSpec
from pba_server.core.models import LoginFailure, UsedNonce


def purge_idempotency_keys(job: JobContext) -> str:
    days = job.runtime.settings.idempotency_retention_days
    n = idempotency.purge(job.session, job.clock.now(), days=days)
    return f"{n} idempotency key(s) older than {days} day(s) removed"


def purge_nonces(job: JobContext) -> str:
    result = job.session.execute(
        delete(UsedNonce).where(UsedNonce.seen_at < job.clock.now() - timedelta(minutes=10))
    )
    return f"{getattr(result, 'rowcount', 0)} WS-Security nonce(s) removed"


def purge_login_failures(job: JobContext) -> str:
    # the longest lockout is 15 minutes; a day-old count no longer slows anyone
    result = job.session.execute(
        delete(LoginFailure).where(
            LoginFailure.last_failure_at < job.clock.now() - timedelta(days=1)
        )
    )
    return f"{getattr(result, 'rowcount', 0)} stale login-failure count(s) removed"


def jobs(settings: Settings) -> list[JobSpec]:
    return [
        JobSpec("purge-idempotency-keys", timedelta(hours=1), purge_idempotency_keys),
        JobSpec("purge-nonces", timedelta(minutes=10), purge_nonces),
        JobSpec("purge-login-failures", timedelta(hours=6), purge_login_failures),
    ]
