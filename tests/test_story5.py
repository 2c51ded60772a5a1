"""Story 5 of PRODUCT.md through SOAP (zeep), with the real engines.

A customer orders, through a storefront (OrderPlaceWithSignup), a server
plan with an optional application and a new domain, pays by card
(sandbox_card), and the server is provisioned by the ``script`` module (a
real executable) and the domain registered by ``sandbox_registrar`` -- by the
background runners (orders runner, provisioning worker, event deliverer) the
server starts, without any call from the test: it only polls OrderGet with a
deadline. If the card is declined, nothing is provisioned and the order says
why; if the domain cannot be registered, the server is taken back and the
charge refunded.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import users
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import PlanPeriod, ResourceRate, TemplateResource
from pba_server.core.db import UnitOfWork
from pba_server.events import runtime as events_runtime
from pba_server.notify import handlers
from pba_server.notify.delivery import Deliverer, MailSettings
from pba_server.orders import engine as orders_engine
from pba_server.payments.models import GatewayPayment
from pba_server.provisioning import runtime as prov_runtime
from tests.billing_support import assert_books_sound
from tests.catalog_support import plain, service_ctx
from tests.domains_support import registrar, tld
from tests.event_receivers import SmtpReceiver
from tests.orders_support import PW, gateway
from tests.prov_support import instance
from tests.support import page_items

D = Decimal
DEADLINE = 30.0  # seconds; the story says "in seconds"


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


@pytest.fixture
def runners(env: Any, smtp: SmtpReceiver) -> Iterator[None]:
    """The background threads a server process starts (scheduler.jobs.Ticker.start),
    on this test's database; mail goes to a loopback SMTP server."""
    engine, clock = env.app.engine, env.app.clock
    mail = MailSettings("127.0.0.1", smtp.port, sender="noreply@provider.test")
    events_runtime.register(engine, Deliverer(engine, clock, env.app.secrets, mail), 1.0)
    events_runtime.start(engine)
    prov_runtime.start(engine, env.app.runtime, idle_seconds=1.0)
    orders_engine.start(engine, env.app.runtime, idle_seconds=1.0)
    threads = [
        t
        for t in threading.enumerate()
        if t.name in ("pba-orders", "pba-provisioning", "pba-events")
    ]
    yield
    orders_engine.stop(engine)
    prov_runtime.stop(engine)
    events_runtime.stop(engine)
    for t in threads:
        t.join(timeout=30)
    events_runtime.register(engine, env.app.deliverer)  # as build_app left it: not started


def _script(tmp_path: Path) -> str:
    """The provider's own provisioning script: answers with the server's address
    and the applications it installed (the optional resources it was given)."""
    path = tmp_path / "provision-server.py"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "req = json.load(sys.stdin)\n"
        f"open({str(tmp_path / 'calls.log')!r}, 'a').write(req['action'] + '\\n')\n"
        "apps = sorted(k for k, v in req['limits'].items() if k != 'Disk' and float(v) > 0)\n"
        "out = {'platform_id': 'srv-' + str(req['service_id'])}\n"
        "if req['action'] == 'create':\n"
        "    out['data'] = {'ip': '192.0.2.7', 'hostname': req['parameters']['hostname'],"
        " 'apps': ','.join(apps)}\n"
        "print(json.dumps(out))\n"
    )
    path.chmod(0o755)
    return str(path)


def _shop(env: Any, tmp_path: Path) -> dict[str, Any]:
    """The provider's catalog and plugins, and its storefront user."""
    from pba_server.catalog.types import OrderParameter

    gw = gateway(env, tmp_path)
    instance(
        env,
        "in-house",
        plugin="script",
        settings={"executable": _script(tmp_path), "timeout": "20"},
    )
    with service_ctx(env) as ctx:
        disk = resource_create(ctx, name="Disk", unit="GB", kind="allocated").id
        wp = resource_create(ctx, name="WordPress", unit="unit", kind="allocated").id
        t = service_template_create(
            ctx,
            name="Server",
            service_type="virtual_server",
            module="script",
            resources=[TemplateResource(disk, D(20)), TemplateResource(wp, D(0))],
            order_parameters=[OrderParameter("hostname", "hostname")],
        )
        p = plan_create(
            ctx,
            template_id=t.id,
            name="Server M",
            periods=[PlanPeriod(1, "month", D("5.00"), D("20.00"))],
            rates=[
                ResourceRate(disk, D(20), D(100)),
                ResourceRate(wp, D(0), D(1), D(0), D("3.00"), optional=True),
            ],
        )
        plan_publish(ctx, plan_id=p.id)
        users.user_create(
            ctx, account_id=1, login="storefront", password=PW, full_name="Shop", roles=["sales"]
        )
        handlers.event_handler_create(  # the customer hears when its service is ready
            ctx,
            name="service ready",
            event_types=["service.provisioned"],
            action="email",
            contact_kind="billing",
        )
    reg, _registry = registrar(env)
    t_ = tld(env, reg, "test")
    return {"gateway": gw, "plan": p.id, "wordpress": wp, "tld_plan": t_.plan_id}


