"""The durable workflow runner.

Placing an order commits it with ``status = running``, its first step in
``current_step`` and ``next_run_at = now``, and kicks the runner after the
commit. :func:`run_orders` (the background thread, the ``orders-run`` job and
tests) claims one due order at a time with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (SQLite: ``BEGIN IMMEDIATE`` serialises writers), runs its current
step in that transaction, moves it to the next step and commits: each step is
its own transaction, so a process that dies loses at most the step it was
running, which runs again (every step is idempotent).

Steps that call out:

- ``charge`` commits a lease (``next_run_at`` :data:`STEP_LEASE` on, renewed
  while the gateway call runs) before the payments code commits its pending
  charge and calls the gateway; the charge's idempotency key is
  ``order:<id>:charge`` (attempt 1) or ``order:<id>:charge:<n>``, so a rerun
  finds the same charge and never charges twice. A charge left pending
  (gateway did not answer) is asked again later; the payments reconciliation
  settles it. A charge whose request died (its lease expired: a crash before
  or during the gateway call) is settled by the step itself at once. A charge
  the gateway never saw (``not_found``: no money moved) is not a decline: the
  step charges again with a new attempt (a new key). ``not_found`` counts
  only when it can be trusted (the call was never sent, or was sent at least
  the gateway's ``lookup_settles_seconds`` ago: see payments.reconcile);
  until then the charge stays pending and the step checks again every
  :data:`RECOVER_RETRY`, never charging with a new key meanwhile.
- ``provision`` creates the subscription (sales) or applies the change, asks
  the provisioning engine for a bundle per subscription and waits; the
  engine's bundle hook (:func:`on_bundle`) records the outcome and makes the
  order due again. The runner also polls ``bundle_state`` every few minutes in
  case a hook was missed.
- ``rollback`` refunds the charge (key ``order:<id>:refund``) and credits the
  invoice, and deletes what was provisioned.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Engine, func, select

from pba_server.accounts.models import Account
from pba_server.billing import ledger
from pba_server.billing.credit_notes import credit_note_create
from pba_server.billing.invoices import invoice_create, invoice_void
from pba_server.billing.ledger import Leg
from pba_server.billing.models import Invoice
from pba_server.billing.types import InvoiceLineInput
from pba_server.core import audit
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import PaymentDeclined, PbaError
from pba_server.core.leases import LEASE, LeaseKeeper
from pba_server.core.runtime import Runtime
from pba_server.core.secrets import SecretBox
from pba_server.events import emit
from pba_server.orders import provisioner as prov
from pba_server.orders.models import Order, OrderHistory, OrderLine
from pba_server.orders.pricing import Charge
from pba_server.orders.workflow import TERMINAL, Flow
from pba_server.payments.models import GatewayPayment, PluginInstance, StoredPaymentMethod
from pba_server.provisioning.registry import BUNDLE_HOOKS, BundleOutcome
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods
from pba_server.subscriptions.store import new_subscription
from pba_server.subscriptions.types import SUBSCRIPTION_STATES, SubscriptionStatus

log = logging.getLogger("pba.orders")

# the charge step's lease on its order while it is at the gateway: renewed
# every few seconds (core/leases), so a runner that died frees the order
# within STEP_LEASE
STEP_LEASE = LEASE
PENDING_RETRY = timedelta(minutes=2)  # the gateway did not answer: ask again
RECOVER_RETRY = timedelta(seconds=15)  # the charge lost its request: settle soon
NEW_ATTEMPTS = 5  # charges the gateway never saw, retried with a new key
BUNDLE_POLL = timedelta(minutes=5)
GIVE_UP_AFTER = 3  # a step refused this many times by a business rule rejects the order
ACTOR = "system:workflow"


# ---------------------------------------------------------------- helpers


def today(ctx: CallContext) -> date:
    return ctx.now().astimezone(UTC).date()


def order_ctx(
    uow: UnitOfWork,
    clock: Clock,
    order: Order,
    *,
    secrets: SecretBox,
    runtime: Runtime | None = None,
) -> CallContext:
    vendor = uow.session.get(Account, order.vendor_id)
    assert vendor is not None
    return system_context(
        uow,
        clock,
        account_id=vendor.id,
        account_path=vendor.path,
        operation="order-workflow",
        secrets=secrets,
        runtime=runtime,
    )


def runtime_ctx(uow: UnitOfWork, runtime: Runtime, order: Order) -> CallContext:
    return order_ctx(uow, runtime.clock, order, secrets=runtime.secrets, runtime=runtime)


def buyer_of(ctx: CallContext, order: Order) -> Account:
    acc = ctx.session.get(Account, order.account_id)
    assert acc is not None
    return acc  # type: ignore[no-any-return]


def history(
    ctx: CallContext,
    order: Order,
    action: str,
    result: str | None = None,
    note: str | None = None,
    *,
    actor: str | None = None,
    step: str | None = None,
) -> None:
    ctx.session.add(
        OrderHistory(
            order_id=order.id,
            at=ctx.now(),
            actor=(actor or ctx.principal.login)[:128],
            step=step or order.current_step,
            action=action,
            result=result,
            note=note[:4000] if note else None,
        )
    )


def order_event(ctx: CallContext, order: Order, type: str, **extra: Any) -> None:
    buyer = buyer_of(ctx, order)
    emit(
        ctx,
        type,
        ("order", order.id),
        {
            "order_id": order.id,
            "order_type": order.type,
            "status": order.status,
            "total": order.total,
            "currency": order.currency,
            **extra,
        },
        account_id=buyer.id,
        account_path=buyer.path,
    )


def sub_event(ctx: CallContext, sub: Subscription, type: str, **extra: Any) -> None:
    acc = ctx.session.get(Account, sub.account_id)
    assert acc is not None
    emit(
        ctx,
        type,
        ("subscription", sub.id),
        {"subscription_id": sub.id, "plan_id": sub.plan_id, "status": sub.status, **extra},
        account_id=acc.id,
        account_path=acc.path,
    )


def lines_of(ctx: CallContext, order: Order) -> list[OrderLine]:
    return list(
        ctx.session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
        )
    )


def flow_of(order: Order) -> Flow:
    return Flow.from_json(order.workflow)


# ---------------------------------------------------------------- kicking the runner


class _Runner:
    """The workflow thread of one app (one engine): runs :func:`run_orders`
    when kicked after a commit, and every ``idle_seconds``."""

    def __init__(self, engine: Engine, runtime: Runtime, idle_seconds: float) -> None:
        self.engine, self.runtime, self.idle_seconds = engine, runtime, idle_seconds
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pba-orders", daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.idle_seconds)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                run_orders(self.engine, self.runtime)
            except Exception:
                log.exception("order runner pass failed")


_runners: dict[int, _Runner] = {}  # by id(engine): each app its own thread
_runners_lock = threading.Lock()


def kick(engine: Any) -> None:
    """Wake the engine's runner thread (after a commit that made an order due)."""
    r = _runners.get(id(engine))
    if r is not None:
        r.wake.set()


