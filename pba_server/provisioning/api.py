"""What other features call: provision a subscription, ask for an action on
its services, read a bundle's state, run due operations.

``provision_subscription`` and ``request_action`` run in the caller's
transaction and only write rows (services, a bundle, pending operations);
the operations run after commit, in the background (a worker thread woken
after the commit, and the ``provisioning-run`` job), or when a test calls
:func:`run_pending`.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account
from pba_server.catalog.models import Plan, ServiceTemplate
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound
from pba_server.core.runtime import Runtime
from pba_server.events import emit
from pba_server.payments.models import PluginInstance
from pba_server.provisioning import engine
from pba_server.provisioning.models import Bundle, Department, ProcessingInstance, Service, Task
from pba_server.provisioning.registry import BUILTIN_MODULES
from pba_server.subscriptions.models import Subscription
from pba_server.subscriptions.store import move_with_subscription

RequestAction = Literal["suspend", "resume", "change", "prolong", "delete"]
StandaloneTaskKind = Literal["registrar_balance"]


def _subscription(ctx: CallContext, subscription_id: int) -> Subscription:
    sub: Subscription | None = ctx.session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"subscription {subscription_id} not found")
    acc = ctx.session.get(Account, sub.account_id)
    assert acc is not None
    if not ctx.principal.sees(acc.path):
        raise NotFound(f"subscription {subscription_id} not found")
    return sub


def _bundle(ctx: CallContext, sub: Subscription, action: str, order_id: int | None) -> Bundle:
    """The bundle for this request: with an ``order_id``, the order's open bundle
    of the same action (several subscriptions of one order succeed or fail
    together), else a new one."""
    if order_id is not None:
        b: Bundle | None = ctx.session.scalar(
            select(Bundle)
            .where(
                Bundle.order_id == order_id,
                Bundle.action == action,
                Bundle.status == "running",
            )
            .order_by(Bundle.id.desc())
            .limit(1)
        )
        if b is not None:
            if b.subscription_id != sub.id:
                b.subscription_id = None  # spans several subscriptions now
            return b
    b = Bundle(
        vendor_id=sub.vendor_id,
        subscription_id=sub.id,
        order_id=order_id,
        action=action,
        status="running",
        created_at=ctx.now(),
    )
    ctx.session.add(b)
    ctx.session.flush()
    return b


def pick_instance(session: Session, module: str, vendor: Account) -> int | None:
    """An active instance of plugin ``module`` that takes new services, owned
    by the vendor or an ancestor (nearest first), with room under its
    maximum; None if there is none."""
    ancestors = [int(x) for x in vendor.path.strip("/").split("/") if x]
    rows = session.execute(
        select(PluginInstance, ProcessingInstance, Account.path)
        .join(ProcessingInstance, ProcessingInstance.instance_id == PluginInstance.id)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(
            PluginInstance.plugin == module,
            PluginInstance.status == "active",
            PluginInstance.account_id.in_(ancestors),
            ProcessingInstance.use_for_new_orders.is_(True),
        )
    ).all()
    rows = sorted(rows, key=lambda r: (-len(r[2]), r[0].id))
    for inst, extra, _path in rows:
        if extra.max_services is not None:
            # lock the instance's row so two orders cannot both take the last place
            session.get(ProcessingInstance, inst.id, with_for_update=True)
            if engine.live_services_on(session, inst.id) >= extra.max_services:
                continue
        return inst.id
    return None


def provision_subscription(
    ctx: CallContext, subscription_id: int, *, order_id: int | None = None
) -> int:
    """Create the subscription's service from its plan's template (status
    pending) and a 'create' operation for it, in a bundle; returns the bundle
    id. Runs in the caller's transaction; operations run after commit."""
    sub = _subscription(ctx, subscription_id)
    plan = ctx.session.get(Plan, sub.plan_id)
    assert plan is not None
    tpl = ctx.session.get(ServiceTemplate, plan.template_id)
    assert tpl is not None
    existing = ctx.session.scalar(
        select(Service).where(
            Service.subscription_id == sub.id,
            Service.template_id == tpl.id,
            Service.status.not_in(("failed", "deleted")),
        )
    )
    if existing is not None:
        raise InvalidState(f"subscription {sub.id} already has service {existing.id}")
    vendor = ctx.session.get(Account, sub.vendor_id)
    assert vendor is not None
    instance_id: int | None = None
    if tpl.module not in BUILTIN_MODULES:
        instance_id = pick_instance(ctx.session, tpl.module, vendor)
    now = ctx.now()
    svc = Service(
        account_id=sub.account_id,
        subscription_id=sub.id,
        template_id=tpl.id,
        module=tpl.module,
        instance_id=instance_id,
        status="pending",
        platform_id=None,
        data="{}",
        parameters=json.dumps(json.loads(sub.parameters or "{}"), sort_keys=True),
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(svc)
    ctx.session.flush()
    b = _bundle(ctx, sub, "create", order_id)
    engine.new_operation(ctx.session, svc, "create", now, bundle_id=b.id)
    engine.kick_after_commit(ctx.uow)
    return b.id


def request_action(
    ctx: CallContext,
    subscription_id: int,
    action: RequestAction,
    *,
    until: date | None = None,
    order_id: int | None = None,
    reason: str = "",
) -> int | None:
    """One operation per live service of the subscription, in one bundle;
    None when it has no live service (or, for 'prolong', no service whose
    module supports it)."""
    if action not in ("suspend", "resume", "change", "prolong", "delete"):
        raise ValueError(f"unknown action {action!r}")
    sub = _subscription(ctx, subscription_id)
    services = [
        s
        for s in ctx.session.scalars(
            select(Service)
            .where(Service.subscription_id == sub.id, Service.status.in_(engine.LIVE_SERVICE))
            .order_by(Service.id)
        )
        if action not in engine.SKIPPABLE or action in (engine.capabilities_of(s) or ())
    ]
    if not services:
        return None
    b = _bundle(ctx, sub, action, order_id)
    now = ctx.now()
    for svc in services:
        engine.new_operation(
            ctx.session, svc, action, now, bundle_id=b.id, until=until, reason=reason
        )
    engine.kick_after_commit(ctx.uow)
    return b.id


def bundle_state(
    session: Session, bundle_id: int
) -> tuple[Literal["running", "done", "failed"], str | None]:
    """("running" | "done" | "failed", why it failed)."""
    b = session.get(Bundle, bundle_id)
    if b is None:
        raise NotFound(f"bundle {bundle_id} not found")
    if b.status == "done":
        return "done", None
    if b.status == "failed":
        return "failed", b.reason
    return "running", None


def run_pending(engine_: Engine, runtime: Runtime, *, limit: int = 100) -> int:
    """Run due operations now (what the background worker and the job call);
    returns how many were run. Tests call it instead of waiting."""
    return engine.run_pending(engine_, runtime, limit=limit)


def open_task(
    ctx: CallContext,
    *,
    kind: StandaloneTaskKind,
    owner_id: int,
    subject: str,
    reason: str,
    department_id: int | None = None,
    instance_id: int | None = None,
) -> tuple[int, bool]:
    """A manual task that stands alone (no operation) for ``owner_id``'s staff,
    of ``department_id`` if given; raises ``task.opened``. At most one open
    (open or assigned) task of a kind per plugin instance: with
    ``instance_id``, an open one is returned instead of a second.
    Returns (task id, whether it is new). Runs in the caller's transaction;
    completing the task (TaskComplete) just closes it."""
    if instance_id is not None:
        existing = ctx.session.scalar(
            select(Task.id)
            .where(
                Task.kind == kind,
                Task.instance_id == instance_id,
                Task.status.in_(("open", "assigned")),
            )
            .order_by(Task.id)
            .limit(1)
        )
        if existing is not None:
            return int(existing), False
    owner = ctx.session.get(Account, owner_id)
    if owner is None:
        raise NotFound(f"account {owner_id} not found")
    department = ctx.session.get(Department, department_id) if department_id else None
    if department is not None and department.account_id != owner.id:
        department = None  # not the owner's: the owner's staff, no department
    now = ctx.now()
    task = Task(
        kind=kind,
        operation_id=None,
        instance_id=instance_id,
        subject=subject[:255],
        owner_id=owner.id,
        department_id=department.id if department else None,
        assignee_id=None,
        status="open",
        reason=reason[:4000],
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(task)
    ctx.session.flush()
    emit(
        ctx,
        "task.opened",
        ("provisioning_task", task.id),
        {
            "task_id": task.id,
            "kind": kind,
            "subject": task.subject,
            "reason": task.reason,
            "department": department.name if department else "",
            "instance_id": instance_id,
        },
        account_id=owner.id,
        account_path=owner.path,
    )
    return task.id, True


def move_services(ctx: CallContext, subscription_id: int, account_id: int) -> list[int]:
    """The subscription moved to another account (a transfer order): its
    services follow it. Runs in the caller's transaction; returns the ids of
    the services moved. Nothing is asked of the platform."""
    return move_with_subscription(ctx, Service, "service", subscription_id, account_id)