def _signup(api: Any, shop: dict[str, Any], login: str, token: str, domain: str) -> Any:
    return _signup_with(api.soap("storefront", PW), shop, login, token, domain)


def _signup_with(store: Any, shop: dict[str, Any], login: str, token: str, domain: str) -> Any:
    return store.OrderPlaceWithSignup(
        idempotency_key=f"signup-{login}",
        customer={
            "name": f"{login.title()} GmbH",
            "email": f"{login}@example.com",
            "type": "customer_business",
            "country": "DE",
            "phone": "+49.301234567",
            "address": "Hauptstr. 1",
            "city": "Berlin",
            "postal_code": "10115",
        },
        user={"login": login, "password": PW, "full_name": login.title()},
        card={
            "token": token,
            "brand": "visa",
            "last4": "4242",
            "expiry_month": 12,
            "expiry_year": 2030,
            "holder": login.title(),
            "instance_id": shop["gateway"],
        },
        lines=[
            {
                "plan_id": shop["plan"],
                "options": [shop["wordpress"]],
                "parameters": [{"name": "hostname", "value": f"{login}.example.net"}],
            },
            {
                "plan_id": shop["tld_plan"],
                "period_count": 1,
                "period_unit": "year",
                "parameters": [{"name": "domain", "value": domain}],
            },
        ],
    )


