"""Dunning: what happens to an invoice left unpaid, step by step.

Each seller (provider or reseller) has a schedule of days after the due date
(defaults: reminder at +1, second reminder at +7, suspension at +14,
termination at +45; credit hold after 7 days over the limit; each step
optional). The ``dunning`` job runs every step that has fallen due exactly
once per invoice and step (the ``dunning_steps`` primary key):

- reminders raise ``invoice.overdue`` (the notification template exists) and
  retry a failed auto-pay charge (attempt 2, 3) through
  ``pba_server.payments.autopay.autopay_invoice``;
- suspension suspends the customer's active subscriptions from that seller
  (status ``suspended``, ``suspended_reason`` ``dunning``) through
  provisioning's ``request_action(..., "suspend")``;
- termination cancels them and asks provisioning to delete the services.

Once nothing of the account is overdue any more (a payment, a credit note),
its subscriptions suspended by dunning are resumed: at once from payment
recording (billing's settlement hook), and by the job for any other path.

Credit hold: an account whose balance has been over its credit limit for the
seller's ``credit_hold_days`` is on hold (orders refuse new orders:
:func:`on_credit_hold`) until it is back within its limit.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any, Literal

from sqlalchemy import Engine, and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.billing.allocation import SETTLEMENT_HOOKS
from pba_server.billing.models import AccountBalance, Invoice
from pba_server.core import audit
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import ValidationError
from pba_server.core.operations import operation
from pba_server.core.runtime import Runtime
from pba_server.dunning.models import CreditHold, DunningSchedule, DunningStep
from pba_server.dunning.types import DunningScheduleInfo
from pba_server.subscriptions.models import Subscription

log = logging.getLogger("pba.dunning")

BILLING = frozenset({"billing"})
READERS = frozenset({"billing", "sales", "support", "readonly"})
SELLERS = ("provider", "reseller")
MAX_DAYS = 365
Step = Literal["reminder", "second_reminder", "suspend", "terminate"]
STEPS: tuple[Step, ...] = ("reminder", "second_reminder", "suspend", "terminate")
AUTOPAY_ATTEMPT = {"reminder": 2, "second_reminder": 3}


@dataclass(frozen=True)
class Schedule:
    reminder_days: int | None = 1
    second_reminder_days: int | None = 7
    suspend_days: int | None = 14
    terminate_days: int | None = 45
    credit_hold_days: int | None = 7

    def days(self, step: str) -> int | None:
        return getattr(self, f"{step}_days")  # type: ignore[no-any-return]


DEFAULT = Schedule()


def _schedule_of(session: Session, owner_id: int) -> Schedule | None:
    row = session.get(DunningSchedule, owner_id)
    if row is None:
        return None
    return Schedule(
        row.reminder_days,
        row.second_reminder_days,
        row.suspend_days,
        row.terminate_days,
        row.credit_hold_days,
    )


def _info(owner_id: int, s: Schedule | None) -> DunningScheduleInfo:
    eff = s or DEFAULT
    return DunningScheduleInfo(
        owner_id=owner_id,
        is_default=s is None,
        reminder_days=eff.reminder_days,
        second_reminder_days=eff.second_reminder_days,
        suspend_days=eff.suspend_days,
        terminate_days=eff.terminate_days,
        credit_hold_days=eff.credit_hold_days,
    )


def _owner(ctx: CallContext, owner_id: int | None) -> Account:
    acc = get_account(ctx, owner_id if owner_id is not None else ctx.principal.account_id)
    if acc.type not in SELLERS:
        raise ValidationError("owner_id", "only the provider and resellers have a dunning schedule")
    return acc


@operation("DunningScheduleSet", roles=BILLING, mutating=True)
def dunning_schedule_set(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    reminder_days: int | None = None,
    second_reminder_days: int | None = None,
    suspend_days: int | None = None,
    terminate_days: int | None = None,
    credit_hold_days: int | None = None,
) -> DunningScheduleInfo:
    """Set a seller's dunning schedule (default: the caller's account): for
    each step the days after an invoice's due date it happens (0 to 365); an
    omitted step is off. Steps: a reminder (invoice.overdue, and a retry of a
    failed auto-pay charge), a second reminder, suspension of the customer's
    services, termination (cancellation) of its subscriptions; and
    ``credit_hold_days``: days over the credit limit before new orders are
    refused. Replaces the whole schedule (sellers without one use the
    defaults: 1, 7, 14, 45 and 7)."""
    owner = _owner(ctx, owner_id)
    values = {
        "reminder_days": reminder_days,
        "second_reminder_days": second_reminder_days,
        "suspend_days": suspend_days,
        "terminate_days": terminate_days,
        "credit_hold_days": credit_hold_days,
    }
    for name, v in values.items():
        if v is not None and not 0 <= v <= MAX_DAYS:
            raise ValidationError(name, f"must be between 0 and {MAX_DAYS} days")
    order = [(n, values[f"{n}_days"]) for n in STEPS if values[f"{n}_days"] is not None]
    for (a, da), (b, db) in itertools.pairwise(order):
        assert da is not None and db is not None
        if db < da:
            raise ValidationError(f"{b}_days", f"comes before the {a.replace('_', ' ')} step")
    row = ctx.session.get(DunningSchedule, owner.id, with_for_update=True)
    before = _info(owner.id, _schedule_of(ctx.session, owner.id)).__dict__ if row else {}
    if row is None:
        row = DunningSchedule(owner_id=owner.id)
        ctx.session.add(row)
    for name, v in values.items():
        setattr(row, name, v)
    row.updated_at = ctx.now()
    ctx.session.flush()
    info = _info(owner.id, _schedule_of(ctx.session, owner.id))
    audit.record(ctx, "dunning_schedule", owner.id, owner.path, audit.diff(before, info.__dict__))
    return info


@operation("DunningScheduleGet", roles=READERS)
def dunning_schedule_get(ctx: CallContext, *, owner_id: int | None = None) -> DunningScheduleInfo:
    """A seller's dunning schedule (default: the caller's account's); the
    defaults when it has none (``is_default``)."""
    owner = _owner(ctx, owner_id)
    return _info(owner.id, _schedule_of(ctx.session, owner.id))


# ---------------------------------------------------------------- provisioning seams


def _request_action(ctx: CallContext, subscription_id: int, action: str) -> None:
    """Ask provisioning to act on the subscription's services (after commit).
    Imported lazily: provisioning is another feature's module."""
    try:
        from pba_server.provisioning.api import request_action
    except ImportError:  # provisioning not installed: the status change stands alone
        log.warning("no provisioning: %s of subscription %s not sent", action, subscription_id)
        return
    request_action(ctx, subscription_id, action, reason="dunning")  # type: ignore[arg-type]


