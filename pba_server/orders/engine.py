"""The durable workflow runner.

Placing an order commits it with ``status = running``, its first step in
``current_step`` and ``next_run_at = now``, and kicks the runner after the
commit. :func:`run_orders` (the background thread of :mod:`.runner`, the
``orders-run`` job and tests) claims one due order at a time with ``SELECT
... FOR UPDATE SKIP LOCKED`` (SQLite: ``BEGIN IMMEDIATE`` serialises
writers), runs its current step in that transaction, moves it to the next
step and commits: each step is its own transaction, so a process that dies
loses at most the step it was running, which runs again (every step is
idempotent).

The steps (:data:`ACTIONS`) live in their rooms: :mod:`.steps` (fraud
screening, invoice, approval, notify, complete, reject), :mod:`.charging`
(the ``charge`` step, which calls the gateway under a lease), :mod:`.bundles`
(``provision``, which waits for the provisioning engine's bundles),
:mod:`.rollback` (refund, credit, delete what was provisioned); what an
order does to subscriptions is :mod:`.effects`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, select

from pba_server.core.context import CallContext
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import PbaError
from pba_server.core.runtime import Runtime
from pba_server.orders import bundles, charging, rollback, runner, steps
from pba_server.orders.models import Order
from pba_server.orders.records import ACTOR, flow_of, history, runtime_ctx
from pba_server.orders.runner import kick_after_commit
from pba_server.orders.workflow import TERMINAL
from pba_server.sdk import PluginError
from pba_server.sdk import guard as plugincall

log = logging.getLogger("pba.orders")

GIVE_UP_AFTER = 3  # a step refused this many times by a business rule rejects the order

Action = Callable[[CallContext, Order], str | None]

ACTIONS: dict[str, Action] = {
    "fraud_screen": steps.fraud_screen,
    "invoice": steps.invoice,
    "charge": charging.charge,
    "wait_approval": steps.wait_approval,
    "provision": bundles.provision,
    "notify": steps.notify,
    "complete": steps.complete,
    "reject": steps.reject,
    "rollback": rollback.rollback,
}


def start(engine: Engine, runtime: Runtime, idle_seconds: float = 10.0) -> None:
    """Run :func:`run_orders` on a thread, woken by :func:`runner.kick` (the server does this)."""
    runner.start(engine, runtime, idle_seconds, run_orders)


def stop(engine: Engine) -> None:
    """Stop the engine's runner thread (it finishes the step it is running)."""
    runner.stop(engine)


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
        # the order's history is the tenant's: an unexpected error is a generic
        # text with a correlation id (the detail and traceback in the log)
        note = (
            f"{type(exc).__name__}: {exc}"
            if isinstance(exc, PbaError | PluginError)  # ours, or masked by the guard
            else plugincall.unexpected(log, f"order {order_id}: the step", exc)
        )
        history(ctx, order, "error", None, note[:500], actor=ACTOR)
        if (
            isinstance(exc, PbaError)
            and order.attempts >= GIVE_UP_AFTER
            and order.charge_id is None
            and not order.applied
        ):
            order.reason = f"{exc.code}: {exc.message}"[:4000]
            order.current_step = _reject_step(order)
            steps.reject(ctx, order)
        else:
            delay = min(timedelta(minutes=2 ** min(order.attempts, 6)), timedelta(hours=1))
            order.next_run_at = clock.now() + delay
        uow.commit()


def _reject_step(order: Order) -> str:
    for s in flow_of(order).steps:
        if s.action == "reject":
            return s.name
    return order.current_step


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
