"""The ``provision`` step: it creates the subscription (sales) or applies the
change (:mod:`.effects`), asks the provisioning engine for a bundle per
subscription and waits; the engine's bundle hook (:func:`on_bundle`, in
``BUNDLE_HOOKS`` once this module is imported) records the outcome and makes
the order due again. The step also polls ``bundle_state`` every
:data:`BUNDLE_POLL` in case a hook was missed. A change due at the period end
waits until then."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select

from pba_server.core.context import CallContext
from pba_server.orders import provisioner as prov
from pba_server.orders.effects import apply_effect
from pba_server.orders.models import Order, OrderLine
from pba_server.orders.records import ACTOR, history, lines_of, today
from pba_server.orders.runner import kick_after_commit
from pba_server.provisioning.registry import BUNDLE_HOOKS, BundleOutcome
from pba_server.subscriptions.models import Subscription

BUNDLE_POLL = timedelta(minutes=5)


def provision(ctx: CallContext, order: Order) -> str | None:
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