def _retry_autopay(
    engine: Engine, clock: Clock, invoice_id: int, attempt: int, runtime: Runtime
) -> str:
    try:
        from pba_server.payments.autopay import autopay_invoice  # type: ignore[import-not-found]
    except ImportError:
        return "skipped"
    try:
        return str(autopay_invoice(engine, clock, invoice_id, attempt=attempt, runtime=runtime))
    except Exception:  # a gateway failure must not stop the other steps
        log.exception("auto-pay retry of invoice %s failed", invoice_id)
        return "failed"


# ---------------------------------------------------------------- subscription changes


def _sub_event(ctx: CallContext, sub: Subscription, path: str, type_: str) -> None:
    events.emit(
        ctx,
        type_,
        ("subscription", sub.id),
        {"subscription_id": sub.id, "plan_id": sub.plan_id, "status": sub.status},
        account_id=sub.account_id,
        account_path=path,
    )


def _subs(
    ctx: CallContext, account_id: int, vendor_id: int, statuses: tuple[str, ...]
) -> list[Subscription]:
    """The customer's subscriptions in ``statuses``: all of them, since a
    customer buys only from its seller, the invoice's issuer (``vendor_id``
    is not compared: for a basic reseller's customer it may name the plan's
    owner)."""
    return list(
        ctx.session.scalars(
            select(Subscription)
            .where(
                Subscription.account_id == account_id,
                Subscription.status.in_(statuses),
            )
            .order_by(Subscription.id)
            .with_for_update()
        )
    )


def _suspend(ctx: CallContext, inv: Invoice, path: str) -> str:
    done = []
    for sub in _subs(ctx, inv.account_id, inv.issuer_id, ("active",)):
        sub.status = "suspended"
        sub.suspended_reason = "dunning"
        sub.updated_at = ctx.now()
        ctx.session.flush()
        _request_action(ctx, sub.id, "suspend")
        _sub_event(ctx, sub, path, "subscription.suspended")
        audit.record(
            ctx, "subscription", sub.id, path, {"suspended": f"dunning: invoice {inv.number}"}
        )
        done.append(sub.id)
    return f"suspended {done}"


