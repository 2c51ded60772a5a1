"""The provisioning engine at the service layer (SQLite and PostgreSQL): the
call committed before the module hears of it, retries on the clock, manual
tasks, polling, crash recovery, bundles and their rollback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import users
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import InvalidState
from pba_server.events.models import Event
from pba_server.provisioning import api as prov
from pba_server.provisioning import engine
from pba_server.provisioning import service as ops
from pba_server.provisioning.models import ProvisioningOperation, Service
from pba_server.provisioning.registry import BUNDLE_HOOKS, BundleOutcome
from pba_server.provisioning.types import ServiceValue
from pba_server.sdk import PluginError
from pba_server.sdk.provisioning import (
    Done,
    FinalFailure,
    InProgress,
    RetryableFailure,
)
from tests.billing_support import customer
from tests.catalog_support import service_ctx
from tests.prov_support import (
    Computed,
    Script,
    fake_module,
    instance,
    plan,
    provision,
    run,
    subscribe,
)

__all__ = ["fake_module"]

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
def outcomes() -> Iterator[list[BundleOutcome]]:
    seen: list[BundleOutcome] = []

    def hook(ctx: Any, outcome: BundleOutcome) -> None:
        assert ctx.principal.via == "system"
        seen.append(outcome)

    BUNDLE_HOOKS.append(hook)
    yield seen
    BUNDLE_HOOKS.remove(hook)


@pytest.fixture
def setup(env: Any, fake_module: Script) -> dict[str, int]:
    env.clock.freeze(T0)
    with service_ctx(env) as ctx:
        dep = ops.department_create(ctx, name="Ops")
        tech = users.user_create(
            ctx,
            account_id=ctx.principal.account_id,
            login="tech",
            password="a-long-password-1",
            full_name="Tech",
            roles=["technical"],
        )
        ops.department_add_member(ctx, department_id=dep.id, user_id=tech.id)
    inst = instance(env, department_id=dep.id)
    return {
        "department": dep.id,
        "tech": tech.id,
        "instance": inst,
        "customer": customer(env),
        "version": plan(env),
    }


def _ops(env: Any, **where: Any) -> list[ProvisioningOperation]:
    with UnitOfWork(env.app.engine) as uow:
        q = select(ProvisioningOperation).order_by(ProvisioningOperation.id)
        for k, v in where.items():
            q = q.where(getattr(ProvisioningOperation, k) == v)
        rows = list(uow.session.scalars(q))
        uow.session.expunge_all()
        return rows


def _service(env: Any, subscription_id: int) -> Service:
    with UnitOfWork(env.app.engine) as uow:
        svc = uow.session.scalar(select(Service).where(Service.subscription_id == subscription_id))
        assert svc is not None
        uow.session.expunge_all()
        return svc


def _events(env: Any, kind: str) -> list[dict[str, Any]]:
    with UnitOfWork(env.app.engine) as uow:
        return [
            json.loads(e.payload)
            for e in uow.session.scalars(select(Event).where(Event.type == kind).order_by(Event.id))
        ]


def _state(env: Any, bundle_id: int) -> tuple[str, str | None]:
    with UnitOfWork(env.app.engine) as uow:
        return prov.bundle_state(uow.session, bundle_id)


def test_create_is_committed_before_the_call_and_activates_the_service(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"], {"hostname": "vm1.example.com"})
    bundle = provision(env, sub)
    (op,) = _ops(env)
    assert op.status == "pending" and op.action == "create" and fake_module.calls == []
    assert _service(env, sub).status == "pending"
    assert _state(env, bundle) == ("running", None)

    seen_during_call: list[str] = []

    def look(request: Any) -> Done:
        # the module is called outside any transaction: the running row is visible
        with UnitOfWork(env.app.engine) as uow:
            row = uow.session.get(ProvisioningOperation, int(request.key))
            seen_during_call.append(row.status)
        return Done(platform_id="vm-77", data={"ip": "192.0.2.7", "login_url": "https://cp"})

    fake_module.then("create", Computed(look))
    assert run(env) == 1
    assert seen_during_call == ["running"]
    (req,) = fake_module.calls
    assert req.key == str(op.id) and req.action == "create"
    assert req.parameters == {"hostname": "vm1.example.com"}
    assert req.module_settings == {"cluster": "fra"}
    assert req.limits == {"VPS disk": 20}
    assert req.service_type == "virtual_server" and req.template == "VPS"
    svc = _service(env, sub)
    assert svc.status == "active" and svc.platform_id == "vm-77"
    assert svc.instance_id == setup["instance"]
    assert json.loads(svc.data) == {"ip": "192.0.2.7", "login_url": "https://cp"}
    assert _ops(env)[0].status == "done"
    assert _state(env, bundle) == ("done", None)
    assert [(o.bundle_id, o.state, o.action, o.subscription_id) for o in outcomes] == [
        (bundle, "done", "create", sub)
    ]
    assert [e["subscription_id"] for e in _events(env, "service.provisioned")] == [sub]
    assert run(env) == 0  # nothing left, nothing called twice
    assert len(fake_module.calls) == 1


def test_retries_on_the_clock_then_a_manual_task_that_staff_complete(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    bundle = provision(env, sub)
    fake_module.then(
        "create",
        RetryableFailure("panel down"),
        PluginError("connection refused"),
        RetryableFailure("panel still down"),
    )
    assert run(env) == 1
    (op,) = _ops(env)
    assert (op.status, op.failures, op.next_attempt_at) == ("pending", 1, T0 + timedelta(minutes=5))
    assert _service(env, sub).status == "provisioning"
    env.clock.advance(timedelta(minutes=4, seconds=59))
    assert run(env) == 0
    env.clock.advance(timedelta(seconds=1))
    assert run(env) == 1
    assert _ops(env)[0].failures == 2
    env.clock.advance(timedelta(minutes=5))
    assert run(env) == 1
    (op,) = _ops(env)
    assert op.status == "manual" and op.failures == 3 and op.next_attempt_at is None
    env.clock.advance(timedelta(hours=1))
    assert run(env) == 0 and len(fake_module.calls) == 3
    (ev,) = _events(env, "operation.manual_task")
    assert ev["department"] == "Ops" and ev["operation_id"] == op.id
    assert "panel still down" in ev["error"]
    with service_ctx(env, "tech") as ctx:
        (task,) = ops.task_list(ctx, department_id=setup["department"], status="open").items
        assert task.operation_id == op.id and task.action == "create"
        assert ops.task_assign(ctx, task_id=task.id).assignee_id == setup["tech"]
        got = ops.operation_get(ctx, operation_id=op.id)
        assert [e.kind for e in got.log] == ["retryable", "retryable", "retryable", "manual"]
        assert "connection refused" in got.log[1].message
        done = ops.task_complete(
            ctx,
            task_id=task.id,
            data=[ServiceValue("platform_id", "vm-9"), ServiceValue("ip", "192.0.2.9")],
        )
        assert done.status == "completed"
        with pytest.raises(InvalidState):
            ops.task_complete(ctx, task_id=task.id, data=[])
    svc = _service(env, sub)
    assert svc.status == "active" and svc.platform_id == "vm-9"
    assert json.loads(svc.data) == {"ip": "192.0.2.9"}
    assert _state(env, bundle) == ("done", None)
    assert [o.state for o in outcomes] == ["done"]
    assert len(_events(env, "service.provisioned")) == 1


def test_in_progress_is_polled_with_the_same_key_and_is_no_failure(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    fake_module.then("create", InProgress(poll_after=120, message="building"), InProgress(30))
    assert run(env) == 1
    (op,) = _ops(env)
    assert (op.status, op.failures, op.next_attempt_at) == (
        "pending",
        0,
        T0 + timedelta(seconds=120),
    )
    env.clock.advance(timedelta(seconds=119))
    assert run(env) == 0
    env.clock.advance(timedelta(seconds=1))
    assert run(env) == 1
    env.clock.advance(timedelta(seconds=30))
    assert run(env) == 1
    assert {c.key for c in fake_module.calls} == {str(op.id)}
    (op,) = _ops(env)
    assert op.status == "done" and op.failures == 0 and op.attempts == 3
    assert _service(env, sub).status == "active"


def test_a_call_lost_with_its_process_is_made_again_with_the_same_key(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    # the process claims the operation (committed: running) and dies in the call
    found, claimed = engine._claim_one(env.app.engine, env.app.runtime)
    assert found and claimed is not None
    (op,) = _ops(env)
    assert op.status == "running" and op.attempts == 1
    env.clock.advance(timedelta(seconds=10))
    assert run(env) == 0  # its lease still holds: maybe running elsewhere, left alone
    env.clock.advance(timedelta(seconds=5))
    assert run(env) == 1  # the lease ran out (nobody renewed it): its process died
    (req,) = fake_module.calls
    assert req.key == claimed.request.key
    (op,) = _ops(env)
    assert op.status == "done" and op.attempts == 2
    assert _service(env, sub).status == "active"
    # the dead attempt's late answer is not recorded over the newer one
    engine._record(env.app.engine, env.app.runtime, claimed, FinalFailure("late"))
    assert _ops(env)[0].status == "done" and _service(env, sub).status == "active"
    with service_ctx(env) as ctx:
        kinds = [e.kind for e in ops.operation_get(ctx, operation_id=op.id).log]
    assert kinds == ["crashed"]


def test_a_bundle_that_fails_half_way_is_rolled_back(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    first = subscribe(env, setup["customer"], setup["version"])
    second = subscribe(env, setup["customer"], setup["version"])
    bundle = provision(env, first, second, order_id=4711)
    fake_module.then("create", Done(platform_id="vm-1"), FinalFailure("no such OS image"))
    fake_module.then("delete", RetryableFailure("busy"))
    run(env)
    assert fake_module.actions() == ["create", "create", "delete"]
    assert _service(env, first).status == "active"  # its delete is retried
    assert _service(env, second).status == "failed"
    assert _state(env, bundle) == ("running", None)
    assert outcomes == []
    env.clock.advance(timedelta(minutes=5))
    assert run(env) == 1
    assert fake_module.calls[-1].action == "delete" and fake_module.calls[-1].platform_id == "vm-1"
    assert _service(env, first).status == "deleted"
    assert _state(env, bundle) == ("failed", "no such OS image")
    (o,) = outcomes
    assert (o.state, o.order_id, o.subscription_id, o.reason) == (
        "failed",
        4711,
        None,
        "no such OS image",
    )
    rollbacks = _ops(env, rollback=True)
    assert [(r.action, r.status, r.service_id) for r in rollbacks] == [
        ("delete", "done", _service(env, first).id)
    ]
    assert [e["error"] for e in _events(env, "service.failed")] == ["no such OS image"]


def test_a_rejected_task_fails_the_bundle_and_cancels_what_waits(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    a = subscribe(env, setup["customer"], setup["version"])
    b = subscribe(env, setup["customer"], setup["version"])
    bundle = provision(env, a, b, order_id=9)
    down = RetryableFailure("down")
    fake_module.then("create", down, Done(platform_id="vm-b"), down, down)
    # the first goes manual after three failures; the second fails after it
    run(env)
    env.clock.advance(timedelta(minutes=5))
    run(env)
    env.clock.advance(timedelta(minutes=5))
    run(env)
    statuses = [o.status for o in _ops(env)]
    assert statuses == ["manual", "done"]
    with service_ctx(env) as ctx:
        (task,) = ops.task_list(ctx, status="open").items
        ops.task_reject(ctx, task_id=task.id, reason="customer data invalid")
    run(env)  # the rollback delete of the created one
    assert _service(env, a).status == "failed"
    assert _service(env, b).status == "deleted"
    assert _state(env, bundle) == ("failed", "rejected: customer data invalid")
    assert [o.state for o in outcomes] == ["failed"]


def test_disabled_instance_takes_no_new_services_but_keeps_syncing(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    run(env)
    svc = _service(env, sub)
    with service_ctx(env) as ctx:
        info = ops.processing_module_disable(ctx, instance_id=setup["instance"])
        assert info.status == "disabled" and info.services == 1
    fake_module.then("sync", Done(data={"state": "running"}))
    with service_ctx(env) as ctx:
        op = ops.service_sync(ctx, service_id=svc.id)
    assert run(env) == 1
    assert fake_module.calls[-1].action == "sync"
    assert json.loads(_service(env, sub).data)["state"] == "running"
    assert _ops(env)[-1].status == "done" and _ops(env)[-1].id == op.id
    # a new service finds no instance: a manual task, not a lost order
    other = subscribe(env, setup["customer"], setup["version"])
    provision(env, other)
    assert run(env) == 1
    assert _service(env, other).instance_id is None
    last = _ops(env)[-1]
    assert last.status == "manual" and "no processing module instance" in (last.message or "")
    assert len(fake_module.calls) == 2


def test_max_services_and_use_for_new_orders_choose_the_instance(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    instance(env, "fra-1", department_id=setup["department"], max_services=1)
    closed = instance(env, "old", use_for_new_orders=False)
    second = instance(env, "fra-2", max_services=1)
    subs = [subscribe(env, setup["customer"], setup["version"]) for _ in range(3)]
    for s in subs:
        provision(env, s)
    got = [_service(env, s).instance_id for s in subs]
    assert got == [setup["instance"], second, None]
    assert closed not in got
    run(env)
    assert [_service(env, s).status for s in subs] == ["active", "active", "pending"]
    with service_ctx(env) as ctx:
        listed = {m.instance_id: m for m in ops.processing_module_list(ctx).items}
    assert listed[second].services == 1 and listed[second].max_services == 1
    assert listed[closed].use_for_new_orders is False


def test_actions_unsupported_become_tasks_and_prolong_is_skipped(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    manual_version = plan(env, module="manual", name="Managed")
    instance(env, "by-hand", plugin="manual", settings={}, department_id=setup["department"])
    sub = subscribe(env, setup["customer"], manual_version)
    provision(env, sub)
    assert run(env) == 1
    (op,) = _ops(env)
    assert op.status == "manual"
    with service_ctx(env) as ctx:
        (task,) = ops.task_list(ctx, status="open").items
        ops.task_complete(ctx, task_id=task.id, data=[ServiceValue("login", "u1")])
    assert _service(env, sub).status == "active"
    with UnitOfWork(env.app.engine) as uow:
        ctx = _sys(uow, env)
        assert prov.request_action(ctx, sub, "prolong", until=T0.date()) is None
        suspend_bundle = prov.request_action(ctx, sub, "suspend", reason="dunning")
        uow.commit()
    assert suspend_bundle is not None
    run(env)
    with service_ctx(env) as ctx:
        (task,) = ops.task_list(ctx, status="open").items
        assert task.action == "suspend"
        ops.task_complete(ctx, task_id=task.id, data=[])
    assert _service(env, sub).status == "suspended"
    assert _state(env, suspend_bundle) == ("done", None)
    # the fake module does not support 'change': a task too
    fsub = subscribe(env, setup["customer"], setup["version"])
    provision(env, fsub)
    run(env)
    with UnitOfWork(env.app.engine) as uow:
        bid = prov.request_action(_sys(uow, env), fsub, "change")
        uow.commit()
    run(env)
    assert _ops(env, bundle_id=bid)[0].status == "manual"
    assert "change" not in fake_module.actions()


def test_final_failure_of_a_suspend_fails_its_bundle_and_leaves_the_service(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    run(env)
    fake_module.then("suspend", FinalFailure("locked by the panel"))
    with UnitOfWork(env.app.engine) as uow:
        bid = prov.request_action(_sys(uow, env), sub, "suspend")
        uow.commit()
    assert bid is not None
    run(env)
    assert _state(env, bid) == ("failed", "locked by the panel")
    assert _service(env, sub).status == "active"
    assert [(o.action, o.state) for o in outcomes] == [("create", "done"), ("suspend", "failed")]
    # a failed operation can be retried by staff; it then succeeds
    op = _ops(env, bundle_id=bid)[0]
    with service_ctx(env) as ctx:
        assert ops.operation_retry(ctx, operation_id=op.id).status == "pending"
    run(env)
    assert _service(env, sub).status == "suspended"


def test_a_module_that_raises_or_answers_nonsense_is_retried(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    fake_module.then("create", ValueError("bug"), "nonsense")
    run(env)
    env.clock.advance(timedelta(minutes=5))
    run(env)
    env.clock.advance(timedelta(minutes=5))
    run(env)
    (op,) = _ops(env)
    assert op.status == "done" and op.failures == 2
    with service_ctx(env) as ctx:
        log = ops.operation_get(ctx, operation_id=op.id).log
    # the tenant's log has a correlation id, never the exception's text or class
    assert "ValueError" not in log[0].message and "ref " in log[0].message
    assert "bug" not in log[0].message
    assert "not a result" in log[1].message


def test_usage_from_sync_goes_to_the_usage_sinks(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    from decimal import Decimal

    from pba_server.provisioning.registry import USAGE_SINKS

    got: list[tuple[int, dict[str, Decimal]]] = []
    USAGE_SINKS.append(lambda ctx, sid, usage, at: got.append((sid, usage)))
    try:
        sub = subscribe(env, setup["customer"], setup["version"])
        provision(env, sub)
        run(env)
        fake_module.then("sync", Done(usage={"VPS disk": Decimal("12.5")}))
        svc_id = _service(env, sub).id
        with service_ctx(env) as ctx:
            ops.service_sync(ctx, service_id=svc_id)
        run(env)
    finally:
        USAGE_SINKS.pop()
    assert got == [(sub, {"VPS disk": Decimal("12.5")})]


def _sys(uow: UnitOfWork, env: Any) -> Any:
    from pba_server.accounts.models import Account
    from pba_server.core.context import system_context

    acc = uow.session.scalar(select(Account).where(Account.type == "provider"))
    return system_context(
        uow,
        env.clock,
        account_id=acc.id,
        account_path=acc.path,
        operation="test",
        runtime=env.app.runtime,
    )


def test_a_create_still_being_retried_is_cancelled_and_deleted_in_a_rollback(
    env: Any, setup: dict[str, int], fake_module: Script, outcomes: list[BundleOutcome]
) -> None:
    a = subscribe(env, setup["customer"], setup["version"])
    b = subscribe(env, setup["customer"], setup["version"])
    c = subscribe(env, setup["customer"], setup["version"])
    provision(env, a, b, c, order_id=77)
    # a: timed out (maybe half-made on the platform); b: refused; c: never called yet
    fake_module.then("create", RetryableFailure("timeout"), FinalFailure("quota exceeded"))
    assert engine.run_pending(env.app.engine, env.app.runtime, limit=2) == 2
    by_sub = {s: _service(env, s) for s in (a, b, c)}
    creates = {o.service_id: o for o in _ops(env, action="create")}
    assert [creates[by_sub[s].id].status for s in (a, b, c)] == ["failed", "failed", "failed"]
    deletes = _ops(env, rollback=True)
    assert [d.service_id for d in deletes] == [by_sub[a].id]  # not b (refused), not c
    run(env)
    assert [_service(env, s).status for s in (a, b, c)] == ["deleted", "failed", "failed"]
    assert [(o.state, o.reason) for o in outcomes] == [("failed", "quota exceeded")]
    assert fake_module.actions() == ["create", "create", "delete"]
    # the order failed: its creates cannot be retried
    with service_ctx(env) as ctx, pytest.raises(InvalidState):
        ops.operation_retry(ctx, operation_id=creates[by_sub[b].id].id)


def test_each_operation_runs_once_with_several_workers(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    import threading
    import time

    subs = [subscribe(env, setup["customer"], setup["version"]) for _ in range(8)]
    for s in subs:
        provision(env, s)

    def slow(request: Any) -> Done:
        time.sleep(0.05)  # a platform call; the workers overlap
        return Done(platform_id=f"vm-{request.service_id}")

    fake_module.then("create", *[Computed(slow)] * 8)
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            counts.append(run(env))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(counts) == 8
    keys = [c.key for c in fake_module.calls]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert all(_service(env, s).status == "active" for s in subs)


def test_the_job_and_the_worker_thread_run_operations(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    import time

    from pba_server.provisioning import runtime
    from pba_server.scheduler.jobs import run_due

    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    job = env.app.jobs["provisioning-run"]
    assert job.interval == timedelta(seconds=30)
    assert run_due(env.app.engine, env.app.runtime, {job.name: job}) == [job.name]
    assert _service(env, sub).status == "active"

    # the worker thread is woken by the commit that creates operations
    env.clock.frozen = False
    runtime.start(env.app.engine, env.app.runtime, idle_seconds=3600)
    try:
        other = subscribe(env, setup["customer"], setup["version"])
        provision(env, other)
        deadline = time.monotonic() + 10
        while _service(env, other).status != "active" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _service(env, other).status == "active"
    finally:
        runtime.stop(env.app.engine)


def test_a_builtin_module_is_built_in_the_claim_and_told_every_result(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    from pba_server.provisioning.registry import BUILTIN_MODULES, BuiltinModule, register_builtin

    built: list[tuple[str, int]] = []
    results: list[tuple[str, str]] = []

    def build(ctx: Any, svc: Any) -> Any:
        built.append((ctx.principal.via, svc.id))
        from tests.prov_support import FakeModule

        return FakeModule({"url": "builtin"})

    def on_result(ctx: Any, svc: Any, action: str, result: Any) -> None:
        results.append((action, result.status))

    register_builtin(BuiltinModule("test_builtin", frozenset({"create"}), build, on_result))
    try:
        version = plan(env, module="test_builtin", name="Builtin")
        sub = subscribe(env, setup["customer"], version)
        provision(env, sub)
        svc = _service(env, sub)
        assert svc.instance_id is None and svc.module == "test_builtin"
        fake_module.then("create", RetryableFailure("registry busy"))
        run(env)
        env.clock.advance(timedelta(minutes=5))
        run(env)
        assert built == [("system", svc.id)] * 2
        assert results == [("create", "retryable"), ("create", "done")]
        assert _service(env, sub).status == "active"
        with UnitOfWork(env.app.engine) as uow:
            prov.request_action(_sys(uow, env), sub, "suspend")
            uow.commit()
        run(env)
        assert _ops(env)[-1].status == "manual"  # not among its capabilities
    finally:
        BUILTIN_MODULES.pop("test_builtin", None)


CRASHER = """
import os, sys
from sqlalchemy import select
from pba_server.config import Settings
from pba_server.core.clock import SystemClock
from pba_server.core.runtime import Runtime
from pba_server.core.db import make_engine
from pba_server.core.secrets import SecretBox
from pba_server.provisioning.engine import run_pending
from pba_server.sdk import loader
from tests.prov_support import FakeModule

