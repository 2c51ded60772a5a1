"""Provisioning operations: processing-module instances, services, operations,
manual tasks and departments.

Everything is limited to the caller's subtree: services by the service's
account, operations by their service's, tasks and departments by the account
whose staff does them. Operations, tasks and departments are staff matters:
callers from customer accounts get ``Client.Forbidden``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from sqlalchemy import select

from pba_server.accounts.models import Account, User
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path
from pba_server.payments import plugins as payment_plugins
from pba_server.payments.models import PluginInstance
from pba_server.payments.types import SettingValue
from pba_server.provisioning import engine
from pba_server.provisioning.models import (
    Bundle,
    Department,
    DepartmentMember,
    OperationLogEntry,
    ProcessingInstance,
    ProvisioningOperation,
    Service,
    Task,
)
from pba_server.provisioning.types import (
    DepartmentInfo,
    DepartmentPage,
    OperationAction,
    OperationInfo,
    OperationLogInfo,
    OperationPage,
    OperationStatus,
    ProcessingModuleInfo,
    ProcessingModulePage,
    ServiceInfo,
    ServicePage,
    ServiceStatus,
    ServiceValue,
    TaskInfo,
    TaskKind,
    TaskPage,
    TaskStatus,
)
from pba_server.sdk import loader
from pba_server.sdk.provisioning import Done

ADMIN = frozenset({"admin"})
STAFF_READ = frozenset({"technical", "support", "readonly"})
TASK_ROLES = frozenset({"technical", "support"})  # and admin
STAFF_ACCOUNTS = ("provider", "reseller")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.&-]{0,127}$")
DATA_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _require_staff(ctx: CallContext) -> None:
    if ctx.principal.via == "system":
        return
    acc = ctx.session.get(Account, ctx.principal.account_id)
    if acc is None or acc.type not in STAFF_ACCOUNTS:
        raise Forbidden(f"{ctx.operation or 'this operation'} is for provider and reseller staff")


def _path(ctx: CallContext, account_id: int) -> str:
    acc: Account | None = ctx.session.get(Account, account_id)
    assert acc is not None
    return acc.path


def _values(text: str | None) -> list[ServiceValue]:
    return [ServiceValue(k, v) for k, v in sorted(engine.loads(text).items())]


# ---------------------------------------------------------------- module instances


def _module_info(
    ctx: CallContext, inst: PluginInstance, extra: ProcessingInstance
) -> ProcessingModuleInfo:
    base = payment_plugins.plugin_instance_get(ctx, instance_id=inst.id)
    p = loader.plugins().get(inst.plugin)
    return ProcessingModuleInfo(
        instance_id=inst.id,
        account_id=inst.account_id,
        plugin=inst.plugin,
        name=inst.name,
        status="active" if inst.status == "active" else "disabled",
        department_id=extra.department_id,
        max_services=extra.max_services,
        use_for_new_orders=extra.use_for_new_orders,
        services=engine.live_services_on(ctx.session, inst.id),
        capabilities=sorted(p.info.capabilities) if p is not None and p.info else [],
        settings=base.settings,
        secret_settings_set=base.secret_settings_set,
    )


def _get_module(ctx: CallContext, instance_id: int) -> tuple[PluginInstance, ProcessingInstance]:
    inst = payment_plugins.get_instance(ctx, instance_id)
    extra = ctx.session.get(ProcessingInstance, inst.id)
    if extra is None:
        raise NotFound(f"processing module instance {instance_id} not found")
    return inst, extra


def _department(ctx: CallContext, department_id: int) -> Department:
    d: Department | None = ctx.session.get(Department, department_id)
    if d is None or not ctx.principal.sees(_path(ctx, d.account_id)):
        raise NotFound(f"department {department_id} not found")
    return d


@operation("ProcessingModuleConfigure", roles=ADMIN, mutating=True)
def processing_module_configure(
    ctx: CallContext,
    *,
    plugin: str,
    name: str,
    settings: Annotated[list[SettingValue], MinLen(1)],
    department_id: int | None = None,
    max_services: int | None = None,
    use_for_new_orders: bool = True,
) -> ProcessingModuleInfo:
    """Create or reconfigure the caller's account's processing-module instance
    ``name`` (settings as PluginConfigure: secrets encrypted, never returned),
    with the department that gets its manual tasks, the most services it
    takes (empty: no limit) and whether new orders may use it. Configuring a
    disabled instance makes it active again."""
    _require_staff(ctx)
    p = loader.plugins().get(plugin)
    if p is None:
        raise NotFound(f"plugin {plugin!r} not found")
    if p.info is not None and p.info.kind != "processing_module":
        raise ValidationError("plugin", f"{plugin} is a {p.info.kind}, not a processing module")
    if max_services is not None and max_services < 0:
        raise ValidationError("max_services", "must not be negative")
    if department_id is not None:
        d = _department(ctx, department_id)
        if not ctx.principal.account_path.startswith(_path(ctx, d.account_id)):
            raise ValidationError("department_id", "is not a department of yours")
    base = payment_plugins.plugin_configure(ctx, plugin=plugin, name=name, settings=settings)
    inst = ctx.session.get(PluginInstance, base.id)
    assert inst is not None
    extra = ctx.session.get(ProcessingInstance, inst.id)
    if extra is None:
        extra = ProcessingInstance(instance_id=inst.id)
        ctx.session.add(extra)
    extra.department_id = department_id
    extra.max_services = max_services
    extra.use_for_new_orders = use_for_new_orders
    ctx.session.flush()
    audit.record(
        ctx,
        "processing_module",
        inst.id,
        ctx.principal.account_path,
        {
            "department_id": department_id,
            "max_services": max_services,
            "use_for_new_orders": use_for_new_orders,
        },
    )
    return _module_info(ctx, inst, extra)


@operation("ProcessingModuleList", roles=ADMIN | STAFF_READ)
def processing_module_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ProcessingModulePage:
    """Processing-module instances of an account's subtree (default: the caller's)."""
    _require_staff(ctx)
    path = visible_path(ctx, account_id)
    q = (
        select(PluginInstance, ProcessingInstance)
        .join(ProcessingInstance, ProcessingInstance.instance_id == PluginInstance.id)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(Account.path.startswith(path, autoescape=True))
        .order_by(PluginInstance.id)
    )
    rows, total = paging.rows(ctx.session, q, offset, limit)
    return ProcessingModulePage([_module_info(ctx, i, e) for i, e in rows], total, offset, limit)


@operation("ProcessingModuleDisable", roles=ADMIN, mutating=True)
def processing_module_disable(ctx: CallContext, *, instance_id: int) -> ProcessingModuleInfo:
    """Take no new services on an instance; its existing services keep being
    operated and synchronised through it."""
    _require_staff(ctx)
    inst, extra = _get_module(ctx, instance_id)
    inst.status = "disabled"
    inst.updated_at = ctx.now()
    audit.record(
        ctx, "processing_module", inst.id, _path(ctx, inst.account_id), {"status": "disabled"}
    )
    return _module_info(ctx, inst, extra)


# ---------------------------------------------------------------- services


def _service_info(s: Service) -> ServiceInfo:
    return ServiceInfo(
        id=s.id,
        account_id=s.account_id,
        subscription_id=s.subscription_id,
        template_id=s.template_id,
        module=s.module,
        instance_id=s.instance_id,
        status=s.status,  # type: ignore[arg-type]
        platform_id=s.platform_id,
        data=_values(s.data),
        parameters=_values(s.parameters),
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def _get_service(ctx: CallContext, service_id: int) -> Service:
    row = ctx.session.execute(
        select(Service, Account.path)
        .join(Account, Account.id == Service.account_id)
        .where(Service.id == service_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"service {service_id} not found")
    svc: Service = row[0]
    return svc


@operation("ServiceGet", roles=ANY_ROLE)
def service_get(ctx: CallContext, *, service_id: int) -> ServiceInfo:
    """One service: status, the platform's id and the data it returned."""
    return _service_info(_get_service(ctx, service_id))