def _terminate(ctx: CallContext, inv: Invoice, path: str) -> str:
    done = []
    for sub in _subs(ctx, inv.account_id, inv.issuer_id, ("active", "suspended")):
        sub.status = "cancelled"
        sub.next_billing_date = None
        sub.cancel_reason = f"dunning: invoice {inv.number} unpaid"
        sub.updated_at = ctx.now()
        ctx.session.flush()
        _request_action(ctx, sub.id, "delete")
        _sub_event(ctx, sub, path, "subscription.cancelled")
        audit.record(
            ctx, "subscription", sub.id, path, {"terminated": f"dunning: invoice {inv.number}"}
        )
        done.append(sub.id)
    return f"terminated {done}"


def _overdue_count(session: Session, account_id: int, today: date) -> int:
    return len(
        session.execute(
            select(Invoice.id).where(
                Invoice.account_id == account_id,
                Invoice.status.in_(("issued", "partially_paid")),
                Invoice.due_date < today,
            )
        ).all()
    )


def resume_if_settled(ctx: CallContext, acc: Account) -> list[int]:
    """Resume the account's subscriptions suspended by dunning when nothing of
    it is overdue any more. Billing calls it after every settlement."""
    today = ctx.now().astimezone(UTC).date()
    if _overdue_count(ctx.session, acc.id, today):
        return []
    subs = list(
        ctx.session.scalars(
            select(Subscription)
            .where(
                Subscription.account_id == acc.id,
                Subscription.status == "suspended",
                Subscription.suspended_reason == "dunning",
            )
            .order_by(Subscription.id)
            .with_for_update()
        )
    )
    for sub in subs:
        sub.status = "active"
        sub.suspended_reason = None
        sub.updated_at = ctx.now()
        ctx.session.flush()
        _request_action(ctx, sub.id, "resume")
        _sub_event(ctx, sub, acc.path, "subscription.resumed")
        audit.record(ctx, "subscription", sub.id, acc.path, {"resumed": "overdue invoices paid"})
    return [s.id for s in subs]


def _settled(ctx: CallContext, acc: Account) -> None:
    resume_if_settled(ctx, acc)


SETTLEMENT_HOOKS.append(_settled)


# ---------------------------------------------------------------- the job


