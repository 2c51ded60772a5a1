"""The provisioning engine: runs operations against processing modules.

Every operation follows the same three steps, each its own transaction or
none:

1. **claim** (a transaction): the due operation is locked (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL; SQLite has one writer), marked ``running`` with
   ``attempts + 1`` and committed -- the intent is durable before the module
   hears of it;
2. **call** (no transaction, the caller's worker thread -- never the
   reactor): ``module.perform(request)`` with ``request.key`` = our operation
   id, the module's idempotency key;
3. **record** (a new transaction): the result, unless the operation was
   claimed again meanwhile (a newer attempt owns it then).

While the call runs the worker renews the operation's lease
(``lease_until``, :mod:`pba_server.core.leases`). A process that dies between
1 and 3 leaves the operation ``running`` with a lease that nobody renews; once
it expired (within :data:`~pba_server.core.leases.LEASE`) the operation is
claimed again by the next run (the worker thread's pass every 10 s, or the
``provisioning-run`` job) and the module is called again with the same key
(modules are idempotent by key). The running timeout
(``provisioning_running_timeout_minutes``) remains the upper bound for a call
that hangs while its worker lives: past it, the operation is claimed again too.

Settings reach the engine through the app's runtime (:func:`run_pending`
takes it), never through module globals.

Results: ``Done`` -> done (service fields updated); ``InProgress`` ->
pending again after ``poll_after`` seconds (not a failure); ``RetryableFailure``
(or anything the module raises) -> pending again after the retry interval,
and after ``max_failures`` of them a manual task; ``FinalFailure`` -> failed.
An action the module does not support becomes a manual task at once
(``prolong`` and ``sync``: skipped, done without a call).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account
from pba_server.catalog.models import Resource, ServiceTemplate
from pba_server.config import Settings
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork, run_in_transaction
from pba_server.core.errors import PbaError
from pba_server.core.leases import LeaseKeeper, lease_until
from pba_server.core.runtime import Runtime
from pba_server.events import emit
from pba_server.payments.models import PluginInstance
from pba_server.payments.plugin_objects import plugin_object
from pba_server.provisioning.models import (
    Bundle,
    Department,
    OperationLogEntry,
    ProcessingInstance,
    ProvisioningOperation,
    Service,
    Task,
)
from pba_server.provisioning.registry import (
    BUILTIN_MODULES,
    BUNDLE_HOOKS,
    USAGE_SINKS,
    BundleOutcome,
)
from pba_server.sdk import NotSupported, PluginBusy, PluginError, loader
from pba_server.sdk import guard as plugincall
from pba_server.sdk.provisioning import (
    Action,
    Done,
    FinalFailure,
    InProgress,
    ModuleResult,
    ProcessingModule,
    RetryableFailure,
    ServiceRequest,
)
from pba_server.subscriptions.models import Subscription, SubscriptionResource

log = logging.getLogger("pba.provisioning")

SKIPPABLE = frozenset({"prolong", "sync"})  # unsupported: skipped, not a task
# a module (or registrar) the server did not call (busy, circuit open): asked
# again after this long, not counted as a failure
BUSY_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class NotCalled:
    """The module was not called (:class:`~pba_server.sdk.PluginBusy`):
    nothing happened at the platform; the operation is pending again."""

    message: str
    retry_after: float | None = None


TERMINAL = frozenset({"done", "failed"})
LIVE_SERVICE = frozenset({"active", "suspended"})


@dataclass(frozen=True)
class Tuning:
    """The provisioning settings of one app."""

    retry_interval: timedelta = timedelta(minutes=5)
    max_failures: int = 3
    running_timeout: timedelta = timedelta(minutes=30)

    @classmethod
    def of(cls, settings: Settings) -> Tuning:
        return cls(
            retry_interval=timedelta(minutes=max(1, settings.provisioning_retry_minutes)),
            max_failures=max(1, settings.provisioning_max_failures),
            running_timeout=timedelta(
                minutes=max(1, settings.provisioning_running_timeout_minutes)
            ),
        )


def tuning(ctx: CallContext) -> Tuning:
    return Tuning.of(ctx.rt.settings)


# ---------------------------------------------------------------- kick

# id(engine) -> the wake event of that engine's worker thread (runtime.start):
# set after a commit that created due operations, so they start within seconds
_wakers: dict[int, threading.Event] = {}


def set_waker(engine: Engine, wake: threading.Event | None) -> None:
    if wake is None:
        _wakers.pop(id(engine), None)
    else:
        _wakers[id(engine)] = wake


def kick_after_commit(uow: UnitOfWork) -> None:
    engine = uow.session.get_bind()
    wake = _wakers.get(id(engine))
    if wake is not None:
        uow.after_commit(wake.set)


# ---------------------------------------------------------------- helpers


def loads(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def dumps(value: dict[str, str]) -> str:
    return json.dumps(value, sort_keys=True)


def _account(session: Session, account_id: int) -> Account:
    acc = session.get(Account, account_id)
    assert acc is not None
    return acc


def owner_ctx(uow: UnitOfWork, runtime: Runtime, account_id: int, operation: str) -> CallContext:
    acc = _account(uow.session, account_id)
    return system_context(
        uow,
        runtime.clock,
        account_id=acc.id,
        account_path=acc.path,
        operation=operation,
        runtime=runtime,
    )


def log_entry(
    session: Session, op: ProvisioningOperation, kind: str, message: str, at: datetime
) -> None:
    session.add(
        OperationLogEntry(
            operation_id=op.id, attempt=op.attempts, at=at, kind=kind, message=message[:4000]
        )
    )


def vendor_of(session: Session, svc: Service) -> int:
    """The account on whose behalf the service is run: the subscription's vendor,
    else the service account's parent (else itself)."""
    if svc.subscription_id is not None:
        sub = session.get(Subscription, svc.subscription_id)
        if sub is not None:
            return sub.vendor_id
    acc = _account(session, svc.account_id)
    return acc.parent_id or acc.id


