"""Orders, workflows and subscriptions through the real endpoints (SOAP with
zeep and XML-RPC): every operation, faults with stable codes, idempotency."""

from __future__ import annotations

import threading
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from pba_server.core.db import UnitOfWork
from tests.billing_support import assert_books_sound
from tests.catalog_support import Caller, D
from tests.orders_support import PW, FakeProvisioner, buyer, card, gateway, plan, run, use_fake
from tests.support import page_items

PROTOCOLS = ["soap", "xmlrpc"]


@pytest.fixture
def fake(env: Any) -> Iterator[FakeProvisioner]:
    f = FakeProvisioner()
    old = use_fake(env, f)
    yield f
    use_fake(env, old)


@pytest.fixture(params=PROTOCOLS)
def call(request: pytest.FixtureRequest, api: Any, env: Any, fake: FakeProvisioner) -> Any:
    yield Caller(api, request.param)
    assert_books_sound(env)


def settle(env: Any, fake: FakeProvisioner) -> None:
    run(env)
    fake.finish(env)
    run(env)


def count(env: Any, table: str) -> int:
    with UnitOfWork(env.app.engine) as uow:
        return int(uow.session.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def test_order_operations(call, env, tmp_path, fake):
    p = plan(env, setup="5.00")
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    wf = call("WorkflowGet", order_type="sales")
    assert wf["is_default"] and wf["start"] == "screen"
    assert {s["action"] for s in wf["steps"]} >= {"fraud_screen", "charge", "provision"}
    assert len(page_items(call("WorkflowList"))) == 8
    line = {"plan_id": p["plan"], "parameters": []}
    o = call("OrderPlace", account_id=acc, lines=[line], idempotency_key="o-1")
    again = call("OrderPlace", account_id=acc, lines=[line], idempotency_key="o-1")
    assert again["id"] == o["id"] and count(env, "orders") == 1
    assert (o["status"], o["current_action"], D(o["total"])) == ("running", "fraud_screen", D("35"))
    settle(env, fake)
    got = call("OrderGet", order_id=o["id"])
    assert got["status"] == "completed" and got["invoice_id"] and got["charge_id"]
    assert [h["action"] for h in got["history"]][:2] == ["place", "fraud_screen"]
    page = call("OrderList", account_id=acc)
    assert page["total"] == 1 and page["items"][0]["id"] == o["id"]
    assert call("OrderList", status="running")["total"] == 0
    # faults
    code, msg = call.fault("OrderGet", order_id=999)
    assert code == "Client.NotFound"
    code, msg = call.fault("OrderPlace", account_id=acc, lines=[{"plan_id": 999}])
    assert code == "Client.Validation" and "cannot buy plan 999" in msg
    code, _ = call.fault("OrderApprove", order_id=o["id"])
    assert code == "Client.InvalidState"
    code, _ = call.fault("OrderCancel", order_id=o["id"])
    assert code == "Client.InvalidState"


def test_workflow_set_approve_reject_cancel(call, api, env, tmp_path, fake):
    p = plan(env)
    acc = buyer(env, credit_limit="500")
    bad = [
        {"name": "a", "action": "invoice", "transitions": [{"on": "*", "to": "b"}]},
        {"name": "b", "action": "invoice", "transitions": [{"on": "*", "to": "a"}]},
    ]
    code, msg = call.fault("WorkflowSet", order_type="sales", start="a", steps=bad)
    assert code == "Client.Validation" and "loops" in msg
    code, msg = call.fault(
        "WorkflowSet",
        order_type="sales",
        start="c",
        steps=[{"name": "c", "action": "charge", "transitions": [{"on": "paid", "to": "c"}]}],
    )
    assert code == "Client.Validation"
    steps = [
        {
            "name": "approval",
            "action": "wait_approval",
            "transitions": [{"on": "approved", "to": "invoice"}, {"on": "rejected", "to": "no"}],
        },
        {"name": "invoice", "action": "invoice", "transitions": [{"on": "*", "to": "notify"}]},
        {"name": "notify", "action": "notify", "transitions": [{"on": "*", "to": "done"}]},
        {"name": "done", "action": "complete", "transitions": []},
        {"name": "no", "action": "reject", "transitions": []},
    ]
    wf = call("WorkflowSet", order_type="sales", start="approval", steps=steps)
    assert not wf["is_default"] and len(wf["steps"]) == 5
    line = [{"plan_id": p["plan"]}]
    ids = [
        call("OrderPlace", account_id=acc, lines=line, on_account=True, idempotency_key=f"k{i}")[
            "id"
        ]
        for i in range(3)
    ]
    run(env)
    assert call("OrderGet", order_id=ids[0])["status"] == "waiting"
    cust = Caller(api, call.protocol, "cust-admin", PW)  # the buyer cannot approve its own
    assert cust.fault("OrderApprove", order_id=ids[0])[0] == "Client.Forbidden"
    assert cust("OrderGet", order_id=ids[0])["status"] == "waiting"
    assert call("OrderApprove", order_id=ids[0], note="fine")["status"] == "running"
    assert call("OrderReject", order_id=ids[1], reason="no stock")["current_step"] == "no"
    assert call("OrderCancel", order_id=ids[2], reason="oops")["status"] == "cancelled"
    run(env)
    assert call("OrderGet", order_id=ids[0])["status"] == "completed"
    rejected = call("OrderGet", order_id=ids[1])
    assert (rejected["status"], rejected["reason"]) == ("rejected", "no stock")
    back = call("WorkflowSet", order_type="sales")
    assert back["is_default"]


def test_subscription_operations(call, env, tmp_path, fake):
    big = plan(env, "Hosting L", recurring="60.00")
    p = plan(env, resource=True)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    o = call("OrderPlace", account_id=acc, lines=[{"plan_id": p["plan"]}], idempotency_key="s")
    settle(env, fake)
    sub = call("OrderGet", order_id=o["id"])["subscription_id"]
    s = call("SubscriptionGet", subscription_id=sub)
    assert (s["status"], s["plan_id"], s["auto_renew"]) == ("active", p["plan"], True)
    assert call("SubscriptionList", account_id=acc)["total"] == 1
    pv = call("ChangePreview", subscription_id=sub, plan_id=big["plan"])
    assert pv["order_type"] == "upgrade" and D(pv["net"]) >= 0
    pv2 = call(
        "ChangePreview",
        subscription_id=sub,
        resources=[{"resource_id": p["resource"], "quantity": D(5)}],
    )
    assert pv2["order_type"] == "resource"
    r = call(
        "SubscriptionBuyResource",
        subscription_id=sub,
        resource_id=p["resource"],
        amount=D(5),
        idempotency_key="r",
    )
    assert r["type"] == "resource" and D(r["total"]) == D(pv2["invoice_total"])
    settle(env, fake)
    assert call("OrderGet", order_id=r["id"])["status"] == "completed"
    assert D(call("SubscriptionGet", subscription_id=sub)["resources"][0]["bought"]) == 5
    u = call(
        "SubscriptionChangePlan", subscription_id=sub, plan_id=big["plan"], idempotency_key="u"
    )
    assert u["type"] == "upgrade"
    settle(env, fake)
    assert call("SubscriptionGet", subscription_id=sub)["plan_id"] == big["plan"]
    assert (
        call("SubscriptionSetAutoRenew", subscription_id=sub, auto_renew=False)["auto_renew"]
        is False
    )
    assert call("SubscriptionSuspend", subscription_id=sub, reason="abuse")["status"] == "suspended"
    assert call("SubscriptionResume", subscription_id=sub)["status"] == "active"
    rn = call("SubscriptionRenew", subscription_id=sub, idempotency_key="rn")
    assert rn["type"] == "renewal" and D(rn["total"]) == D("60.00")
    settle(env, fake)
    assert call("OrderGet", order_id=rn["id"])["status"] == "completed"
    c = call("SubscriptionCancel", subscription_id=sub, reason="bye", idempotency_key="c")
    settle(env, fake)
    assert call("OrderGet", order_id=c["id"])["status"] == "completed"
    assert call("SubscriptionGet", subscription_id=sub)["status"] == "cancelled"
    code, _ = call.fault("SubscriptionGet", subscription_id=999)
    assert code == "Client.NotFound"
    code, _ = call.fault("SubscriptionResume", subscription_id=sub)
    assert code == "Client.InvalidState"


def test_storefront_signup_all_or_nothing(call, env, tmp_path, fake):
    p = plan(env)
    inst = gateway(env, tmp_path)
    args = {
        "customer": {"name": "Jane Doe", "email": "jane@example.com", "country": "DE"},
        "user": {"login": "jane", "password": PW, "full_name": "Jane Doe"},
        "card": {
            "token": "tok_approve",
            "brand": "visa",
            "last4": "4242",
            "expiry_month": 12,
            "expiry_year": 2030,
            "holder": "Jane Doe",
            "instance_id": inst,
        },
        "lines": [{"plan_id": p["plan"]}],
    }
    r = call("OrderPlaceWithSignup", idempotency_key="signup-1", **args)
    assert r["order"]["status"] == "running" and r["payment_method_id"]
    settle(env, fake)
    assert call("OrderGet", order_id=r["order"]["id"])["status"] == "completed"
    accounts_before = count(env, "accounts")
    # the same login again: nothing is created
    code, _ = call.fault("OrderPlaceWithSignup", idempotency_key="signup-2", **args)
    assert code in ("Client.Conflict", "Client.Validation")
    bad = {**args, "user": {**args["user"], "login": "john"}, "lines": [{"plan_id": 999}]}
    code, _ = call.fault("OrderPlaceWithSignup", idempotency_key="signup-3", **bad)
    assert code == "Client.Validation"
    refused = {**args, "user": {**args["user"], "login": "jim"}}
    refused["card"] = {**args["card"], "instance_id": 999}  # no such gateway
    code, _ = call.fault("OrderPlaceWithSignup", idempotency_key="signup-4", **refused)
    assert code == "Client.NotFound"
    assert count(env, "accounts") == accounts_before
    # a declined card: the order is rejected with the reason, nothing provisioned
    declined = {**args, "user": {**args["user"], "login": "joe"}}
    declined["card"] = {**args["card"], "token": "tok_stolen_card"}
    d = call("OrderPlaceWithSignup", idempotency_key="signup-5", **declined)
    settle(env, fake)
    got = call("OrderGet", order_id=d["order"]["id"])
    assert got["status"] == "rejected" and "stolen_card" in got["reason"]


def test_duplicate_place_racing_makes_one_order_one_invoice_one_charge(api, env, tmp_path, fake):
    p = plan(env)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def place() -> None:
        proxy = api.xmlrpc()
        barrier.wait()
        try:
            results.append(
                proxy.OrderPlace(
                    {
                        "account_id": acc,
                        "lines": [{"plan_id": p["plan"]}],
                        "idempotency_key": "race",
                    }
                )["id"]
            )
        except (xmlrpc.client.Fault, OSError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=place) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 4
    settle(env, fake)
    # and running the workflow twice more changes nothing
    run(env)
    assert count(env, "orders") == 1
    assert count(env, "invoices") == 1
    assert count(env, "gateway_payments") == 1
    assert count(env, "subscriptions") == 1
    assert_books_sound(env)