def kick_after_commit(uow: UnitOfWork) -> None:
    engine = uow.session.get_bind()
    uow.after_commit(lambda: kick(engine))


def start(engine: Engine, runtime: Runtime, idle_seconds: float = 10.0) -> None:
    """Run :func:`run_orders` on a thread, woken by :func:`kick` (the server does this)."""
    with _runners_lock:
        if id(engine) in _runners:
            return
        # each thread has its own stop flag: a start right after a stop must not
        # revive the stopped thread (it would keep running on its old engine)
        r = _runners[id(engine)] = _Runner(engine, runtime, idle_seconds)
    r.thread.start()


def stop(engine: Engine) -> None:
    """Stop the engine's runner thread (it finishes the step it is running)."""
    with _runners_lock:
        r = _runners.pop(id(engine), None)
    if r is not None:
        r.stopping.set()
        r.wake.set()


# ---------------------------------------------------------------- the runner


def run_orders(engine: Engine, runtime: Runtime, *, limit: int = 1000) -> int:
    """Run due order steps, one transaction each; returns how many ran."""
    clock = runtime.clock
    ran = 0
    while ran < limit:
        failed: tuple[int, str, Exception] | None = None
        with UnitOfWork(engine) as uow:
            order = uow.session.scalar(
                select(Order)
                .where(Order.status == "running", Order.next_run_at <= clock.now())
                .order_by(Order.next_run_at, Order.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if order is None:
                return ran
            order_id, step = order.id, order.current_step
            ctx = runtime_ctx(uow, runtime, order)
            try:
                run_step(ctx, order)
                uow.commit()
            except Exception as exc:
                uow.rollback()
                failed = (order_id, step, exc)
        ran += 1
        if failed is not None:
            log.warning(
                "order %s step %s failed: %s", failed[0], failed[1], failed[2], exc_info=failed[2]
            )
            _step_crashed(engine, runtime, failed[0], failed[2])
    return ran


def _step_crashed(engine: Engine, runtime: Runtime, order_id: int, exc: Exception) -> None:
    """A step failed: note it in the history and try again later, backing off.
    When a business rule keeps refusing the step (account closed, plan
    withdrawn...) :data:`GIVE_UP_AFTER` times and nothing was charged or
    applied yet, the order is rejected with that fault's message."""
    with UnitOfWork(engine) as uow:
        order = uow.session.get(Order, order_id, with_for_update=True)
        if order is None or order.status != "running":
            return
        order.attempts += 1
        clock = runtime.clock
        ctx = runtime_ctx(uow, runtime, order)
        history(ctx, order, "error", None, f"{type(exc).__name__}: {exc}"[:500], actor=ACTOR)
        if (
            isinstance(exc, PbaError)
            and order.attempts >= GIVE_UP_AFTER
            and order.charge_id is None
            and not order.applied
        ):
            order.reason = f"{exc.code}: {exc.message}"[:4000]
            order.current_step = _reject_step(order)
            _reject(ctx, order)
        else:
            delay = min(timedelta(minutes=2 ** min(order.attempts, 6)), timedelta(hours=1))
            order.next_run_at = clock.now() + delay
        uow.commit()


def _reject_step(order: Order) -> str:
    for s in flow_of(order).steps:
        if s.action == "reject":
            return s.name
    return order.current_step


Action = Callable[[CallContext, Order], str | None]


def run_step(ctx: CallContext, order: Order) -> None:
    """Run the order's current step; on a result, move to the next step."""
    flow = flow_of(order)
    step = flow.step(order.current_step)
    result = ACTIONS[step.action](ctx, order)
    if result is None:
        return  # waiting (the action set status / next_run_at)
    order.updated_at = ctx.now()
    if step.action in TERMINAL:
        order.next_run_at = None
        return
    nxt = step.next(result)
    assert nxt is not None  # validated
    history(ctx, order, step.action, result, actor=ACTOR, step=step.name)
    order.current_step = nxt
    order.attempts = 0
    order.status = "running"
    order.next_run_at = ctx.now()


def advance_manual(ctx: CallContext, order: Order, result: str, note: str | None) -> None:
    """A person's decision on a ``wait_approval`` step."""
    flow = flow_of(order)
    step = flow.step(order.current_step)
    history(ctx, order, step.action, result, note)
    nxt = step.next(result)
    assert nxt is not None
    order.current_step = nxt
    order.attempts = 0
    order.status = "running"
    order.next_run_at = ctx.now()
    order.updated_at = ctx.now()
    kick_after_commit(ctx.uow)


# ---------------------------------------------------------------- actions


def _fraud_screen(ctx: CallContext, order: Order) -> str | None:
    from pba_server.orders import fraud

    screening = fraud.screen(ctx, order)
    if screening is None:
        return "pass"
    order.fraud_score = screening.score
    order.fraud_reasons = json.dumps(list(screening.reasons))
    if screening.verdict == "fraud" and not order.reason:
        order.reason = "fraud screening: " + "; ".join(screening.reasons)
    return screening.verdict


def _invoice(ctx: CallContext, order: Order) -> str | None:
    if order.invoice_id is not None or order.type == "payment":
        return "ok"
    charges: list[InvoiceLineInput] = []
    for line in lines_of(ctx, order):
        for d in json.loads(line.charges):
            c = Charge.from_json(d)
            if c.quantity * c.unit_price <= 0:
                continue
            charges.append(
                InvoiceLineInput(
                    description=c.description,
                    unit_price=c.unit_price,
                    quantity=c.quantity,
                    discount=c.discount,
                    tax_inclusive=c.tax_inclusive,
                    period_start=c.period_start,
                    period_end=c.period_end,
                    link_type="order",
                    link_id=str(order.id),
                )
            )
    if not charges:
        return "ok"
    inv = invoice_create(
        ctx,
        account_id=order.account_id,
        lines=charges,
        issue=True,
        notes=f"Order {order.id}",
        apply_credit=True,
        autopay=False,  # the workflow's charge step charges it, not auto-pay
    )
    order.invoice_id = inv.id
    history(ctx, order, "invoice", "created", f"invoice {inv.number} {inv.total} {inv.currency}")
    return "ok"


def _to_charge(ctx: CallContext, order: Order) -> Decimal:
    if order.type == "payment":
        return order.total
    if order.invoice_id is None:
        return Decimal(0)
    inv = ctx.session.get(Invoice, order.invoice_id, populate_existing=True)
    assert inv is not None
    if inv.status not in ("issued", "partially_paid"):
        return Decimal(0)
    return inv.total - inv.paid_amount - inv.credited_amount  # type: ignore[no-any-return]


def charge_key(order_id: int, attempt: int) -> str:
    """The idempotency key of the order's ``attempt``-th charge."""
    return f"order:{order_id}:charge" if attempt == 1 else f"order:{order_id}:charge:{attempt}"


def _order_charge(ctx: CallContext, order: Order, attempt: int) -> GatewayPayment | None:
    return ctx.session.scalar(  # type: ignore[no-any-return]
        select(GatewayPayment)
        .where(
            GatewayPayment.account_id == order.account_id,
            GatewayPayment.client_key == charge_key(order.id, attempt),
        )
        .execution_options(populate_existing=True)
    )


def _unseen(charge: GatewayPayment | None) -> bool:
    """A charge the gateway never saw: no money moved, charge again."""
    from pba_server.payments.reconcile import NOT_FOUND

    return charge is not None and charge.status == "declined" and charge.decline_code == NOT_FOUND


def _current_attempt(ctx: CallContext, order: Order) -> tuple[int, GatewayPayment | None]:
    """The order's charge attempt to make or replay (the first whose charge
    the gateway saw, or not made yet), and its charge if made. A pending
    charge whose request died (lease expired) is settled first."""
    from pba_server.payments.reconcile import settle_charge

    attempt = 1
    while True:
        charge = _order_charge(ctx, order, attempt)
        pending = charge is not None and charge.status == "pending"
        if pending and ctx.runtime is not None:
            assert charge is not None
            if settle_charge(ctx.uow, ctx.runtime, charge.id) not in (None, "pending"):
                history(ctx, order, "charge", charge.status, f"charge {charge.id} recovered")
        if not _unseen(charge):
            return attempt, charge
        attempt += 1


def _lease(ctx: CallContext, order_id: int, step: str) -> LeaseKeeper:
    """Renews the order's lease (its ``next_run_at``) while the step is out."""
    return LeaseKeeper(
        ctx.session.get_bind(),
        ctx.clock,
        Order,
        order_id,
        Order.status == "running",
        Order.current_step == step,
        column="next_run_at",
    )


def _charge(ctx: CallContext, order: Order) -> str | None:
    from pba_server.payments import charges as payments

    if order.on_account or order.payment_method_id is None:
        return "paid"  # on account: the invoice stays open on the account's terms
    if order.charge_id is None and _to_charge(ctx, order) <= 0:
        return "paid"  # nothing left (zero total, or settled from prepaid credit)
    attempt, _seen = _current_attempt(ctx, order)
    if attempt > NEW_ATTEMPTS:  # the gateway keeps losing our requests
        order.reason = "payment declined: not_found"
        return "declined"
    key = charge_key(order.id, attempt)
    # lease: no other runner takes this step while we are at the gateway
    order_id, step = order.id, order.current_step
    order.attempts += 1
    order.next_run_at = ctx.now() + STEP_LEASE
    ctx.uow.commit()
    reason: str | None = None
    info = None
    try:
        with _lease(ctx, order_id, step):
            info = payments.payment_charge(
                ctx,
                payment_method_id=order.payment_method_id,
                idempotency_key=key,
                invoice_id=order.invoice_id,
                amount=order.total if order.type == "payment" else None,
            )
    except PaymentDeclined as exc:
        reason = exc.message
    except PbaError as exc:
        reason = f"{exc.code}: {exc.message}"
    # back in a fresh transaction: lock the order again and check nothing moved it
    order = ctx.session.get(Order, order_id, with_for_update=True, populate_existing=True)
    assert order is not None
    if order.status != "running" or order.current_step != step:
        return None
    charge = _order_charge(ctx, order, attempt)
    if charge is not None:
        order.charge_id = charge.id
    if info is not None and info.status == "captured":
        history(
            ctx, order, "charge", "captured", f"charge {info.id}: {info.amount} {info.currency}"
        )
        return "paid"
    if _unseen(charge):  # no money moved: the next run charges again, new key
        order.next_run_at = ctx.now()
        history(ctx, order, "charge", "not_found", "the gateway never saw it; charging again")
        return None
    if reason is not None or (charge is not None and charge.status in ("declined", "error")):
        why = reason or (charge.message if charge is not None else None) or "declined"
        order.reason = f"payment declined: {why}"[:4000]
        return "declined"
    if charge is not None and charge.lease_until is not None:
        # its request is at the gateway (or died there): settled soon
        order.next_run_at = ctx.now() + RECOVER_RETRY
        history(ctx, order, "charge", "pending", "the charge is in flight; will check again")
        return None
    # pending: the gateway did not answer; ask again later (reconciliation settles it)
    order.next_run_at = ctx.now() + PENDING_RETRY
    history(ctx, order, "charge", "pending", "the gateway did not answer; will check again")
    return None


def _wait_approval(ctx: CallContext, order: Order) -> str | None:
    if order.status != "waiting":
        order.status = "waiting"
        order.next_run_at = None
        history(ctx, order, "wait_approval", None, "waiting for approval", actor=ACTOR)
    return None


def _notify(ctx: CallContext, order: Order) -> str | None:
    order_event(ctx, order, "order.notification", step=order.current_step)
    return "ok"


def _complete(ctx: CallContext, order: Order) -> str | None:
    if not order.applied:
        apply_effect(ctx, order)
    order.status = "completed"
    order.next_run_at = None
    history(ctx, order, "complete", "completed", actor=ACTOR)
    order_event(ctx, order, "order.completed")
    return "completed"


def _reject(ctx: CallContext, order: Order) -> str | None:
    charge = ctx.session.get(GatewayPayment, order.charge_id) if order.charge_id else None
    if order.invoice_id is not None and (charge is None or charge.status != "captured"):
        _cancel_invoice(ctx, order, order.reason or "order rejected")
    order.status = "rejected"
    order.next_run_at = None
    order.reason = order.reason or "rejected by the workflow"
    history(ctx, order, "reject", "rejected", order.reason, actor=ACTOR)
    order_event(ctx, order, "order.rejected", reason=order.reason)
    return "rejected"


def _cancel_invoice(ctx: CallContext, order: Order, why: str) -> None:
    """Void the order's invoice, or credit it in full when something was paid
    on it (that part becomes the account's prepaid credit)."""
    inv = ctx.session.get(Invoice, order.invoice_id, populate_existing=True)
    if inv is None or inv.status in ("void", "draft"):
        return
    if inv.paid_amount or inv.credited_amount:
        if inv.total - inv.credited_amount > 0:
            credit_note_create(ctx, invoice_id=inv.id, reason=why[:255])
    else:
        invoice_void(ctx, invoice_id=inv.id, reason=why[:255])


# ---------------------------------------------------------------- provisioning


def _provision(ctx: CallContext, order: Order) -> str | None:
    lines = lines_of(ctx, order)
    if not order.applied:
        deferred = _deferred_until(ctx, order, lines)
        if deferred is not None:
            if order.status != "waiting" or order.next_run_at is None:
                history(ctx, order, "provision", None, f"scheduled for {deferred}", actor=ACTOR)
            order.status = "running"
            order.next_run_at = datetime.combine(deferred, time(0), tzinfo=UTC)
            return None
        apply_effect(ctx, order)
        _request_bundles(ctx, order, lines)
    states = []
    for line in lines:
        if line.bundle_id is None:
            continue
        if line.provisioned == "running":
            state, why = prov.current(ctx).bundle_state(ctx.session, line.bundle_id)
            if state in ("done", "failed"):
                line.provisioned = state
                if state == "failed" and why:
                    order.reason = f"provisioning failed: {why}"[:4000]
        states.append(line.provisioned)
    if "running" in states:
        order.next_run_at = ctx.now() + BUNDLE_POLL
        return None
    if "failed" in states:
        order.reason = order.reason or "provisioning failed"
        return "failed"
    return "done"


def _deferred_until(ctx: CallContext, order: Order, lines: list[OrderLine]) -> date | None:
    for line in lines:
        when = json.loads(line.detail).get("when")
        if (
            when == "period_end"
            and line.subscription_id is not None
            and line.kind != "cancellation"
        ):
            sub = ctx.session.get(Subscription, line.subscription_id)
            if sub is not None and today(ctx) < sub.period_end:
                return sub.period_end  # type: ignore[no-any-return]
    return None


def _request_bundles(ctx: CallContext, order: Order, lines: list[OrderLine]) -> None:
    p = prov.current(ctx)
    for line in lines:
        if line.subscription_id is None or line.bundle_id is not None:
            continue
        sub_id = line.subscription_id
        if line.kind == "sales":
            bundle = p.provision_subscription(ctx, sub_id, order_id=order.id)
        elif line.kind in ("upgrade", "downgrade", "resource"):
            bundle = p.request_action(ctx, sub_id, "change", order_id=order.id)
        elif line.kind == "renewal":
            sub = ctx.session.get(Subscription, sub_id)
            until = sub.period_end if sub is not None else None
            bundle = p.request_action(ctx, sub_id, "prolong", until=until, order_id=order.id)
        elif line.kind == "cancellation":
            detail = json.loads(line.detail)
            if detail.get("when") == "period_end":
                continue  # cancelled by the lifecycle job at the period end
            bundle = p.request_action(
                ctx, sub_id, "delete", order_id=order.id, reason=detail.get("reason") or ""
            )
        else:
            continue
        line.bundle_id = bundle
        line.provisioned = "running" if bundle is not None else None


def on_bundle(ctx: CallContext, outcome: BundleOutcome) -> None:
    """BUNDLE_HOOKS: a bundle finished; make its order due again."""
    if outcome.order_id is None:
        return
    order = ctx.session.get(Order, outcome.order_id, with_for_update=True)
    if order is None:
        return
    line = ctx.session.scalar(
        select(OrderLine).where(
            OrderLine.order_id == order.id, OrderLine.bundle_id == outcome.bundle_id
        )
    )
    if line is not None:
        line.provisioned = outcome.state
    if outcome.state == "failed" and outcome.reason:
        order.reason = f"provisioning failed: {outcome.reason}"[:4000]
    history(
        ctx, order, "provision", outcome.state, outcome.reason, actor=ACTOR, step=order.current_step
    )
    if order.status == "running":
        order.next_run_at = ctx.now()
        kick_after_commit(ctx.uow)


if on_bundle not in BUNDLE_HOOKS:
    BUNDLE_HOOKS.append(on_bundle)


# ---------------------------------------------------------------- effects


def apply_effect(ctx: CallContext, order: Order) -> None:
    """What the order does to subscriptions: once (``order.applied``)."""
    if order.applied:
        return
    for line in lines_of(ctx, order):
        detail = json.loads(line.detail)
        EFFECTS[line.kind](ctx, order, line, detail)
    order.applied = True


def _credit(ctx: CallContext, order: Order, amount: Decimal, memo: str) -> None:
    """Give ``amount`` to the buyer as prepaid credit (like BalanceAdjust)."""
    if amount <= 0:
        return
    buyer = buyer_of(ctx, order)
    ledger.post(
        ctx,
        kind="adjustment",
        account_id=buyer.id,
        currency=buyer.currency,
        memo=memo[:255],
        legs=[
            Leg("customer_credit", buyer.id, -amount),
            Leg("adjustments", order.vendor_id, amount),
        ],
        document_type="adjustment",
    )
    history(ctx, order, "credit", "credited", f"{amount} {buyer.currency}: {memo}"[:4000])


def _effect_sales(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    if line.subscription_id is not None:
        return
    trial = d.get("trial_ends_on")
    sub = new_subscription(
        ctx.session,
        ctx.clock,
        account_id=order.account_id,
        vendor_id=order.vendor_id,
        plan_version_id=line.plan_version_id or 0,
        period_count=line.period_count or 1,
        period_unit=line.period_unit or "month",
        start=today(ctx),
        status="trial" if trial else "active",
        trial_ends_on=date.fromisoformat(trial) if trial else None,
        parameters=d.get("parameters") or {},
        bought={int(k): Decimal(v) for k, v in (d.get("bought") or {}).items()},
        promotion_id=order.promotion_id,
        promotion_cycles=d.get("promotion_cycles"),
    )
    line.subscription_id = sub.id
    if order.subscription_id is None:
        order.subscription_id = sub.id
    sub_event(ctx, sub, "subscription.created")
    buyer = buyer_of(ctx, order)
    audit.record(ctx, "subscription", sub.id, buyer.path, {"created": {"order": order.id}})


def _effect_change(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    from pba_server.catalog.models import PlanRateRow

    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    before = {"plan_id": sub.plan_id, "plan_version_id": sub.plan_version_id}
    sub.plan_id = line.plan_id or sub.plan_id
    sub.plan_version_id = line.plan_version_id or sub.plan_version_id
    rates = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id == sub.plan_version_id)
        )
    }
    bought = {int(k): Decimal(v) for k, v in (d.get("bought") or {}).items()}
    old = {
        r.resource_id: r
        for r in ctx.session.scalars(
            select(SubscriptionResource).where(SubscriptionResource.subscription_id == sub.id)
        )
    }
    for rid, r in old.items():
        if rid not in rates:
            ctx.session.delete(r)
    for rid, rate in rates.items():
        r = old.get(rid)
        if r is None:
            r = SubscriptionResource(subscription_id=sub.id, resource_id=rid)
            ctx.session.add(r)
        r.included = rate.included
        r.bought = bought.get(rid, Decimal(0))
        r.unit_recurring_price = rate.unit_recurring_price
        r.overage_price = rate.overage_price
    sub.updated_at = ctx.now()
    ctx.session.flush()
    _credit(ctx, order, line_credit(line), f"order {order.id}: unused part of the old plan")
    sub_event(ctx, sub, "subscription.changed", changes={**before, "to_plan_id": sub.plan_id})


def line_credit(line: OrderLine) -> Decimal:
    return Decimal(json.loads(line.detail).get("credit") or "0")


def _effect_resource(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    for rid, qty in (d.get("add") or {}).items():
        r = ctx.session.get(
            SubscriptionResource, (line.subscription_id, int(rid)), with_for_update=True
        )
        if r is not None:
            r.bought += Decimal(qty)
    sub = ctx.session.get(Subscription, line.subscription_id)
    assert sub is not None
    sub.updated_at = ctx.now()
    _credit(ctx, order, line_credit(line), f"order {order.id}: resource change")
    sub_event(ctx, sub, "subscription.changed", changes={"resources_added": d.get("add")})


def _effect_renewal(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    start = date.fromisoformat(d["from"])
    if sub.period_end != start:
        # renewed meanwhile (the billing run read the subscription before this
        # order was placed, or another renewal order won): the period is
        # billed already, so what this order billed for it goes back as credit
        _credit(
            ctx,
            order,
            line.amount,
            f"order {order.id}: the period from {start.isoformat()} was renewed meanwhile",
        )
        return
    sub.period_start = start
    sub.period_end = add_periods(
        start, sub.period_count, sub.period_unit, anchor_day=sub.anchor_day
    )
    if sub.next_billing_date is not None and sub.next_billing_date <= start:
        sub.next_billing_date = sub.period_end
    if line.plan_version_id and line.plan_version_id != sub.plan_version_id:
        # renewed at a migrated version (renewal_version): its rates from now
        # on, the units bought kept (as the billing run's renewal does)
        from pba_server.catalog.models import PlanRateRow

        sub.plan_version_id = line.plan_version_id
        old = {
            r.resource_id: r
            for r in ctx.session.scalars(
                select(SubscriptionResource).where(SubscriptionResource.subscription_id == sub.id)
            )
        }
        rates = ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id == sub.plan_version_id)
        ).all()
        keep = {rate.resource_id for rate in rates}
        for rid, r in old.items():
            if rid not in keep:
                ctx.session.delete(r)
        for rate in rates:
            r = old.get(rate.resource_id)
            if r is None:
                r = SubscriptionResource(
                    subscription_id=sub.id, resource_id=rate.resource_id, bought=Decimal(0)
                )
                ctx.session.add(r)
            r.included = rate.included
            r.unit_recurring_price = rate.unit_recurring_price
            r.overage_price = rate.overage_price
    if sub.status == "trial":
        sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "convert"))
    elif sub.status == "expired":
        sub.status = "active"  # a manual renewal brings it back
    sub.updated_at = ctx.now()
    sub_event(ctx, sub, "subscription.changed", changes={"period_end": sub.period_end})