def task_owner(session: Session, svc: Service) -> tuple[int, int | None]:
    """Whose staff does a manual task for ``svc`` (account id) and which department."""
    if svc.instance_id is not None:
        inst = session.get(PluginInstance, svc.instance_id)
        extra = session.get(ProcessingInstance, svc.instance_id)
        if inst is not None:
            return inst.account_id, extra.department_id if extra is not None else None
    return vendor_of(session, svc), None


def capabilities_of(svc: Service) -> frozenset[str] | None:
    """The actions the service's module supports; None if it is not available."""
    builtin = BUILTIN_MODULES.get(svc.module)
    if builtin is not None and svc.instance_id is None:
        return builtin.capabilities
    p = loader.plugins().get(svc.module)
    if p is None or p.status != "ok" or p.info is None or p.info.kind != "processing_module":
        return None
    return frozenset(p.info.capabilities)


def module_object(box: Any, inst: PluginInstance, clock: Clock) -> ProcessingModule:
    """The plugin object for a processing-module instance, secrets decrypted in memory."""
    module: ProcessingModule = plugin_object(box, inst, "processing_module", clock)
    return module


def _limits(session: Session, subscription_id: int | None) -> dict[str, Decimal]:
    if subscription_id is None:
        return {}
    rows = session.execute(
        select(Resource.name, SubscriptionResource.included, SubscriptionResource.bought)
        .join(Resource, Resource.id == SubscriptionResource.resource_id)
        .where(SubscriptionResource.subscription_id == subscription_id)
        .order_by(Resource.name)
    ).all()
    return {name: Decimal(inc) + Decimal(bought) for name, inc, bought in rows}


def current_parameters(session: Session, svc: Service) -> dict[str, str]:
    if svc.subscription_id is not None:
        sub = session.get(Subscription, svc.subscription_id)
        if sub is not None:
            return loads(sub.parameters)
    return loads(svc.parameters)


