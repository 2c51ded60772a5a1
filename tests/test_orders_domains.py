"""Domain orders with the real engines: OrderPlace with a line on a TLD's plan
(register, or transfer with the auth code) is charged, provisioned by the
``domains`` built-in module through sandbox_registrar and completed; a bad
domain order is refused before anything is placed (domains.check_order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.core.db import UnitOfWork
from pba_server.core.errors import ValidationError
from pba_server.domains.models import Domain
from pba_server.orders import decisions, placing
from pba_server.orders.models import Order
from pba_server.orders.types import OrderLineInput, ParameterValue
from pba_server.provisioning.models import Service
from tests.billing_support import assert_books_sound
from tests.catalog_support import plain, service_ctx
from tests.domains_support import customer, registrar, tld
from tests.orders_support import card, gateway
from tests.orders_support import run as run_orders
from tests.prov_support import run as run_prov
from tests.support import page_items


def settle(env: Any, order_id: int) -> str:
    """Run the order runner and the provisioning engine until the order ends."""
    for _ in range(20):
        ran = run_orders(env) + run_prov(env)
        with UnitOfWork(env.app.engine) as uow:
            o = uow.session.get(Order, order_id)
            assert o is not None
            if o.status in ("completed", "rejected", "cancelled"):
                return o.status
        if not ran:
            break
    raise AssertionError(f"order {order_id} is stuck")


def line(plan_id: int, **params: str) -> OrderLineInput:
    return OrderLineInput(
        plan_id=plan_id,
        period_count=1,
        period_unit="year",
        parameters=[ParameterValue(k, v) for k, v in params.items()],
    )


def place(env: Any, account_id: int, *lines: OrderLineInput, key: str = "k") -> int:
    with service_ctx(env) as ctx:
        return placing.order_place(ctx, account_id=account_id, lines=list(lines)).id


def count(env: Any, model: Any) -> int:
    with UnitOfWork(env.app.engine) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def domain(env: Any, name: str) -> Domain:
    with UnitOfWork(env.app.engine) as uow:
        d = uow.session.scalar(select(Domain).where(Domain.name == name))
        assert d is not None
        uow.session.expunge(d)
        return d


@pytest.fixture
def shop(env: Any, tmp_path: Path) -> dict[str, Any]:
    reg, registry = registrar(env)
    t = tld(env, reg, "test")
    acc = customer(env)
    gw = gateway(env, tmp_path)
    card(env, acc, gw)
    return {"tld": t, "account": acc, "registry": registry, "gateway": gw}


def test_a_registration_order_is_charged_and_registers_the_domain(env, shop):
    oid = place(env, shop["account"], line(shop["tld"].plan_id, domain="Example-One.test"))
    assert settle(env, oid) == "completed"
    d = domain(env, "example-one.test")
    assert (d.status, d.action, d.account_id) == ("active", "register", shop["account"])
    assert d.expires_on is not None
    with UnitOfWork(env.app.engine) as uow:
        o = uow.session.get(Order, oid)
        svc = uow.session.scalar(select(Service).where(Service.module == "domains"))
        assert o is not None and svc is not None
        assert svc.status == "active" and svc.subscription_id == d.subscription_id
        assert o.total == 12  # the first year's registration price
    assert_books_sound(env)


def test_a_transfer_order_with_its_auth_code_brings_the_domain_in(env, shop):
    plan_id = shop["tld"].transfer_plan_id
    assert plan_id is not None
    oid = place(env, shop["account"], line(plan_id, domain="moving.test", auth_code="s3cret"))
    assert settle(env, oid) == "completed"
    d = domain(env, "moving.test")
    assert (d.status, d.action) == ("active", "transfer")
    # a wrong auth code is the registry's refusal: the order is rolled back
    oid = place(env, shop["account"], line(plan_id, domain="other.test", auth_code="wrong"))
    assert settle(env, oid) == "rejected"
    with UnitOfWork(env.app.engine) as uow:
        o = uow.session.get(Order, oid)
        assert o is not None and o.reason is not None and "provisioning failed" in o.reason
    assert domain(env, "other.test").status == "failed"
    assert_books_sound(env)


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"domain": "example.com"}, "lines[0].parameters.domain", "not a .test name"),
        ({"domain": "bad_name!.test"}, "lines[0].parameters.domain", ""),
        ({"domain": "-x-.test"}, "lines[0].parameters.domain", ""),
        ({"domain": "x.test", "action": "transfer"}, "lines[0].parameters.auth_code", "auth"),
        (
            {"domain": "x.test", "nameservers": "not a host"},
            "lines[0].parameters.nameservers",
            "",
        ),
    ],
)
def test_a_bad_domain_order_is_refused_before_it_is_placed(env, shop, params, field, text):
    with pytest.raises(ValidationError) as e:
        place(env, shop["account"], line(shop["tld"].plan_id, **params))
    assert e.value.field is not None and e.value.field.startswith(field), e.value.message
    assert text in e.value.message
    assert count(env, Order) == 0


def test_a_transfer_plan_needs_the_auth_code(env, shop):
    plan_id = shop["tld"].transfer_plan_id
    with pytest.raises(ValidationError) as e:
        place(env, shop["account"], line(plan_id, domain="moving.test"))
    assert e.value.field == "lines[0].parameters.auth_code"
    assert count(env, Order) == 0


def test_a_name_already_live_here_or_twice_in_one_order_is_refused(env, shop):
    plan_id = shop["tld"].plan_id
    oid = place(env, shop["account"], line(plan_id, domain="mine.test"))
    assert settle(env, oid) == "completed"
    with pytest.raises(ValidationError) as e:
        place(env, shop["account"], line(plan_id, domain="MINE.test"))
    assert e.value.field == "lines[0].parameters.domain"
    assert "already registered" in e.value.message
    with pytest.raises(ValidationError) as e:
        place(
            env,
            shop["account"],
            line(plan_id, domain="twice.test"),
            line(plan_id, domain="Twice.test"),
        )
    assert e.value.field == "lines[1].parameters.domain"
    assert count(env, Order) == 1


def test_over_soap_the_fault_names_the_line_and_parameter(env, api, shop):
    admin = api.soap()
    import zeep.exceptions

    with pytest.raises(zeep.exceptions.Fault) as e:
        admin.OrderPlace(
            account_id=shop["account"],
            lines=[
                {
                    "plan_id": shop["tld"].plan_id,
                    "period_count": 1,
                    "period_unit": "year",
                    "parameters": [{"name": "domain", "value": "example.org"}],
                }
            ],
            idempotency_key="bad-domain",
        )
    assert str(e.value.code).endswith("Validation")
    assert "lines[0].parameters.domain" in e.value.message
    assert plain(admin.OrderList())["total"] == 0


def test_a_transferred_subscription_takes_its_service_and_domain_along(env, api, shop):
    from pba_server.accounts import users
    from pba_server.core.audit import AuditEntry
    from tests.orders_support import PW, buyer

    oid = place(env, shop["account"], line(shop["tld"].plan_id, domain="moving-on.test"))
    assert settle(env, oid) == "completed"
    sub = domain(env, "moving-on.test").subscription_id
    new_owner = buyer(env, "New Owner")
    with service_ctx(env) as ctx:
        users.user_create(
            ctx,
            account_id=shop["account"],
            login="old",
            password=PW,
            full_name="Old",
            roles=["admin"],
        )
        t = placing.order_place(
            ctx,
            account_id=shop["account"],
            order_type="transfer",
            lines=[OrderLineInput(subscription_id=sub, to_account_id=new_owner)],
        )
    assert settle(env, t.id) == "completed"
    d = domain(env, "moving-on.test")
    assert d.account_id == new_owner and d.status == "active"
    with UnitOfWork(env.app.engine) as uow:
        svc = uow.session.scalar(select(Service).where(Service.subscription_id == sub))
        assert svc is not None and svc.account_id == new_owner
        moved = uow.session.scalars(
            select(AuditEntry.target_type).where(AuditEntry.target_type.in_(("service", "domain")))
        ).all()
        assert sorted(moved).count("service") == 1  # the move is audited
    # the new owner sees and manages them; the old one no longer does
    new = api.soap("newowner-admin", PW)
    assert [s["subscription_id"] for s in page_items(plain(new.ServiceList()))] == [sub]
    assert [x["name"] for x in plain(new.DomainList())["items"]] == ["moving-on.test"]
    old = api.soap("old", PW)
    assert page_items(plain(old.ServiceList())) == [] and plain(old.DomainList())["total"] == 0


def test_a_name_in_another_open_order_is_refused_until_that_one_ends(env, shop):
    plan_id = shop["tld"].plan_id
    first = place(env, shop["account"], line(plan_id, domain="wanted.test"))
    other = customer(env, "Second Buyer")
    with pytest.raises(ValidationError) as e:  # not registered yet, but ordered
        place(env, other, line(plan_id, domain="Wanted.test"))
    assert e.value.field == "lines[0].parameters.domain"
    assert f"order {first}" in e.value.message
    with service_ctx(env) as ctx:
        decisions.order_cancel(ctx, order_id=first, reason="changed my mind")
    card(env, other, shop["gateway"])
    second = place(env, other, line(plan_id, domain="wanted.test"))
    assert settle(env, second) == "completed"
    assert domain(env, "wanted.test").account_id == other


def test_a_domain_order_sent_four_times_at_once_is_placed_and_charged_once(env, api, shop):
    import threading

    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        proxy = api.xmlrpc()
        barrier.wait()
        try:
            o = proxy.OrderPlace(
                {
                    "account_id": shop["account"],
                    "lines": [
                        {
                            "plan_id": shop["tld"].plan_id,
                            "period_count": 1,
                            "period_unit": "year",
                            "parameters": [{"name": "domain", "value": "once.test"}],
                        }
                    ],
                    "idempotency_key": "once",
                }
            )
            results.append(o["id"])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4 and len(set(results)) == 1
    assert settle(env, results[0]) == "completed"
    from pba_server.billing.models import Invoice
    from pba_server.payments.models import GatewayPayment

    assert (count(env, Order), count(env, Invoice), count(env, GatewayPayment)) == (1, 1, 1)
    assert (count(env, Service), count(env, Domain)) == (1, 1)
    assert_books_sound(env)
