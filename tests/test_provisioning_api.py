"""Provisioning through the real SOAP and XML-RPC endpoints (each test on both
protocols and both databases): module instances, departments, services,
operations, manual tasks, scope; and story 6 of PRODUCT.md end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pba_server.accounts import tree, users
from pba_server.accounts.types import ContactInput
from pba_server.notify import handlers
from pba_server.notify.delivery import Deliverer, MailSettings
from pba_server.sdk.provisioning import FinalFailure, RetryableFailure
from tests.catalog_support import Caller, service_ctx
from tests.event_receivers import SmtpReceiver
from tests.prov_support import Script, fake_module, plan, provision, run, subscribe
from tests.support import page_items

__all__ = ["fake_module"]

PW = "a-long-password-1"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["soap", "xmlrpc"])
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


def _items(value: Any) -> list[Any]:
    return list(value or [])


def _values(items: Any) -> dict[str, str]:
    return {i["name"]: i["value"] for i in _items(items)}


def _people(env: Any) -> dict[str, int]:
    """A technician and a support user at the provider, a reseller with its own
    admin, and a customer (with a billing contact and a user)."""
    with service_ctx(env) as ctx:
        me = ctx.principal.account_id
        ids = {
            "provider": me,
            "tech": users.user_create(
                ctx, account_id=me, login="tech", password=PW, full_name="T", roles=["technical"]
            ).id,
            "support": users.user_create(
                ctx, account_id=me, login="supp", password=PW, full_name="S", roles=["support"]
            ).id,
        }
        res = tree.account_create(ctx, type="reseller", name="Resell", partner_level="basic")
        users.user_create(
            ctx, account_id=res.id, login="resell", password=PW, full_name="R", roles=["admin"]
        )
        cust = tree.account_create(
            ctx,
            type="customer_personal",
            name="Carla Customer",
            contacts=[ContactInput("billing", "Carla", "carla@cust.test")],
        )
        users.user_create(
            ctx, account_id=cust.id, login="carla", password=PW, full_name="C", roles=["admin"]
        )
        ids.update(reseller=res.id, customer=cust.id)
        return ids


def test_departments_and_module_instances(
    env: Any, call: Caller, api: Any, fake_module: Script
) -> None:
    ids = _people(env)
    dep = call("DepartmentCreate", name="Hosting ops")
    assert dep["name"] == "Hosting ops" and _items(dep["member_user_ids"]) == []
    code, msg = call.fault("DepartmentCreate", name="Hosting ops")
    assert code == "Client.Validation" and msg.startswith("name:")
    for _ in range(2):  # adding a member twice keeps one membership
        dep = call("DepartmentAddMember", department_id=dep["id"], user_id=ids["tech"])
    dep = call("DepartmentAddMember", department_id=dep["id"], user_id=ids["support"])
    assert sorted(dep["member_user_ids"]) == sorted([ids["tech"], ids["support"]])
    dep = call("DepartmentRemoveMember", department_id=dep["id"], user_id=ids["support"])
    assert _items(dep["member_user_ids"]) == [ids["tech"]]
    code, _ = call.fault("DepartmentRemoveMember", department_id=dep["id"], user_id=ids["support"])
    assert code == "Client.NotFound"
    (listed,) = page_items(call("DepartmentList"))
    assert listed["id"] == dep["id"]

    inst = call(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="fra-1",
        settings=[{"name": "url", "value": "https://panel"}, {"name": "password", "value": "s3"}],
        department_id=dep["id"],
        max_services=2,
        use_for_new_orders=True,
    )
    assert inst["department_id"] == dep["id"] and inst["max_services"] == 2
    assert _values(inst["settings"]) == {"url": "https://panel"}  # never the secret
    assert _items(inst["secret_settings_set"]) == ["password"]
    assert inst["status"] == "active" and inst["services"] == 0
    again = call(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="fra-1",
        settings=[{"name": "url", "value": "https://panel2"}],
        use_for_new_orders=False,
    )
    assert again["instance_id"] == inst["instance_id"] and again["max_services"] is None
    assert again["use_for_new_orders"] is False
    code, msg = call.fault(
        "ProcessingModuleConfigure",
        plugin="offline",
        name="x",
        settings=[{"name": "instructions", "value": "IBAN"}],
    )
    assert code == "Client.Validation" and "not a processing module" in msg
    code, _ = call.fault(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="y",
        settings=[{"name": "password", "value": "x"}],
    )
    assert code == "Client.Validation"  # url is required
    (listed,) = page_items(call("ProcessingModuleList"))
    assert listed["instance_id"] == inst["instance_id"] and listed["plugin"] == "fake_prov"
    off = call("ProcessingModuleDisable", instance_id=inst["instance_id"])
    assert off["status"] == "disabled"

    # a reseller sees none of it; a customer may not ask
    reseller = Caller(api, call.protocol, "resell", PW)
    assert page_items(reseller("ProcessingModuleList")) == []
    assert page_items(reseller("DepartmentList")) == []
    code, _ = reseller.fault("ProcessingModuleDisable", instance_id=inst["instance_id"])
    assert code == "Client.NotFound"
    code, _ = reseller.fault("DepartmentAddMember", department_id=dep["id"], user_id=ids["tech"])
    assert code == "Client.NotFound"
    carla = Caller(api, call.protocol, "carla", PW)
    code, _ = carla.fault("DepartmentList")
    assert code == "Client.Forbidden"
    code, _ = carla.fault(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="mine",
        settings=[{"name": "url", "value": "https://x"}],
    )
    assert code == "Client.Forbidden"


def test_story_6_retried_then_a_task_staff_complete_and_the_welcome_mail(
    env: Any, call: Caller, api: Any, fake_module: Script, smtp: SmtpReceiver
) -> None:
    env.clock.freeze(T0)
    ids = _people(env)
    dep = call("DepartmentCreate", name="Ops")
    call("DepartmentAddMember", department_id=dep["id"], user_id=ids["tech"])
    inst = call(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="fra-1",
        settings=[{"name": "url", "value": "https://panel"}],
        department_id=dep["id"],
    )
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx,
            name="welcome",
            event_types=["service.provisioned"],
            action="email",
            contact_kind="billing",
        )
    sub = subscribe(env, ids["customer"], plan(env))
    provision(env, sub)
    fake_module.then("create", *[RetryableFailure("panel unreachable")] * 3)
    for _ in range(3):
        assert run(env) == 1
        env.clock.advance(timedelta(minutes=5))
    assert run(env) == 0

    (op,) = page_items(call("OperationList", status="manual"))
    assert op["action"] == "create" and op["failures"] == 3 and op["subscription_id"] == sub
    assert op["instance_id"] == inst["instance_id"] and op["task_id"] is not None
    full = call("OperationGet", operation_id=op["id"])
    assert [e["kind"] for e in full["log"]] == ["retryable"] * 3 + ["manual"]
    assert "panel unreachable" in full["log"][0]["message"]
    assert page_items(call("OperationList", status="pending")) == []
    assert [o["id"] for o in page_items(call("OperationList", subscription_id=sub))] == [op["id"]]

    tech = Caller(api, call.protocol, "tech", PW)
    (task,) = page_items(tech("TaskList", department_id=dep["id"], status="open"))
    assert task["operation_id"] == op["id"] and task["account_id"] == ids["customer"]
    code, _ = tech.fault("TaskAssign", task_id=task["id"], user_id=ids["support"])
    assert code == "Client.Validation"  # not in the department
    task = tech("TaskAssign", task_id=task["id"])
    assert task["status"] == "assigned" and task["assignee_id"] == ids["tech"]
    assert [t["id"] for t in page_items(tech("TaskList", assignee_id=ids["tech"]))] == [task["id"]]
    svc = page_items(call("ServiceList", subscription_id=sub))[0]
    assert svc["status"] == "provisioning"
    done = tech(
        "TaskComplete",
        task_id=task["id"],
        data=[
            {"name": "platform_id", "value": "vm-1001"},
            {"name": "ip", "value": "192.0.2.44"},
            {"name": "login_url", "value": "https://cp.example/vm-1001"},
        ],
    )
    assert done["status"] == "completed"
    assert _values(done["result"])["ip"] == "192.0.2.44"
    svc = call("ServiceGet", service_id=svc["id"])
    assert svc["status"] == "active" and svc["platform_id"] == "vm-1001"
    assert _values(svc["data"]) == {"ip": "192.0.2.44", "login_url": "https://cp.example/vm-1001"}
    assert page_items(call("ServiceList", status="active"))[0]["id"] == svc["id"]
    # the customer sees its service (not the operations behind it)
    carla = Caller(api, call.protocol, "carla", PW)
    assert carla("ServiceGet", service_id=svc["id"])["status"] == "active"
    code, _ = carla.fault("OperationList")
    assert code == "Client.Forbidden"

    d = Deliverer(
        env.app.engine,
        env.clock,
        env.app.secrets,
        MailSettings("127.0.0.1", smtp.port, sender="noreply@provider.test"),
    )
    while d.run_once():
        pass
    (mail,) = smtp.mails
    assert mail.recipients == ["carla@cust.test"]
    assert mail.message["Subject"] == "Your service is ready"


def test_sync_retry_reject_and_scope(env: Any, call: Caller, api: Any, fake_module: Script) -> None:
    env.clock.freeze(T0)
    ids = _people(env)
    call(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="fra-1",
        settings=[{"name": "url", "value": "https://panel"}],
    )
    version = plan(env)
    first = subscribe(env, ids["customer"], version)
    provision(env, first)
    run(env)
    (svc,) = page_items(call("ServiceList", account_id=ids["customer"]))
    assert svc["status"] == "active" and svc["platform_id"] == f"p-{svc['id']}"

    fake_module.then("sync", FinalFailure("no such VM"))
    sync = call("ServiceSync", service_id=svc["id"])
    assert sync["action"] == "sync" and sync["status"] == "pending"
    run(env)
    failed = call("OperationGet", operation_id=sync["id"])
    assert failed["status"] == "failed" and failed["message"] == "no such VM"
    retried = call("OperationRetry", operation_id=sync["id"])
    assert retried["status"] == "pending" and retried["failures"] == 0
    run(env)
    assert call("OperationGet", operation_id=sync["id"])["status"] == "done"
    code, _ = call.fault("OperationRetry", operation_id=sync["id"])
    assert code == "Client.InvalidState"

    # a second service whose create goes to a person, who cannot do it
    second = subscribe(env, ids["customer"], version)
    provision(env, second)
    fake_module.then("create", *[RetryableFailure("down")] * 3)
    for _ in range(3):
        run(env)
        env.clock.advance(timedelta(minutes=5))
    (task,) = page_items(call("TaskList", status="open"))
    code, _ = call.fault("TaskReject", task_id=task["id"], reason="  ")
    assert code == "Client.Validation"
    rejected = call("TaskReject", task_id=task["id"], reason="out of capacity")
    assert rejected["status"] == "rejected" and rejected["reject_reason"] == "out of capacity"
    (svc2,) = page_items(call("ServiceList", subscription_id=second))
    assert svc2["status"] == "failed"
    op = call("OperationGet", operation_id=task["operation_id"])
    assert op["status"] == "failed" and op["message"] == "rejected: out of capacity"
    code, _ = call.fault("TaskComplete", task_id=task["id"])
    assert code == "Client.InvalidState"

    # outside the subtree everything is "not found"
    reseller = Caller(api, call.protocol, "resell", PW)
    for op_name, kw in [
        ("ServiceGet", {"service_id": svc["id"]}),
        ("ServiceSync", {"service_id": svc["id"]}),
        ("OperationGet", {"operation_id": sync["id"]}),
        ("OperationRetry", {"operation_id": sync["id"]}),
        ("TaskAssign", {"task_id": task["id"]}),
        ("TaskComplete", {"task_id": task["id"]}),
        ("TaskReject", {"task_id": task["id"], "reason": "x"}),
    ]:
        code, _ = reseller.fault(op_name, **kw)
        assert code == "Client.NotFound", op_name
    assert page_items(reseller("ServiceList")) == []
    assert page_items(reseller("OperationList")) == []
    assert page_items(reseller("TaskList")) == []
    carla = Caller(api, call.protocol, "carla", PW)
    assert {s["id"] for s in page_items(carla("ServiceList"))} == {svc["id"], svc2["id"]}
    for op_name, kw in [
        ("ServiceSync", {"service_id": svc["id"]}),
        ("TaskList", {}),
        ("OperationGet", {"operation_id": sync["id"]}),
    ]:
        code, _ = carla.fault(op_name, **kw)
        assert code == "Client.Forbidden", op_name