def _ins(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _claim_step(session: Session, invoice_id: int, step: str, clock: Clock) -> bool:
    got = session.execute(
        _ins(session)(DunningStep)
        .values(invoice_id=invoice_id, step=step, done_at=clock.now(), outcome="")
        .on_conflict_do_nothing()
        .returning(DunningStep.step)
    ).first()
    return got is not None


def run_dunning(engine: Engine, clock: Clock, runtime: Runtime) -> str:
    """Every dunning step due today, once per invoice and step; resumptions;
    credit holds. Each invoice's steps commit on their own; auto-pay retries
    run after the commit that claimed them."""
    today = clock.now().astimezone(UTC).date()
    with UnitOfWork(engine) as uow:
        rows = uow.session.execute(
            select(Invoice.id, Invoice.issuer_id, Invoice.due_date)
            .where(Invoice.status.in_(("issued", "partially_paid")), Invoice.due_date < today)
            .order_by(Invoice.id)
        ).all()
        done = {
            (i, s)
            for i, s in uow.session.execute(
                select(DunningStep.invoice_id, DunningStep.step).where(
                    DunningStep.invoice_id.in_([r.id for r in rows] or [0])
                )
            )
        }
        schedules: dict[int, Schedule] = {}
        for iid in {r.issuer_id for r in rows}:
            schedules[iid] = _schedule_of(uow.session, iid) or DEFAULT
    counts = {s: 0 for s in STEPS}
    retries: list[tuple[int, int]] = []
    for inv_id, issuer_id, due in rows:
        assert due is not None
        overdue = (today - due).days
        sched = schedules[issuer_id]
        due_steps = [
            s
            for s in STEPS
            if sched.days(s) is not None and overdue >= sched.days(s) and (inv_id, s) not in done  # type: ignore[operator]
        ]
        if not due_steps:
            continue
        with UnitOfWork(engine) as uow:
            inv = uow.session.get(Invoice, inv_id, with_for_update=True, populate_existing=True)
            if inv is None or inv.status not in ("issued", "partially_paid"):
                continue
            issuer = uow.session.get(Account, inv.issuer_id)
            acc = uow.session.get(Account, inv.account_id)
            assert issuer is not None and acc is not None
            ctx = system_context(
                uow,
                clock,
                account_id=issuer.id,
                account_path=issuer.path,
                operation="dunning",
                runtime=runtime,
            )
            for step in due_steps:
                if not _claim_step(uow.session, inv.id, step, clock):
                    continue  # another process did it
                outcome = _act(ctx, inv, acc, step, overdue)
                uow.session.execute(
                    update(DunningStep)
                    .where(and_(DunningStep.invoice_id == inv.id, DunningStep.step == step))
                    .values(outcome=outcome[:255])
                )
                counts[step] += 1
                if step in AUTOPAY_ATTEMPT:
                    retries.append((inv.id, AUTOPAY_ATTEMPT[step]))
            uow.commit()
    for inv_id, attempt in retries:
        _retry_autopay(engine, clock, inv_id, attempt, runtime)
    resumed = _resume_all(engine, clock, runtime)
    held = _credit_holds(engine, clock)
    return (
        f"{counts['reminder']} reminder(s), {counts['second_reminder']} second reminder(s), "
        f"{counts['suspend']} suspension(s), {counts['terminate']} termination(s), "
        f"{resumed} subscription(s) resumed, {held} account(s) on credit hold"
    )


def _act(ctx: CallContext, inv: Invoice, acc: Account, step: str, overdue: int) -> str:
    if step in ("reminder", "second_reminder"):
        events.emit(
            ctx,
            "invoice.overdue",
            ("invoice", inv.id),
            {
                "invoice_id": inv.id,
                "number": inv.number,
                "total": inv.total,
                "currency": inv.currency,
                "due_date": inv.due_date,
                "days_overdue": overdue,
            },
            account_id=acc.id,
            account_path=acc.path,
        )
        audit.record(ctx, "invoice", inv.id, acc.path, {"dunning": step, "days_overdue": overdue})
        return "invoice.overdue raised"
    if step == "suspend":
        return _suspend(ctx, inv, acc.path)
    return _terminate(ctx, inv, acc.path)


def _resume_all(engine: Engine, clock: Clock, runtime: Runtime) -> int:
    """Safety net for settlements that bypass the hook (credit notes, voids)."""
    with UnitOfWork(engine) as uow:
        accounts = list(
            uow.session.scalars(
                select(Account)
                .where(
                    Account.id.in_(
                        select(Subscription.account_id).where(
                            Subscription.status == "suspended",
                            Subscription.suspended_reason == "dunning",
                        )
                    )
                )
                .order_by(Account.id)
            )
        )
        n = 0
        for acc in accounts:
            ctx = system_context(
                uow,
                clock,
                account_id=acc.id,
                account_path=acc.path,
                operation="dunning",
                runtime=runtime,
            )
            n += len(resume_if_settled(ctx, acc))
        uow.commit()
        return n


def _credit_holds(engine: Engine, clock: Clock) -> int:
    """Start, promote and clear credit holds from the cached balances."""
    from pba_server.billing.run import sellers_of

    today = clock.now().astimezone(UTC).date()
    with UnitOfWork(engine) as uow:
        s = uow.session
        over = {
            a: since
            for a, since in s.execute(
                select(Account.id, CreditHold.over_since)
                .join(AccountBalance, AccountBalance.account_id == Account.id)
                .outerjoin(CreditHold, CreditHold.account_id == Account.id)
                .where(
                    AccountBalance.currency == Account.currency,
                    AccountBalance.receivable + AccountBalance.credit > Account.credit_limit,
                    Account.type.not_in(("provider",)),
                )
            )
        }
        s.execute(delete(CreditHold).where(CreditHold.account_id.not_in(list(over) or [0])))
        sellers = sellers_of(s, over)
        held = 0
        for aid, since in over.items():
            seller = sellers[aid]
            sched = (_schedule_of(s, seller.id) if seller else None) or DEFAULT
            start = since or today
            on_hold = (
                sched.credit_hold_days is not None
                and (today - start).days >= sched.credit_hold_days
            )
            held += on_hold
            if since is None:
                s.add(
                    CreditHold(
                        account_id=aid, over_since=today, on_hold=on_hold, updated_at=clock.now()
                    )
                )
            else:
                row = s.get(CreditHold, aid)
                assert row is not None
                if row.on_hold != on_hold:
                    row.on_hold = on_hold
                    row.updated_at = clock.now()
        uow.commit()
        return held


def on_credit_hold(session: Session, account_id: int) -> bool:
    """Whether new orders of the account are refused: it has been over its
    credit limit for its seller's credit_hold_days (the dunning job decides)
    and still is (a payment lifts the hold at once)."""
    row = session.get(CreditHold, account_id)
    if row is None or not row.on_hold:
        return False
    acc = session.get(Account, account_id)
    if acc is None:
        return False
    bal = session.get(AccountBalance, (account_id, acc.currency))
    owed = (bal.receivable + bal.credit) if bal else 0
    return bool(owed > acc.credit_limit)