def build_request(session: Session, op: ProvisioningOperation, svc: Service) -> ServiceRequest:
    tpl = session.get(ServiceTemplate, svc.template_id)
    assert tpl is not None
    acc = _account(session, svc.account_id)
    return ServiceRequest(
        key=str(op.id),
        action=cast(Action, op.action),
        service_id=svc.id,
        subscription_id=svc.subscription_id,
        account_id=acc.id,
        account_name=acc.name,
        service_type=tpl.service_type,
        template=tpl.name,
        module_settings=loads(tpl.module_settings),
        parameters=current_parameters(session, svc)
        if op.action == "change"
        else loads(svc.parameters),
        limits=_limits(session, svc.subscription_id),
        platform_id=svc.platform_id,
        data=loads(svc.data),
        until=op.until,
    )


# ---------------------------------------------------------------- transitions


def new_operation(
    session: Session,
    svc: Service,
    action: str,
    now: datetime,
    *,
    bundle_id: int | None,
    rollback: bool = False,
    until: date | None = None,
    reason: str = "",
) -> ProvisioningOperation:
    op = ProvisioningOperation(
        service_id=svc.id,
        bundle_id=bundle_id,
        action=action,
        status="pending",
        rollback=rollback,
        attempts=0,
        failures=0,
        next_attempt_at=now,
        until=until.isoformat() if until else None,
        reason=reason or None,
        created_at=now,
        updated_at=now,
    )
    session.add(op)
    session.flush()
    return op


