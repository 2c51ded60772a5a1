"""Manual tasks of the domains feature through the real SOAP and XML-RPC
endpoints (both protocols, both databases): the registrar balance monitor's
task for its department, and a domain's deletion done by a person, side by
side in TaskList."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import tree, users
from pba_server.accounts.models import Account
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.domains import jobs as domain_jobs
from pba_server.events.models import Event
from pba_server.provisioning import api as prov
from pba_server.sdk import loader
from tests import domains_support as ds
from tests.catalog_support import Caller, service_ctx
from tests.support import page_items

PW = "a-long-password-1"
PRICES = [{"years": 1, "register": Decimal("12.00"), "renew": Decimal("10.00")}]


@pytest.fixture(params=["soap", "xmlrpc"])
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


def _items(value: Any) -> list[Any]:
    return list(value or [])


def _values(items: Any) -> dict[str, str]:
    return {i["name"]: i["value"] for i in _items(items)}


def _sandbox(call: Caller) -> tuple[int, str]:
    registry = f"api-{uuid.uuid4().hex[:8]}"
    inst = call(
        "PluginConfigure",
        plugin="sandbox_registrar",
        name="registrar",
        settings=[{"name": "registry", "value": registry}],
    )
    return int(inst["id"]), registry


def _tech(env: Any) -> int:
    with service_ctx(env) as ctx:
        return users.user_create(
            ctx,
            account_id=ctx.principal.account_id,
            login="tech",
            password=PW,
            full_name="T",
            roles=["technical"],
        ).id


def _balance_job(env: Any, day: int) -> None:
    env.clock.freeze(datetime(2030, 1, day, 6, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()


def _event_types(env: Any) -> list[str]:
    with UnitOfWork(env.app.engine) as uow:
        return list(uow.session.scalars(select(Event.type).order_by(Event.id)))


def test_low_balance_task_for_the_department(call: Caller, env: Any, api: Any) -> None:
    tech = _tech(env)
    inst, _ = _sandbox(call)
    dep = call("DepartmentCreate", name="Registrars")
    call("DepartmentAddMember", department_id=dep["id"], user_id=tech)
    m = call(
        "RegistrarBalanceMinimumSet",
        instance_id=inst,
        minimum=Decimal("2000"),
        currency="USD",
        department_id=dep["id"],
    )
    assert m["department_id"] == dep["id"]
    (listed,) = page_items(call("RegistrarMonitorList"))
    assert listed["department_id"] == dep["id"]
    _balance_job(env, 1)
    _balance_job(env, 2)  # still low: no second task
    (t,) = page_items(call("TaskList", kind="registrar_balance"))
    assert (t["kind"], t["status"], t["department_id"], t["instance_id"]) == (
        "registrar_balance",
        "open",
        dep["id"],
        inst,
    )
    for name in ("operation_id", "action", "service_id", "subscription_id", "account_id"):
        assert t.get(name) is None, name
    assert "top up" in t["subject"] and "below the minimum" in t["reason"]
    types = _event_types(env)
    assert types.count("registrar.balance_low") == 2 and types.count("task.opened") == 1
    assert [x["id"] for x in page_items(call("TaskList", department_id=dep["id"]))] == [t["id"]]
    assert page_items(call("TaskList", kind="operation")) == []

    techie = Caller(api, call.protocol, "tech", PW)
    assigned = techie("TaskAssign", task_id=t["id"])
    assert (assigned["status"], assigned["assignee_id"]) == ("assigned", tech)
    done = techie("TaskComplete", task_id=t["id"], data=[{"name": "amount", "value": "500"}])
    assert done["status"] == "completed" and _values(done["result"]) == {"amount": "500"}
    code, _ = techie.fault("TaskReject", task_id=t["id"], reason="too late")
    assert code == "Client.InvalidState"
    _balance_job(env, 3)  # the last one is closed: a new one
    tasks = page_items(call("TaskList", kind="registrar_balance", status="open"))
    assert len(tasks) == 1 and tasks[0]["id"] != t["id"]
    rejected = call("TaskReject", task_id=tasks[0]["id"], reason="paid by wire")
    assert (rejected["status"], rejected["reject_reason"]) == ("rejected", "paid by wire")

    # a department of another account is refused
    with service_ctx(env) as ctx:
        res = tree.account_create(ctx, type="reseller", name="Resell", partner_level="basic")
    other = call("DepartmentCreate", name="Theirs", account_id=res.id)
    code, message = call.fault(
        "RegistrarBalanceMinimumSet",
        instance_id=inst,
        minimum=Decimal("2000"),
        currency="USD",
        department_id=other["id"],
    )
    assert code == "Client.Validation" and message.startswith("department_id")


def _subscribe_domain(env: Any, plan_id: int, account_id: int, name: str) -> int:
    from pba_server.catalog.models import PlanVersion
    from pba_server.subscriptions.store import new_subscription

    with UnitOfWork(env.app.engine) as uow:
        version = uow.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == plan_id))
        assert version is not None
        acc = uow.session.get(Account, account_id)
        assert acc is not None and acc.parent_id is not None
        sub = new_subscription(
            uow.session,
            env.clock,
            account_id=account_id,
            vendor_id=acc.parent_id,
            plan_version_id=version,
            period_count=1,
            period_unit="year",
            start=env.clock.now().date(),
            parameters={"domain": name},
        )
        vendor = uow.session.get(Account, acc.parent_id)
        assert vendor is not None
        ctx = system_context(
            uow,
            env.clock,
            account_id=vendor.id,
            account_path=vendor.path,
            operation="test",
            runtime=env.app.runtime,
        )
        prov.provision_subscription(ctx, sub.id)
        uow.commit()
        return sub.id


def test_a_domain_deleted_by_a_person(call: Caller, env: Any) -> None:
    env.clock.freeze(datetime(2026, 11, 22, 10, tzinfo=UTC))
    inst, registry = _sandbox(call)
    tld = call("TldCreate", name="test", instance_id=inst, prices=PRICES)
    customer = ds.customer(env)
    sub = _subscribe_domain(env, tld["plan_id"], customer, "bye.test")
    prov.run_pending(env.app.engine, env.app.runtime)
    (d,) = _items(call("DomainList", subscription_id=sub)["items"])
    assert (d["name"], d["status"]) == ("bye.test", "active")
    with UnitOfWork(env.app.engine) as uow:
        vendor = uow.session.scalar(select(Account).where(Account.type == "provider"))
        assert vendor is not None
        ctx = system_context(
            uow,
            env.clock,
            account_id=vendor.id,
            account_path=vendor.path,
            operation="test",
            runtime=env.app.runtime,
        )
        prov.request_action(ctx, sub, "delete", reason="cancelled")
        uow.commit()
    prov.run_pending(env.app.engine, env.app.runtime)
    (t,) = page_items(call("TaskList", status="open"))
    assert (t["kind"], t["action"], t["subscription_id"], t["account_id"]) == (
        "operation",
        "delete",
        sub,
        customer,
    )
    assert t["subject"].startswith("delete service")
    done = call("TaskComplete", task_id=t["id"])
    assert done["status"] == "completed"
    d = call("DomainGet", domain_id=d["id"])
    assert d["status"] == "deleted"
    (svc,) = page_items(call("ServiceList", subscription_id=sub))
    assert svc["status"] == "deleted"
    state = loader.plugins()["sandbox_registrar"].cls.state(registry)
    assert "bye.test" in state.domains  # the registry is the person's job