@operation("ServiceList", roles=ANY_ROLE)
def service_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    subscription_id: int | None = None,
    status: ServiceStatus | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ServicePage:
    """Services of an account's subtree (default: the caller's), optionally of
    one subscription or in one status; newest first, one page."""
    path = visible_path(ctx, account_id)
    q = (
        select(Service)
        .join(Account, Account.id == Service.account_id)
        .where(Account.path.startswith(path, autoescape=True))
    )
    if subscription_id is not None:
        q = q.where(Service.subscription_id == subscription_id)
    if status is not None:
        q = q.where(Service.status == status)
    rows, total = paging.scalars(ctx.session, q.order_by(Service.id.desc()), offset, limit)
    return ServicePage([_service_info(s) for s in rows], total, offset, limit)


@operation("ServiceSync", roles=ADMIN | {"technical"}, mutating=True)
def service_sync(ctx: CallContext, *, service_id: int) -> OperationInfo:
    """Queue a 'sync' operation: read the service's state and usage back from
    the platform. A module without 'sync' skips it."""
    _require_staff(ctx)
    svc = _get_service(ctx, service_id)
    if svc.status not in engine.LIVE_SERVICE:
        raise InvalidState(f"service {svc.id} is {svc.status}")
    op = engine.new_operation(
        ctx.session, svc, "sync", ctx.now(), bundle_id=None, reason="ServiceSync"
    )
    engine.kick_after_commit(ctx.uow)
    audit.record(
        ctx, "service", svc.id, _path(ctx, svc.account_id), {"operation": op.id, "action": "sync"}
    )
    return _operation_info(ctx, op, svc)