def _wait(client: Any, order_id: int, *statuses: str) -> dict[str, Any]:
    """Poll OrderGet until the order is in one of ``statuses`` (no fixed sleeps)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        o = plain(client.OrderGet(order_id=order_id))
        if o["status"] in statuses:
            return o  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} is {o['status']} at {o['current_step']}: {o}")
        time.sleep(0.1)


def test_story_5_storefront_order_is_paid_provisioned_and_registered_in_seconds(
    env, api, tmp_path, runners, smtp
):
    shop = _shop(env, tmp_path)
    started = time.monotonic()
    r = _signup(api, shop, "ada", "tok_approve", "ada-shop.test")
    assert r.order.status == "running"
    me = api.soap("ada", PW)  # the new customer looks at its order
    o = _wait(me, r.order.id, "completed", "rejected")
    assert o["status"] == "completed", o
    assert time.monotonic() - started < DEADLINE
    # the server, provisioned by the provider's script with the application
    services = {s["module"]: s for s in page_items(plain(me.ServiceList()))}
    assert set(services) == {"script", "domains"}
    server = services["script"]
    assert server["status"] == "active" and server["platform_id"] == f"srv-{server['id']}"
    assert {v["name"]: v["value"] for v in server["data"]} == {
        "ip": "192.0.2.7",
        "hostname": "ada.example.net",
        "apps": "WordPress",
    }
    assert services["domains"]["status"] == "active"
    assert (tmp_path / "calls.log").read_text().split() == ["create"]
    # the domain, registered for a year
    domains = plain(me.DomainList())["items"]
    assert [d["name"] for d in domains] == ["ada-shop.test"]
    dom = plain(me.DomainGet(domain_id=domains[0]["id"]))
    assert dom["status"] == "active" and dom["expires_on"] is not None
    assert dom["account_id"] == r.account_id
    assert (dom["expires_on"] - env.clock.now().date()).days in range(364, 367)
    # paid by card: setup 5 + month 20 + WordPress 3, and the .test year 12
    invoice = plain(me.InvoiceGet(invoice_id=o["invoice_id"]))
    assert invoice["status"] == "paid" and D(invoice["total"]) == D("40.00")
    charge = plain(me.PaymentChargeGet(charge_id=o["charge_id"]))
    assert charge["status"] == "captured" and D(charge["amount"]) == D("40.00")
    subs = plain(me.SubscriptionList())["items"]
    assert sorted(s["status"] for s in subs) == ["active", "active"]
    # the customer is told: the services are ready and the order completed
    events = plain(api.soap().EventList(account_id=r.account_id, limit=1000))["items"]
    types = [e["type"] for e in events]
    assert types.count("service.provisioned") == 2 and "order.completed" in types
    assert types.index("order.completed") > max(
        i for i, t in enumerate(types) if t == "service.provisioned"
    )
    deadline = time.monotonic() + DEADLINE  # delivered by the event deliverer's thread
    while len(smtp.mails) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(m.recipients[0] for m in smtp.mails) == ["ada@example.com"] * 2
    assert {m.message["Subject"] for m in smtp.mails} == {"Your service is ready"}


def test_story_5_declined_card_provisions_nothing_and_says_why(env, api, tmp_path, runners, smtp):
    shop = _shop(env, tmp_path)
    r = _signup(api, shop, "bob", "tok_insufficient_funds", "bob-shop.test")
    me = api.soap("bob", PW)
    o = _wait(me, r.order.id, "completed", "rejected")
    assert o["status"] == "rejected" and "insufficient_funds" in o["reason"]
    assert page_items(plain(me.ServiceList())) == []
    assert plain(me.DomainList())["total"] == 0
    assert plain(me.SubscriptionList())["total"] == 0
    invoice = plain(me.InvoiceGet(invoice_id=o["invoice_id"]))
    assert invoice["status"] == "void" and D(invoice["paid"]) == 0
    charge = plain(me.PaymentChargeGet(charge_id=o["charge_id"]))
    assert charge["status"] == "declined" and charge["decline_code"] == "insufficient_funds"
    # the account stays: the customer can retry with another card
    assert plain(me.AccountGet(account_id=r.account_id))["status"] == "active"
    assert smtp.mails == []
    assert not (tmp_path / "calls.log").exists()  # the script was never run


def test_story_5_domain_refused_rolls_back_the_server_and_refunds(env, api, tmp_path, runners):
    shop = _shop(env, tmp_path)
    # ``invalid*`` names are refused by the registry's policy (a final failure)
    r = _signup(api, shop, "cyd", "tok_approve", "invalid-name.test")
    me = api.soap("cyd", PW)
    o = _wait(me, r.order.id, "completed", "rejected")
    assert o["status"] == "rejected" and "provisioning failed" in o["reason"], o
    assert "2306" in o["reason"]  # the registry's own reason
    # the server was made, then deleted again; no domain is live
    deadline = time.monotonic() + DEADLINE
    while True:
        live = [
            s
            for s in page_items(plain(me.ServiceList()))
            if s["status"] not in ("deleted", "failed")
        ]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert live == []
    server = [s for s in page_items(plain(me.ServiceList())) if s["module"] == "script"]
    assert [s["status"] for s in server] == ["deleted"]
    assert (tmp_path / "calls.log").read_text().split() == ["create", "delete"]
    assert [d["status"] for d in plain(me.DomainList())["items"]] in ([], ["failed"])
    subs = plain(me.SubscriptionList())["items"]
    assert subs and all(s["status"] == "cancelled" for s in subs)
    # the money went back: the charge refunded (which takes the payment off the
    # invoice), the invoice void; the customer owes nothing and has no credit
    charge = plain(me.PaymentChargeGet(charge_id=o["charge_id"]))
    assert charge["status"] in ("captured", "refunded") and D(charge["refunded"]) == D("40.00")
    invoice = plain(me.InvoiceGet(invoice_id=o["invoice_id"]))
    assert invoice["status"] == "void" and D(invoice["paid"]) == 0
    assert D(plain(me.AccountBalanceGet(account_id=r.account_id))["balance"]) == 0
    assert_books_sound(env)


def test_story_5_a_storefront_retrying_its_signup_at_once_buys_once(env, api, tmp_path, runners):
    """The storefront's request times out and it sends it again while the first
    is still running (same idempotency key), four times at once, with the
    runners working: one account, order, invoice, charge, server and domain."""
    shop = _shop(env, tmp_path)
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        client = api.soap_client("storefront", PW)
        barrier.wait()
        try:
            results.append(_signup_with(client.service, shop, "dee", "tok_approve", "dee.test"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    assert len({(r.account_id, r.order.id, r.payment_method_id) for r in results}) == 1
    me = api.soap("dee", PW)
    o = _wait(me, results[0].order.id, "completed", "rejected")
    assert o["status"] == "completed", o
    admin = api.soap()
    assert plain(admin.OrderList())["total"] == 1
    assert plain(admin.InvoiceList())["total"] == 1
    with UnitOfWork(env.app.engine) as uow:  # one charge at the gateway
        charges = uow.session.scalars(select(GatewayPayment)).all()
        assert [(c.status, c.amount) for c in charges] == [("captured", D("40.00"))]
    assert len([a for a in plain(admin.AccountList())["items"] if a["name"] == "Dee GmbH"]) == 1
    assert sorted(s["module"] for s in page_items(plain(me.ServiceList()))) == ["domains", "script"]
    assert plain(me.DomainList())["total"] == 1
    assert (tmp_path / "calls.log").read_text().split() == ["create"]  # the server made once
    assert_books_sound(env)