def _effect_cancellation(
    ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]
) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    reason = d.get("reason") or None
    if d.get("when") == "period_end":
        sub.cancel_on = sub.period_end
        sub.cancel_reason = reason
        sub.auto_renew = False
        sub.next_billing_date = None
        sub.updated_at = ctx.now()
        sub_event(ctx, sub, "subscription.changed", changes={"cancel_on": sub.cancel_on})
        return
    cancel_subscription(ctx, sub, reason)
    _credit(ctx, order, line_credit(line), f"order {order.id}: refund on cancellation")


def cancel_subscription(ctx: CallContext, sub: Subscription, reason: str | None) -> None:
    sub.status = cast(SubscriptionStatus, SUBSCRIPTION_STATES.next(sub.status, "cancel"))
    sub.cancel_reason = reason
    sub.cancel_on = today(ctx)
    sub.next_billing_date = None
    sub.updated_at = ctx.now()
    sub_event(ctx, sub, "subscription.cancelled")


def _effect_transfer(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
    assert sub is not None
    sub.account_id = int(d["to_account_id"])
    sub.updated_at = ctx.now()
    # its services and domains follow it (else the old owner would still see
    # and manage them, and the new one would not)
    from pba_server.domains.service import move_domains
    from pba_server.provisioning.api import move_services

    move_services(ctx, sub.id, sub.account_id)
    move_domains(ctx, sub.id, sub.account_id)
    sub_event(ctx, sub, "subscription.changed", changes={"account_id": sub.account_id})


def _effect_none(ctx: CallContext, order: Order, line: OrderLine, d: dict[str, Any]) -> None:
    return None


EFFECTS: dict[str, Callable[[CallContext, Order, OrderLine, dict[str, Any]], None]] = {
    "sales": _effect_sales,
    "upgrade": _effect_change,
    "downgrade": _effect_change,
    "resource": _effect_resource,
    "renewal": _effect_renewal,
    "cancellation": _effect_cancellation,
    "transfer": _effect_transfer,
    "payment": _effect_none,
}


# ---------------------------------------------------------------- rollback


def _rollback(ctx: CallContext, order: Order) -> str | None:
    """Undo a paid order whose provisioning failed: refund the charge, credit
    the invoice, cancel the subscriptions it created (their bundles were rolled
    back by provisioning) and delete services of lines that did succeed."""
    from pba_server.payments import charges as payments

    why = order.reason or "provisioning failed"
    order_id, step = order.id, order.current_step
    if order.charge_id is not None:
        charge = ctx.session.get(GatewayPayment, order.charge_id, populate_existing=True)
        if charge is not None and charge.status == "captured" and charge.amount > charge.refunded:
            order.next_run_at = ctx.now() + STEP_LEASE
            ctx.uow.commit()
            try:
                with _lease(ctx, order_id, step):
                    payments.payment_refund(
                        ctx,
                        charge_id=charge.id,
                        amount=charge.amount - charge.refunded,
                        reason=f"order {order_id}: {why}"[:255],
                        idempotency_key=f"order:{order_id}:refund",
                    )
            except PbaError as exc:
                log.warning("order %s: refund refused (%s); crediting instead", order_id, exc)
            order = ctx.session.get(Order, order_id, with_for_update=True, populate_existing=True)
            assert order is not None
            if order.status != "running" or order.current_step != step:
                return None
            history(ctx, order, "rollback", "refunded", f"charge {order.charge_id}")
    if order.invoice_id is not None:
        _cancel_invoice(ctx, order, f"order {order.id} rolled back"[:255])
    p = prov.current(ctx)
    for line in lines_of(ctx, order):
        if line.kind != "sales" or line.subscription_id is None:
            continue
        sub = ctx.session.get(Subscription, line.subscription_id, with_for_update=True)
        if sub is None or sub.status == "cancelled":
            continue
        if line.provisioned == "done":
            p.request_action(ctx, sub.id, "delete", order_id=order.id, reason="order rolled back")
        cancel_subscription(ctx, sub, "provisioning failed")
    return "ok"


ACTIONS: dict[str, Action] = {
    "fraud_screen": _fraud_screen,
    "invoice": _invoice,
    "charge": _charge,
    "wait_approval": _wait_approval,
    "provision": _provision,
    "notify": _notify,
    "complete": _complete,
    "reject": _reject,
    "rollback": _rollback,
}


def pending_on_account(ctx: CallContext, account_id: int) -> Decimal:
    """Total of the account's on-account orders not invoiced yet (for check_credit)."""
    total = ctx.session.scalar(
        select(func.coalesce(func.sum(Order.total), 0)).where(
            Order.account_id == account_id,
            Order.on_account.is_(True),
            Order.status.in_(("running", "waiting")),
            Order.invoice_id.is_(None),
        )
    )
    return Decimal(total or 0)


def default_method(ctx: CallContext, account_id: int) -> StoredPaymentMethod | None:
    return ctx.session.scalar(  # type: ignore[no-any-return]
        select(StoredPaymentMethod).where(
            StoredPaymentMethod.account_id == account_id,
            StoredPaymentMethod.status == "active",
            StoredPaymentMethod.is_default.is_(True),
        )
    )


__all__ = [
    "PluginInstance",
    "kick",
    "kick_after_commit",
    "on_bundle",
    "run_orders",
    "start",
    "stop",
]