# ---------------------------------------------------------------- operations


_UNKNOWN = -1


def _operation_info(
    ctx: CallContext,
    op: ProvisioningOperation,
    svc: Service,
    *,
    with_log: bool = False,
    task_id: int | None = _UNKNOWN,
) -> OperationInfo:
    if task_id == _UNKNOWN:
        task_id = ctx.session.scalar(select(Task.id).where(Task.operation_id == op.id))
    entries: list[OperationLogInfo] = []
    if with_log:
        entries = [
            OperationLogInfo(e.attempt, e.at, e.kind, e.message)
            for e in ctx.session.scalars(
                select(OperationLogEntry)
                .where(OperationLogEntry.operation_id == op.id)
                .order_by(OperationLogEntry.id)
            )
        ]
    return OperationInfo(
        id=op.id,
        service_id=svc.id,
        subscription_id=svc.subscription_id,
        account_id=svc.account_id,
        bundle_id=op.bundle_id,
        module=svc.module,
        instance_id=svc.instance_id,
        action=op.action,  # type: ignore[arg-type]
        status=op.status,  # type: ignore[arg-type]
        rollback=op.rollback,
        attempts=op.attempts,
        failures=op.failures,
        next_attempt_at=op.next_attempt_at,
        message=op.message,
        task_id=task_id,
        created_at=op.created_at,
        updated_at=op.updated_at,
        finished_at=op.finished_at,
        log=entries,
    )


def _get_operation(ctx: CallContext, operation_id: int) -> tuple[ProvisioningOperation, Service]:
    op = ctx.session.get(ProvisioningOperation, operation_id)
    if op is None:
        raise NotFound(f"operation {operation_id} not found")
    try:
        svc = _get_service(ctx, op.service_id)
    except NotFound:
        raise NotFound(f"operation {operation_id} not found") from None
    return op, svc