class Dies(FakeModule):
    def perform(self, request):
        os._exit(86)  # the process dies while the platform works

box = SecretBox(sys.argv[2].encode())
loader.set_plugins([loader.LoadedPlugin("fake_prov", "test", "ok", cls=Dies)])
run_pending(make_engine(sys.argv[1]), Runtime(Settings(), SystemClock(), box))
"""


def test_a_server_process_that_dies_mid_call_loses_nothing(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env.clock.frozen = False  # the other process uses the real clock
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHER,
            env.app.engine.url.render_as_string(hide_password=False),
            env.app.settings.secret_key,
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 86, proc.stderr
    (op,) = _ops(env)
    assert op.status == "running" and op.attempts == 1
    assert run(env) == 0
    env.clock.freeze(datetime.now(UTC) + timedelta(minutes=31))
    assert run(env) == 1
    (req,) = fake_module.calls
    assert req.key == str(op.id)
    assert _ops(env)[0].status == "done" and _service(env, sub).status == "active"


def test_a_broken_operation_does_not_block_the_queue(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    from pba_server.provisioning.registry import BUILTIN_MODULES, BuiltinModule, register_builtin

    def build(ctx: Any, svc: Any) -> Any:
        raise RuntimeError("bug in the builtin")

    register_builtin(BuiltinModule("broken_builtin", frozenset({"create"}), build))
    try:
        broken = subscribe(env, setup["customer"], plan(env, module="broken_builtin", name="B"))
        good = subscribe(env, setup["customer"], setup["version"])
        provision(env, broken)
        provision(env, good)
        assert run(env) == 2
        assert _service(env, good).status == "active"
        first = _ops(env)[0]
        assert (first.status, first.failures) == ("pending", 1)
        for _ in range(2):
            env.clock.advance(timedelta(minutes=5))
            run(env)
        assert _ops(env)[0].status == "manual"
        assert "RuntimeError" in (_ops(env)[0].message or "")
    finally:
        BUILTIN_MODULES.pop("broken_builtin", None)


HANGER = """
import sys, time
from pba_server.config import Settings
from pba_server.core.clock import SystemClock
from pba_server.core.db import make_engine
from pba_server.core.runtime import Runtime
from pba_server.core.secrets import SecretBox
from pba_server.provisioning.engine import run_pending
from pba_server.sdk import loader
from tests.prov_support import FakeModule