def to_manual(ctx: CallContext, op: ProvisioningOperation, svc: Service, reason: str) -> Task:
    """Hand the operation to a person: a task for the instance's department."""
    now = ctx.now()
    op.status = "manual"
    op.message = reason[:4000]
    op.next_attempt_at = None
    op.updated_at = now
    log_entry(ctx.session, op, "manual", reason, now)
    owner_id, department_id = task_owner(ctx.session, svc)
    task = Task(
        kind="operation",
        operation_id=op.id,
        instance_id=svc.instance_id,
        subject=f"{op.action} service {svc.id} ({svc.module})"[:255],
        owner_id=owner_id,
        department_id=department_id,
        assignee_id=None,
        status="open",
        reason=reason[:4000],
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(task)
    ctx.session.flush()
    department = ctx.session.get(Department, department_id) if department_id else None
    owner = _account(ctx.session, owner_id)
    emit(
        ctx,
        "operation.manual_task",
        ("provisioning_task", task.id),
        {
            "subscription_id": svc.subscription_id,
            "operation_id": op.id,
            "module": svc.module,
            "error": reason,
            "task_id": task.id,
            "department": department.name if department else "",
        },
        account_id=owner.id,
        account_path=owner.path,
    )
    # a rollback handed to a person lets its bundle finish (the person's work
    # is tracked by the task, not by the order)
    bundle_progress(ctx, op.bundle_id)
    return task


def _service_event(
    ctx: CallContext, kind: str, op: ProvisioningOperation, svc: Service, error: str | None
) -> None:
    acc = _account(ctx.session, svc.account_id)
    emit(
        ctx,
        kind,
        ("service", svc.id),
        {
            "subscription_id": svc.subscription_id,
            "operation_id": op.id,
            "module": svc.module,
            "error": error,
        },
        account_id=acc.id,
        account_path=acc.path,
    )


def builtin_result(ctx: CallContext, svc: Service, action: str, result: ModuleResult) -> None:
    """A built-in module's ``on_result``, in the transaction recording ``result``."""
    builtin = BUILTIN_MODULES.get(svc.module)
    if builtin is not None and builtin.on_result is not None and svc.instance_id is None:
        builtin.on_result(ctx, svc, action, result)


def finish_done(ctx: CallContext, op: ProvisioningOperation, svc: Service, done: Done) -> None:
    now = ctx.now()
    op.status = "done"
    op.next_attempt_at = None
    op.finished_at = op.updated_at = now
    if done.platform_id:
        svc.platform_id = done.platform_id[:255]
    if done.data:
        svc.data = dumps({**loads(svc.data), **{str(k): str(v) for k, v in done.data.items()}})
    was = svc.status
    if op.action == "create":
        svc.status = "active"
    elif op.action == "suspend":
        svc.status = "suspended"
    elif op.action == "resume":
        svc.status = "active"
    elif op.action == "delete":
        svc.status = "deleted"
    elif op.action == "change":
        svc.parameters = dumps(current_parameters(ctx.session, svc))
    svc.updated_at = now
    ctx.session.flush()
    builtin_result(ctx, svc, op.action, done)
    if op.action == "create" and was != "active":
        _service_event(ctx, "service.provisioned", op, svc, None)
    if op.action == "sync" and done.usage and svc.subscription_id is not None:
        for sink in USAGE_SINKS:
            sink(ctx, svc.subscription_id, dict(done.usage), now)
    bundle_progress(ctx, op.bundle_id)


def finish_failed(ctx: CallContext, op: ProvisioningOperation, svc: Service, message: str) -> None:
    now = ctx.now()
    op.status = "failed"
    op.message = message[:4000]
    op.next_attempt_at = None
    op.finished_at = op.updated_at = now
    if op.action == "create":
        svc.status = "failed"
        svc.updated_at = now
    ctx.session.flush()
    builtin_result(ctx, svc, op.action, FinalFailure(message))
    if op.action == "create":
        _service_event(ctx, "service.failed", op, svc, message)
    bundle_progress(ctx, op.bundle_id)


def fail_retryable(ctx: CallContext, op: ProvisioningOperation, svc: Service, message: str) -> None:
    now = ctx.now()
    op.failures += 1
    op.message = message[:4000]
    op.updated_at = now
    log_entry(ctx.session, op, "retryable", message, now)
    builtin_result(ctx, svc, op.action, RetryableFailure(message))
    tune = tuning(ctx)
    if op.failures >= tune.max_failures:
        to_manual(ctx, op, svc, f"failed {op.failures} time(s); last: {message}")
    else:
        op.status = "pending"
        op.next_attempt_at = now + tune.retry_interval
    bundle_progress(ctx, op.bundle_id)


def skip(ctx: CallContext, op: ProvisioningOperation, message: str) -> None:
    now = ctx.now()
    op.status = "done"
    op.message = message
    op.next_attempt_at = None
    op.finished_at = op.updated_at = now
    log_entry(ctx.session, op, "info", message, now)
    bundle_progress(ctx, op.bundle_id)


# ---------------------------------------------------------------- bundles


def _cancel(ctx: CallContext, op: ProvisioningOperation, why: str) -> None:
    now = ctx.now()
    svc = ctx.session.get(Service, op.service_id)
    assert svc is not None
    if op.status == "manual":
        task = ctx.session.scalar(select(Task).where(Task.operation_id == op.id))
        if task is not None and task.status in ("open", "assigned"):
            task.status, task.reject_reason, task.updated_at = "rejected", why, now
            task.completed_at = now
    op.status, op.message, op.next_attempt_at = "failed", why, None
    op.finished_at = op.updated_at = now
    log_entry(ctx.session, op, "final", why, now)
    if op.action == "create" and svc.status in ("pending", "provisioning"):
        svc.status, svc.updated_at = "failed", now
    if op.attempts > 0 or op.status == "manual":  # a built-in module may have state for it
        builtin_result(ctx, svc, op.action, FinalFailure(why))


def bundle_progress(ctx: CallContext, bundle_id: int | None) -> None:
    """Move a bundle on after one of its operations changed: roll a failed
    create back, report a finished bundle to the BUNDLE_HOOKS (once)."""
    if bundle_id is None:
        return
    session = ctx.session
    session.flush()
    b = session.get(Bundle, bundle_id, with_for_update=True, populate_existing=True)
    assert b is not None
    if b.status in TERMINAL:
        return
    ops = list(
        session.scalars(
            select(ProvisioningOperation)
            .where(ProvisioningOperation.bundle_id == b.id)
            .order_by(ProvisioningOperation.id)
        )
    )
    main = [o for o in ops if not o.rollback]
    if b.action == "create":
        failed = [o for o in main if o.status == "failed"]
        if b.status == "running" and failed:
            b.status = "rolling_back"
            b.reason = failed[0].message or "provisioning failed"
        if b.status == "rolling_back":
            rolled = {o.service_id for o in ops if o.rollback}
            for o in main:
                cancelled = o.status in ("pending", "manual")
                if cancelled:
                    _cancel(ctx, o, f"cancelled: bundle {b.id} is rolled back")
                # created, or maybe half-created (the platform heard of it): delete
                done_or_tried = o.status == "done" or (cancelled and o.attempts > 0)
                if done_or_tried and o.service_id not in rolled:
                    svc = session.get(Service, o.service_id)
                    assert svc is not None
                    new_operation(
                        session,
                        svc,
                        "delete",
                        ctx.now(),
                        bundle_id=b.id,
                        rollback=True,
                        reason=f"rollback of bundle {b.id}",
                    )
                    rolled.add(o.service_id)
                    kick_after_commit(ctx.uow)
            if any(o.status == "running" for o in main):
                return
            session.flush()
            rollbacks = session.scalars(
                select(ProvisioningOperation.status).where(
                    ProvisioningOperation.bundle_id == b.id,
                    ProvisioningOperation.rollback.is_(True),
                )
            ).all()
            if all(s in ("done", "failed", "manual") for s in rollbacks):
                _finish_bundle(ctx, b, "failed")
            return
        if all(o.status == "done" for o in main):
            _finish_bundle(ctx, b, "done")
        return
    if all(o.status in TERMINAL for o in main):
        failed = [o for o in main if o.status == "failed"]
        if failed:
            b.reason = failed[0].message or "an operation failed"
        _finish_bundle(ctx, b, "failed" if failed else "done")


def _finish_bundle(ctx: CallContext, b: Bundle, state: str) -> None:
    b.status = state
    b.finished_at = ctx.now()
    if state == "done":
        b.reason = None
    ctx.session.flush()
    outcome = BundleOutcome(
        bundle_id=b.id,
        action=b.action,
        subscription_id=b.subscription_id,
        order_id=b.order_id,
        state="done" if state == "done" else "failed",
        reason=b.reason,
    )
    vendor = _account(ctx.session, b.vendor_id)
    hook_ctx = system_context(
        ctx.uow,
        ctx.clock,
        account_id=vendor.id,
        account_path=vendor.path,
        operation="ProvisioningBundle",
        secrets=ctx.secrets,
        runtime=ctx.runtime,
    )
    for hook in BUNDLE_HOOKS:
        try:
            with ctx.session.begin_nested():
                hook(hook_ctx, outcome)
        except Exception:  # one feature's bug must not lose the provisioning result
            log.exception("bundle hook %r failed for bundle %s", hook, b.id)


# ---------------------------------------------------------------- run


@dataclass
class _Claimed:
    op_id: int
    attempt: int
    module: ProcessingModule
    request: ServiceRequest


def _due(now: datetime, tune: Tuning) -> Any:
    op = ProvisioningOperation
    return or_(
        and_(op.status == "pending", op.next_attempt_at <= now),
        and_(
            op.status == "running",
            or_(
                op.lease_until <= now,  # its worker died
                op.started_at <= now - tune.running_timeout,  # or hangs
            ),
        ),
    )


def _claim_one(engine: Engine, runtime: Runtime) -> tuple[bool, _Claimed | None]:
    """(found one, what to call). Handles what needs no call (unsupported,
    no module) in the claim transaction itself."""
    clock = runtime.clock
    tune = Tuning.of(runtime.settings)
    with UnitOfWork(engine) as uow:
        now = clock.now()
        op = uow.session.scalar(
            select(ProvisioningOperation)
            .where(_due(now, tune))
            .order_by(ProvisioningOperation.next_attempt_at, ProvisioningOperation.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if op is None:
            return False, None
        svc = uow.session.get(Service, op.service_id)
        assert svc is not None
        ctx = owner_ctx(uow, runtime, vendor_of(uow.session, svc), "ProvisioningRun")
        if op.status == "running":  # its process died (or hung) mid-call
            lost = op.lease_until is not None and op.lease_until <= now
            why = (
                "its worker stopped (lease expired)"
                if lost
                else f"still running after {tune.running_timeout}"
            )
            log_entry(uow.session, op, "crashed", f"{why}; called again with the same key", now)
        op_id = op.id
        try:
            claimed = _prepare(ctx, op, svc)
            uow.commit()
        except Exception as exc:
            log.exception("operation %s: preparing the call failed", op_id)
            uow.rollback()
            _prepare_failed(engine, runtime, op_id, exc)
            return True, None
        return True, claimed


def _prepare_failed(engine: Engine, runtime: Runtime, op_id: int, exc: Exception) -> None:
    """A bug or database error while preparing: count it as a failed attempt,
    so one broken operation cannot block the queue."""
    with UnitOfWork(engine) as uow:
        op = uow.session.get(ProvisioningOperation, op_id, with_for_update=True)
        if op is None or op.status not in ("pending", "running"):
            return
        svc = uow.session.get(Service, op.service_id)
        assert svc is not None
        ctx = owner_ctx(uow, runtime, vendor_of(uow.session, svc), "ProvisioningRun")
        op.attempts += 1
        op.started_at = op.lease_until = None
        fail_retryable(ctx, op, svc, f"internal error preparing the call: {type(exc).__name__}")
        uow.commit()


def _prepare(ctx: CallContext, op: ProvisioningOperation, svc: Service) -> _Claimed | None:
    now = ctx.now()
    caps = capabilities_of(svc)
    if caps is None or (svc.instance_id is None and svc.module not in BUILTIN_MODULES):
        to_manual(ctx, op, svc, f"no processing module instance for module {svc.module!r}")
        return None
    if op.action not in caps:
        if op.action in SKIPPABLE:
            skip(ctx, op, f"skipped: {svc.module} does not support {op.action}")
        else:
            to_manual(ctx, op, svc, f"{svc.module} does not support {op.action}")
        return None
    try:
        if svc.instance_id is not None:
            inst = ctx.session.get(PluginInstance, svc.instance_id)
            assert inst is not None
            module = module_object(ctx.secrets, inst, ctx.clock)
        else:
            with ctx.session.begin_nested():  # what a failing build wrote is undone
                module = BUILTIN_MODULES[svc.module].build(ctx, svc)
        request = build_request(ctx.session, op, svc)
    except PbaError as exc:
        op.attempts += 1
        fail_retryable(ctx, op, svc, f"cannot prepare the call: {exc}")
        return None
    except PluginError as exc:  # building the plugin: masked, or generic with a ref
        op.attempts += 1
        fail_retryable(ctx, op, svc, f"cannot prepare the call: {type(exc).__name__}: {exc}")
        return None
    except (ValueError, KeyError) as exc:
        op.attempts += 1
        fail_retryable(
            ctx, op, svc, plugincall.unexpected(log, f"operation {op.id}: preparing the call", exc)
        )
        return None
    op.status = "running"
    op.attempts += 1
    op.started_at = now
    op.lease_until = lease_until(ctx.clock)  # renewed while the call runs
    op.updated_at = now
    if op.action == "create" and svc.status == "pending":
        svc.status, svc.updated_at = "provisioning", now
    return _Claimed(op.id, op.attempts, module, request)


def call_module(
    module: ProcessingModule, request: ServiceRequest
) -> ModuleResult | NotSupported | NotCalled:
    """The call itself, outside any transaction. Never raises. What the
    tenant may read of a failure (the operation's message and log): an SDK
    exception's masked message (the guard masked it, or made it generic with a
    correlation id), never the text or class of anything else."""
    try:
        result = module.perform(request)
    except NotSupported as exc:
        return exc
    except PluginBusy as exc:  # not called: nothing happened at the platform
        log.info("operation %s: module not called: %s", request.key, exc)
        return NotCalled(str(exc), getattr(exc, "retry_after", None))
    except PluginError as exc:  # retry, with the message logged
        log.warning("operation %s: module raised %s: %s", request.key, type(exc).__name__, exc)
        return RetryableFailure(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug in a builtin module: retry, the detail in the log
        return RetryableFailure(
            plugincall.unexpected(log, f"operation {request.key}: the module call", exc)
        )
    if not isinstance(result, (Done, InProgress, RetryableFailure, FinalFailure)):
        return RetryableFailure(f"the module returned {type(result).__name__}, not a result")
    return result


# recording a result: a lost one leaves the operation running until the
# running timeout, so deadlocks, a full pool and dropped connections are
# retried, pausing up to 0.25, 0.5, 1, 2 s
RECORD_ATTEMPTS = 5
RECORD_BACKOFF_S = 0.25


def _record(engine: Engine, runtime: Runtime, claimed: _Claimed, result: Any) -> None:
    def record(uow: UnitOfWork) -> None:
        op = uow.session.get(
            ProvisioningOperation, claimed.op_id, with_for_update=True, populate_existing=True
        )
        assert op is not None
        if op.status != "running" or op.attempts != claimed.attempt:
            log.warning("operation %s: a newer attempt owns it; result dropped", op.id)
            return
        svc = uow.session.get(Service, op.service_id)
        assert svc is not None
        ctx = owner_ctx(uow, runtime, vendor_of(uow.session, svc), "ProvisioningRun")
        apply_result(ctx, op, svc, result)
        uow.commit()

    run_in_transaction(
        engine,
        record,
        attempts=RECORD_ATTEMPTS,
        backoff=RECORD_BACKOFF_S,
        what=f"operation {claimed.op_id}: recording the result",
        retry_unavailable=True,
    )


def apply_result(
    ctx: CallContext,
    op: ProvisioningOperation,
    svc: Service,
    result: ModuleResult | NotSupported | NotCalled,
) -> None:
    now = ctx.now()
    op.started_at = op.lease_until = None
    if isinstance(result, NotCalled):  # pending again soon; not a failure
        op.status = "pending"
        op.message = f"not called, will try again: {result.message}"[:4000]
        wait = max(BUSY_RETRY.total_seconds(), result.retry_after or 0)
        op.next_attempt_at = now + timedelta(seconds=min(wait, 3600))
        op.updated_at = now
        log_entry(ctx.session, op, "busy", op.message, now)
        bundle_progress(ctx, op.bundle_id)
    elif isinstance(result, NotSupported):
        if op.action in SKIPPABLE:
            skip(ctx, op, f"skipped: {result}")
        else:
            to_manual(ctx, op, svc, f"{svc.module}: {result}")
    elif isinstance(result, Done):
        op.message = None
        finish_done(ctx, op, svc, result)
    elif isinstance(result, InProgress):
        op.status = "pending"
        op.message = result.message[:4000] or "in progress"
        op.next_attempt_at = now + timedelta(seconds=min(max(1, result.poll_after), 86400))
        op.updated_at = now
        log_entry(ctx.session, op, "in_progress", op.message, now)
        builtin_result(ctx, svc, op.action, result)
        bundle_progress(ctx, op.bundle_id)
    elif isinstance(result, RetryableFailure):
        fail_retryable(ctx, op, svc, result.message or "retryable failure")
    else:
        log_entry(ctx.session, op, "final", result.message, now)
        finish_failed(ctx, op, svc, result.message or "final failure")


def run_pending(engine: Engine, runtime: Runtime, *, limit: int = 100) -> int:
    """Run due operations now (``runtime``: the app's settings, clock and
    secrets); returns how many were handled."""
    n = 0
    op = ProvisioningOperation
    while n < limit:
        found, claimed = _claim_one(engine, runtime)
        if not found:
            break
        n += 1
        if claimed is None:
            continue
        owned = (op.status == "running", op.attempts == claimed.attempt)
        with LeaseKeeper(engine, runtime.clock, op, claimed.op_id, *owned):
            result = call_module(claimed.module, claimed.request)
        try:
            _record(engine, runtime, claimed, result)
        except Exception:
            # left running: its lease expires and the next run retries it with
            # the same key
            log.exception("operation %s: recording the result failed", claimed.op_id)
    return n


def live_services_on(session: Session, instance_id: int) -> int:
    return int(
        session.scalar(
            select(func.count(Service.id)).where(
                Service.instance_id == instance_id,
                Service.status.not_in(("failed", "deleted")),
            )
        )
        or 0
    )