@operation("OperationList", roles=ADMIN | STAFF_READ)
def operation_list(
    ctx: CallContext,
    *,
    status: OperationStatus | None = None,
    service_id: int | None = None,
    subscription_id: int | None = None,
    instance_id: int | None = None,
    account_id: int | None = None,
    action: OperationAction | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> OperationPage:
    """Provisioning operations of an account's subtree (default: the caller's),
    newest first, one page; filters combine."""
    _require_staff(ctx)
    path = visible_path(ctx, account_id)
    q = (
        select(ProvisioningOperation, Service, Task.id)
        .join(Service, Service.id == ProvisioningOperation.service_id)
        .join(Account, Account.id == Service.account_id)
        .outerjoin(Task, Task.operation_id == ProvisioningOperation.id)
        .where(Account.path.startswith(path, autoescape=True))
    )
    if status is not None:
        q = q.where(ProvisioningOperation.status == status)
    if service_id is not None:
        q = q.where(Service.id == service_id)
    if subscription_id is not None:
        q = q.where(Service.subscription_id == subscription_id)
    if instance_id is not None:
        q = q.where(Service.instance_id == instance_id)
    if action is not None:
        q = q.where(ProvisioningOperation.action == action)
    rows, total = paging.rows(
        ctx.session, q.order_by(ProvisioningOperation.id.desc()), offset, limit
    )
    return OperationPage(
        [_operation_info(ctx, op, svc, task_id=tid) for op, svc, tid in rows], total, offset, limit
    )


@operation("OperationGet", roles=ADMIN | STAFF_READ)
def operation_get(ctx: CallContext, *, operation_id: int) -> OperationInfo:
    """One operation with its log (failures, polls, hand-over to a person)."""
    _require_staff(ctx)
    op, svc = _get_operation(ctx, operation_id)
    return _operation_info(ctx, op, svc, with_log=True)


@operation("OperationRetry", roles=ADMIN | TASK_ROLES, mutating=True)
def operation_retry(ctx: CallContext, *, operation_id: int) -> OperationInfo:
    """Run an operation again now: a pending one at once, a failed one or a
    manual one (its task is withdrawn) from a fresh failure count."""
    _require_staff(ctx)
    op, svc = _get_operation(ctx, operation_id)
    op = ctx.session.get(ProvisioningOperation, op.id, with_for_update=True, populate_existing=True)
    assert op is not None
    if op.status in ("running", "done"):
        raise InvalidState(f"operation {op.id} is {op.status}")
    if op.bundle_id is not None and op.status == "failed":
        b = ctx.session.get(Bundle, op.bundle_id)
        if b is not None and b.status == "rolling_back":
            raise InvalidState(f"operation {op.id}'s bundle {b.id} is being rolled back")
        if b is not None and b.action == "create" and not op.rollback:
            # the order was told it failed and its other services were removed:
            # creating this one now would leave a service nobody ordered
            raise InvalidState(f"operation {op.id}'s bundle {b.id} failed and was rolled back")
    now = ctx.now()
    if op.status == "manual":
        task = ctx.session.scalar(select(Task).where(Task.operation_id == op.id))
        if task is not None and task.status in ("open", "assigned"):
            task.status, task.reject_reason = "rejected", "withdrawn: the operation is retried"
            task.updated_at = task.completed_at = now
    if op.status in ("failed", "manual"):
        op.failures = 0
        op.finished_at = None
        if op.action == "create" and svc.status == "failed":
            svc.status, svc.updated_at = "pending", now
    was = op.status
    op.status = "pending"
    op.next_attempt_at = now
    op.updated_at = now
    engine.log_entry(ctx.session, op, "info", f"retried by {ctx.principal.login} (was {was})", now)
    engine.kick_after_commit(ctx.uow)
    audit.record(
        ctx,
        "provisioning_operation",
        op.id,
        _path(ctx, svc.account_id),
        {"status": {"from": was, "to": "pending"}},
    )
    return _operation_info(ctx, op, svc, with_log=True)


# ---------------------------------------------------------------- tasks


def _task_info(
    ctx: CallContext,
    t: Task,
    op: ProvisioningOperation | None = None,
    svc: Service | None = None,
) -> TaskInfo:
    if t.operation_id is not None and (op is None or svc is None):
        op = ctx.session.get(ProvisioningOperation, t.operation_id)
        assert op is not None
        svc = ctx.session.get(Service, op.service_id)
        assert svc is not None
    return TaskInfo(
        id=t.id,
        kind=t.kind,  # type: ignore[arg-type]
        subject=t.subject,
        owner_id=t.owner_id,
        department_id=t.department_id,
        assignee_id=t.assignee_id,
        status=t.status,  # type: ignore[arg-type]
        reason=t.reason,
        result=_values(t.result),
        reject_reason=t.reject_reason,
        created_at=t.created_at,
        updated_at=t.updated_at,
        completed_at=t.completed_at,
        operation_id=op.id if op is not None else None,
        action=op.action if op is not None else None,  # type: ignore[arg-type]
        service_id=svc.id if svc is not None else None,
        subscription_id=svc.subscription_id if svc is not None else None,
        account_id=svc.account_id if svc is not None else None,
        instance_id=t.instance_id,
    )


def _get_task(ctx: CallContext, task_id: int, *, lock: bool = False) -> Task:
    t: Task | None = ctx.session.get(Task, task_id, with_for_update=lock, populate_existing=lock)
    if t is None or not ctx.principal.sees(_path(ctx, t.owner_id)):
        raise NotFound(f"task {task_id} not found")
    return t


@operation("TaskList", roles=ADMIN | TASK_ROLES | {"readonly"})
def task_list(
    ctx: CallContext,
    *,
    department_id: int | None = None,
    status: TaskStatus | None = None,
    assignee_id: int | None = None,
    account_id: int | None = None,
    kind: TaskKind | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> TaskPage:
    """Manual tasks of an account's subtree (default: the caller's), oldest
    first, one page: operations handed to a person and tasks standing
    alone (``kind`` registrar_balance); filters combine."""
    _require_staff(ctx)
    path = visible_path(ctx, account_id)
    q = (
        select(Task, ProvisioningOperation, Service)
        .outerjoin(ProvisioningOperation, ProvisioningOperation.id == Task.operation_id)
        .outerjoin(Service, Service.id == ProvisioningOperation.service_id)
        .join(Account, Account.id == Task.owner_id)
        .where(Account.path.startswith(path, autoescape=True))
    )
    if kind is not None:
        q = q.where(Task.kind == kind)
    if department_id is not None:
        q = q.where(Task.department_id == department_id)
    if status is not None:
        q = q.where(Task.status == status)
    if assignee_id is not None:
        q = q.where(Task.assignee_id == assignee_id)
    rows, total = paging.rows(ctx.session, q.order_by(Task.id), offset, limit)
    return TaskPage([_task_info(ctx, t, op, svc) for t, op, svc in rows], total, offset, limit)


def _open_task(ctx: CallContext, task_id: int) -> Task:
    t = _get_task(ctx, task_id, lock=True)
    if t.status not in ("open", "assigned"):
        raise InvalidState(f"task {t.id} is {t.status}")
    return t


@operation("TaskAssign", roles=ADMIN | TASK_ROLES, mutating=True)
def task_assign(ctx: CallContext, *, task_id: int, user_id: int | None = None) -> TaskInfo:
    """Give an open task to a user (default: the caller) of the account that
    owns it; with a department, the user must be one of its members."""
    _require_staff(ctx)
    t = _open_task(ctx, task_id)
    uid = user_id if user_id is not None else ctx.principal.user_id
    user = ctx.session.get(User, uid) if uid else None
    if user is None or not ctx.principal.sees(_path(ctx, user.account_id)):
        raise ValidationError("user_id", f"user {user_id} not found")
    if user.account_id != t.owner_id:
        raise ValidationError("user_id", "is not a user of the account that owns the task")
    if user.status != "active":
        raise ValidationError("user_id", "is disabled")
    if (
        t.department_id is not None
        and ctx.session.get(DepartmentMember, (t.department_id, user.id)) is None
    ):
        raise ValidationError("user_id", "is not a member of the task's department")
    before = t.assignee_id
    t.assignee_id, t.status, t.updated_at = user.id, "assigned", ctx.now()
    audit.record(
        ctx,
        "provisioning_task",
        t.id,
        _path(ctx, t.owner_id),
        {"assignee_id": {"from": before, "to": user.id}},
    )
    return _task_info(ctx, t)


def _op_and_service(ctx: CallContext, t: Task) -> tuple[ProvisioningOperation, Service]:
    assert t.operation_id is not None
    op = ctx.session.get(
        ProvisioningOperation, t.operation_id, with_for_update=True, populate_existing=True
    )
    assert op is not None
    svc = ctx.session.get(Service, op.service_id)
    assert svc is not None
    if op.status != "manual":
        raise InvalidState(f"operation {op.id} is {op.status}, not manual")
    return op, svc


@operation("TaskComplete", roles=ADMIN | TASK_ROLES, mutating=True)
def task_complete(
    ctx: CallContext, *, task_id: int, data: list[ServiceValue] | None = None
) -> TaskInfo:
    """The work is done by hand: the operation is done with the data entered
    (``platform_id`` names the platform's id of the service; the rest is
    stored as the service's data). A completed 'create' makes the service
    active and lets its bundle go on. A task standing alone (a registrar's
    balance) is just closed, with the data kept on the task."""
    _require_staff(ctx)
    t = _open_task(ctx, task_id)
    entered: dict[str, str] = {}
    for i, item in enumerate(data or []):
        if not DATA_NAME_RE.match(item.name):
            raise ValidationError(f"data[{i}].name", "must be 1 to 64 letters, digits, _ . -")
        if item.name in entered:
            raise ValidationError(f"data[{i}].name", f"{item.name!r} given twice")
        if len(item.value) > 4000:
            raise ValidationError(f"data[{i}].value", "must be at most 4000 characters")
        entered[item.name] = item.value
    if len(entered) > 100:
        raise ValidationError("data", "at most 100 items")
    if t.operation_id is None:
        return _close_task(ctx, t, "completed", result=entered)
    op, svc = _op_and_service(ctx, t)
    now = ctx.now()
    t.status, t.result, t.updated_at, t.completed_at = (
        "completed",
        json.dumps(entered, sort_keys=True),
        now,
        now,
    )
    if t.assignee_id is None and ctx.principal.user_id:
        t.assignee_id = ctx.principal.user_id
    engine.log_entry(
        ctx.session, op, "info", f"completed by hand (task {t.id}) by {ctx.principal.login}", now
    )
    platform_id = entered.pop("platform_id", None)
    engine.finish_done(ctx, op, svc, Done(platform_id=platform_id, data=entered))
    audit.record(
        ctx,
        "provisioning_task",
        t.id,
        _path(ctx, t.owner_id),
        {"status": "completed", "data": sorted(entered)},
    )
    return _task_info(ctx, t)


def _close_task(
    ctx: CallContext,
    t: Task,
    status: TaskStatus,
    *,
    result: dict[str, str] | None = None,
    reject_reason: str | None = None,
) -> TaskInfo:
    """Close a task that stands alone (no operation to finish)."""
    now = ctx.now()
    t.status, t.updated_at, t.completed_at = status, now, now
    if result is not None:
        t.result = json.dumps(result, sort_keys=True)
    if reject_reason is not None:
        t.reject_reason = reject_reason
    if status == "completed" and t.assignee_id is None and ctx.principal.user_id:
        t.assignee_id = ctx.principal.user_id
    changes: dict[str, object] = {"status": status}
    if result is not None:
        changes["data"] = sorted(result)
    if reject_reason is not None:
        changes["reason"] = reject_reason
    audit.record(ctx, "provisioning_task", t.id, _path(ctx, t.owner_id), changes)
    return _task_info(ctx, t)


@operation("TaskReject", roles=ADMIN | TASK_ROLES, mutating=True)
def task_reject(ctx: CallContext, *, task_id: int, reason: str) -> TaskInfo:
    """The work cannot be done: the operation fails finally (a 'create' in a
    bundle rolls the bundle back). A task standing alone is closed."""
    _require_staff(ctx)
    reason = reason.strip()
    if not 1 <= len(reason) <= 1000:
        raise ValidationError("reason", "must be 1 to 1000 characters")
    t = _open_task(ctx, task_id)
    if t.operation_id is None:
        return _close_task(ctx, t, "rejected", reject_reason=reason)
    op, svc = _op_and_service(ctx, t)
    now = ctx.now()
    t.status, t.reject_reason, t.updated_at, t.completed_at = "rejected", reason, now, now
    engine.log_entry(ctx.session, op, "final", f"rejected by {ctx.principal.login}: {reason}", now)
    engine.finish_failed(ctx, op, svc, f"rejected: {reason}")
    audit.record(
        ctx,
        "provisioning_task",
        t.id,
        _path(ctx, t.owner_id),
        {"status": "rejected", "reason": reason},
    )
    return _task_info(ctx, t)


# ---------------------------------------------------------------- departments


def _department_info(ctx: CallContext, d: Department) -> DepartmentInfo:
    members = ctx.session.scalars(
        select(DepartmentMember.user_id)
        .where(DepartmentMember.department_id == d.id)
        .order_by(DepartmentMember.user_id)
    ).all()
    return DepartmentInfo(d.id, d.account_id, d.name, list(members), d.created_at)


@operation("DepartmentCreate", roles=ADMIN, mutating=True)
def department_create(
    ctx: CallContext, *, name: str, account_id: int | None = None
) -> DepartmentInfo:
    """A department of staff (of the caller's account, or of a reseller below)
    that manual tasks are given to."""
    _require_staff(ctx)
    name = name.strip()
    if not NAME_RE.match(name):
        raise ValidationError("name", "must be 1 to 128 letters, digits, spaces, _ . & -")
    owner_id = account_id if account_id is not None else ctx.principal.account_id
    path = visible_path(ctx, owner_id)
    owner = ctx.session.get(Account, owner_id)
    assert owner is not None
    if owner.type not in STAFF_ACCOUNTS:
        raise ValidationError("account_id", "must be a provider or reseller account")
    if ctx.session.scalar(
        select(Department.id).where(Department.account_id == owner_id, Department.name == name)
    ):
        raise ValidationError("name", f"a department {name!r} exists")
    d = Department(account_id=owner_id, name=name, created_at=ctx.now())
    ctx.session.add(d)
    ctx.session.flush()
    audit.record(ctx, "department", d.id, path, {"name": name})
    return _department_info(ctx, d)


@operation("DepartmentList", roles=ADMIN | STAFF_READ)
def department_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> DepartmentPage:
    """Departments of an account's subtree (default: the caller's)."""
    _require_staff(ctx)
    path = visible_path(ctx, account_id)
    q = (
        select(Department)
        .join(Account, Account.id == Department.account_id)
        .where(Account.path.startswith(path, autoescape=True))
        .order_by(Department.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return DepartmentPage([_department_info(ctx, d) for d in rows], total, offset, limit)


def _member_user(ctx: CallContext, d: Department, user_id: int) -> User:
    user: User | None = ctx.session.get(User, user_id)
    if user is None or not ctx.principal.sees(_path(ctx, user.account_id)):
        raise ValidationError("user_id", f"user {user_id} not found")
    if user.account_id != d.account_id:
        raise ValidationError("user_id", "is not a user of the department's account")
    return user


@operation("DepartmentAddMember", roles=ADMIN, mutating=True)
def department_add_member(ctx: CallContext, *, department_id: int, user_id: int) -> DepartmentInfo:
    """Make a user (of the department's account) a member; a member already is."""
    _require_staff(ctx)
    d = _department(ctx, department_id)
    user = _member_user(ctx, d, user_id)
    if ctx.session.get(DepartmentMember, (d.id, user.id)) is None:
        ctx.session.add(DepartmentMember(department_id=d.id, user_id=user.id))
        ctx.session.flush()
        audit.record(ctx, "department", d.id, _path(ctx, d.account_id), {"member_added": user.id})
    return _department_info(ctx, d)


@operation("DepartmentRemoveMember", roles=ADMIN, mutating=True)
def department_remove_member(
    ctx: CallContext, *, department_id: int, user_id: int
) -> DepartmentInfo:
    """Take a user out of a department (tasks assigned to them stay assigned)."""
    _require_staff(ctx)
    d = _department(ctx, department_id)
    m = ctx.session.get(DepartmentMember, (d.id, user_id))
    if m is None:
        raise NotFound(f"user {user_id} is not a member of department {d.id}")
    ctx.session.delete(m)
    ctx.session.flush()
    audit.record(ctx, "department", d.id, _path(ctx, d.account_id), {"member_removed": user_id})
    return _department_info(ctx, d)
