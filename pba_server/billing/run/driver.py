"""The billing run's driver: batches of due customers claimed by key range
(``FOR NO KEY UPDATE SKIP LOCKED``), each read, planned and written in one
transaction (a conflict rolls it back and does it again); ``workers``
processes side by side (:mod:`.processes`); the resellers' wholesale
invoices at the end (:mod:`.wholesale`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, date
from typing import Any

from sqlalchemy import Engine, exists, func, select
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account
from pba_server.billing.models import PaymentTerms
from pba_server.billing.ports import RenewalOrders
from pba_server.billing.run import load, processes
from pba_server.billing.run import plan as planning
from pba_server.billing.run.data import RunData
from pba_server.billing.run.issue import apply_prepaid_credit, write_batch
from pba_server.billing.run.sql import in_ids, transaction
from pba_server.billing.run.summary import ZERO, RunSummary
from pba_server.billing.run.wholesale import invoice_wholesale
from pba_server.billing.run.write import BatchConflict
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.secrets import SecretBox
from pba_server.subscriptions.models import Subscription

log = logging.getLogger("pba.billing_run")

DEFAULT_BATCH = 500
JOB_NAME = "billing-run"  # declared in billing/jobs.py


def _due_accounts(as_of: date, after: int, limit: int, subtree: str | None, lock: bool) -> Any:
    due = exists().where(
        Subscription.account_id == Account.id,
        Subscription.status == "active",
        Subscription.next_billing_date <= as_of,
    )
    q = select(Account.id).where(Account.id > after, due)
    if subtree is not None:
        q = q.where(Account.path.startswith(subtree, autoescape=True))
    q = q.order_by(Account.id).limit(limit)
    if lock:
        q = q.with_for_update(skip_locked=True, key_share=True)
    return q


def run_batches(
    engine: Engine,
    clock: Clock,
    *,
    as_of: date,
    dry_run: bool = False,
    account_id: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[RunSummary], None] | None = None,
    stop_after: int | None = None,
    session: Session | None = None,
    secrets: SecretBox | None = None,
    renewals: RenewalOrders,
) -> RunSummary:
    """One worker's share of the run: claim due customers by key range and
    bill them, one transaction per batch. Several workers (threads,
    processes, servers) may run this at once."""
    summary = RunSummary(as_of=as_of, dry_run=dry_run)
    data = RunData()
    subtree = None
    if account_id is not None:
        with transaction(engine, session) as (s, _commit):
            path = s.scalar(select(Account.path).where(Account.id == account_id))
        if path is None:
            from pba_server.core.errors import NotFound

            raise NotFound(f"account {account_id} not found")
        subtree = str(path)
    after = 0
    conflicts = 0
    while True:
        try:
            part = _one_batch(
                engine,
                clock,
                session,
                data,
                as_of,
                after,
                batch_size,
                subtree,
                dry_run,
                secrets,
                renewals,
            )
        except BatchConflict:
            conflicts += 1
            if session is not None or conflicts > 5:
                raise
            log.info("batch after account %s: a subscription changed meanwhile; again", after)
            continue
        if part is None:
            break
        after = part[0]
        summary.add(part[1])
        if progress:
            progress(summary)
        if stop_after is not None and summary.batches >= stop_after:
            break
    return summary


def _one_batch(
    engine: Engine,
    clock: Clock,
    session: Session | None,
    data: RunData,
    as_of: date,
    after: int,
    batch_size: int,
    subtree: str | None,
    dry_run: bool,
    secrets: SecretBox | None,
    renewals: RenewalOrders,
) -> tuple[int, RunSummary] | None:
    """Claim and bill the next batch of due customers after account ``after``;
    None when there is none left. Returns (last account id, summary)."""
    with transaction(engine, session) as (s, commit):
        ids = list(s.scalars(_due_accounts(as_of, after, batch_size, subtree, not dry_run)))
        if not ids:
            return None
        now = clock.now()
        t0 = time.perf_counter()
        part = RunSummary(as_of=as_of, dry_run=dry_run, batches=1)
        batch = load.read_batch(s, data, ids, as_of, now, renewals)
        plan = planning.plan_batch(data, batch)
        data.forget_customers()
        part.add(plan.summary)
        due_days = dict(
            s.execute(
                select(PaymentTerms.account_id, PaymentTerms.net_days).where(
                    in_ids(s, PaymentTerms.account_id, ids)
                )
            ).all()
        )
        if dry_run:
            part.staged = [row for _idx, row in plan.wholesale]
            part.drafts = list(plan.invoices.values())
            part.invoices = len(part.drafts)
            part.lines = sum(len(d.lines) for d in part.drafts)
            for d in part.drafts:
                part.totals[d.currency] = part.totals.get(d.currency, ZERO) + d.total
        else:
            t1 = time.perf_counter()
            part.rows_written = write_batch(s, plan, due_days, now, part)
            apply_prepaid_credit(s, clock, list(plan.invoices.values()), secrets)
            t2 = time.perf_counter()
            commit()
            log.debug(
                "batch of %d accounts: plan %.3f s, write %.3f s, commit %.3f s",
                len(ids),
                t1 - t0,
                t2 - t1,
                time.perf_counter() - t2,
            )
    return ids[-1], part


def run(
    engine: Engine,
    clock: Clock,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    account_id: int | None = None,
    workers: int = 1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[RunSummary], None] | None = None,
    session: Session | None = None,
    exclude_wholesale: int | None = None,
    secrets: SecretBox | None = None,
    renewals: RenewalOrders,
) -> RunSummary:
    """The billing run as of ``as_of`` (default: today, UTC): the due
    subscriptions in batches (``workers`` threads claiming batches side by
    side), then the resellers' wholesale invoices. ``renewals`` (the app's
    ``RenewalOrders`` port) tells which subscriptions a renewal order bills."""
    started = time.monotonic()
    day = as_of or clock.now().astimezone(UTC).date()
    total = RunSummary(as_of=day, dry_run=dry_run)
    if workers <= 1 or dry_run or session is not None:
        total.add(
            run_batches(
                engine,
                clock,
                as_of=day,
                dry_run=dry_run,
                account_id=account_id,
                batch_size=batch_size,
                progress=progress,
                session=session,
                secrets=secrets,
                renewals=renewals,
            )
        )
    else:
        total.add(
            _run_processes(
                engine, clock, day, account_id, workers, batch_size, progress, secrets, renewals
            )
        )
    subtree = None
    if account_id is not None:
        with transaction(engine, session) as (s, _commit):
            subtree = s.scalar(select(Account.path).where(Account.id == account_id))
    wholesale = invoice_wholesale(
        engine,
        clock,
        dry_run=dry_run,
        session=session,
        subtree=subtree,
        exclude_id=exclude_wholesale,
        staged=total.staged,
        secrets=secrets,
    )
    total.invoices += wholesale.invoices
    total.lines += wholesale.lines
    total.rows_written += wholesale.rows_written
    for c, v in wholesale.totals.items():
        total.totals[c] = total.totals.get(c, ZERO) + v
    total.drafts.extend(wholesale.drafts)
    total.seconds = time.monotonic() - started
    return total


def due_count(engine: Engine, as_of: date, account_id: int | None = None) -> int:
    """How many subscriptions are due by ``as_of`` (for progress)."""
    with UnitOfWork(engine) as uow:
        q = (
            select(func.count())
            .select_from(Subscription)
            .where(Subscription.status == "active", Subscription.next_billing_date <= as_of)
        )
        if account_id is not None:
            path = uow.session.scalar(select(Account.path).where(Account.id == account_id))
            sub_acc = select(Account.id).where(Account.path.startswith(str(path), autoescape=True))
            q = q.where(Subscription.account_id.in_(sub_acc))
        return int(uow.session.scalar(q) or 0)


def _run_processes(
    engine: Engine,
    clock: Clock,
    as_of: date,
    account_id: int | None,
    workers: int,
    batch: int,
    progress: Callable[[RunSummary], None] | None,
    secrets: SecretBox | None,
    renewals: RenewalOrders,
) -> RunSummary:
    """``workers`` processes claiming batches side by side (SKIP LOCKED); a
    worker that dies is replaced and its batch billed by the others. Each
    inherits ``work`` through ``fork``: the clock, the secret box and the
    ``renewals`` port with it, nothing pickled."""
    url = engine.url.render_as_string(hide_password=False)
    start_due = due_count(engine, as_of, account_id)
    engine.dispose()  # no pooled connection crosses the fork

    def work(e: Engine) -> RunSummary:
        return run_batches(
            e,
            clock,
            as_of=as_of,
            account_id=account_id,
            batch_size=batch,
            secrets=secrets,
            renewals=renewals,
        )

    def tick(overall: RunSummary, running: bool) -> None:
        if progress:
            shown = RunSummary(as_of=as_of, dry_run=False)
            shown.add(overall)
            if running:
                shown.subscriptions = max(
                    start_due - due_count(engine, as_of, account_id), overall.subscriptions
                )
            progress(shown)

    return processes.run_processes(url, workers, work, RunSummary(as_of=as_of, dry_run=False), tick)