class Hangs(FakeModule):
    def perform(self, request):
        print("calling", flush=True)
        time.sleep(600)  # the platform works; the process is killed meanwhile

loader.set_plugins([loader.LoadedPlugin("fake_prov", "test", "ok", cls=Hangs)])
box = SecretBox(sys.argv[2].encode())
run_pending(make_engine(sys.argv[1]), Runtime(Settings(), SystemClock(), box))
"""


def test_an_operation_cut_off_by_kill_9_is_recovered_within_seconds(
    env: Any, setup: dict[str, int], fake_module: Script
) -> None:
    """kill -9 of a real process mid-call (PostgreSQL: the row is claimed with
    FOR UPDATE SKIP LOCKED): the operation's lease runs out and the next run
    claims it again, well under a minute after the kill (it waited the
    30-minute running timeout before leases)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from pba_server.core.leases import LEASE

    env.clock.frozen = False  # the other process uses the real clock
    sub = subscribe(env, setup["customer"], setup["version"])
    provision(env, sub)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HANGER,
            env.app.engine.url.render_as_string(hide_password=False),
            env.app.settings.secret_key,
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "calling"
        time.sleep(LEASE.total_seconds() / 3 + 1)  # it renewed its lease at least once
        (op,) = _ops(env)
        assert op.status == "running" and op.lease_until is not None
        assert run(env) == 0  # leased: its worker is alive, left alone
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    killed = time.monotonic()
    while run(env) == 0:  # what the worker thread does every few seconds
        assert time.monotonic() - killed < 60, "not recovered within a minute"
        time.sleep(0.5)
    recovered = time.monotonic() - killed
    old = engine.Tuning().running_timeout.total_seconds()
    print(
        f"\nprovisioning recovery after kill -9: {recovered:.1f} s with leases "
        f"(before: the {old:.0f} s running timeout, + up to 30 s job cycle)"
    )
    assert recovered < 60
    (req,) = fake_module.calls
    (op,) = _ops(env)
    assert req.key == str(op.id)
    assert op.status == "done" and op.attempts == 2 and _service(env, sub).status == "active"
    with service_ctx(env) as ctx:
        kinds = [e.kind for e in ops.operation_get(ctx, operation_id=op.id).log]
    assert kinds == ["crashed"]
