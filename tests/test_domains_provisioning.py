"""Domains provisioned by the real provisioning engine (service layer, both
databases): a subscription on a TLD's plan -> provision_subscription ->
run_pending -> the registrar; transfers, a registry outage retried on the
clock, prolong, delete as a manual task, and a bundle of a hosting service
and a domain rolled back when the domain fails."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import tree, users
from pba_server.accounts.models import Account
from pba_server.catalog.models import PlanVersion
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.domains import availability, monitors
from pba_server.domains import jobs as domain_jobs
from pba_server.domains.models import Domain
from pba_server.events.models import Event
from pba_server.provisioning import api as prov
from pba_server.provisioning import service as prov_ops
from pba_server.provisioning.models import ProvisioningOperation, Service, Task
from pba_server.provisioning.registry import BUILTIN_MODULES
from pba_server.provisioning.types import ServiceValue
from pba_server.sdk import loader
from pba_server.sdk.provisioning import FinalFailure
from pba_server.subscriptions.store import new_subscription
from tests import domains_support as ds
from tests import prov_support as ps
from tests.catalog_support import service_ctx
from tests.prov_support import fake_module

__all__ = ["fake_module"]

PW = "a-long-password-1"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def setup(env: Any) -> dict[str, Any]:
    env.clock.freeze(T0)
    inst, reg = ds.registrar(env)
    t = ds.tld(env, inst)
    return {"inst": inst, "reg": reg, "tld": t, "acc": ds.customer(env)}


def _registry(setup: dict[str, Any]) -> Any:
    return loader.plugins()["sandbox_registrar"].cls.state(setup["reg"])


def _version(env: Any, plan_id: int) -> int:
    with UnitOfWork(env.app.engine) as uow:
        v = uow.session.scalar(
            select(PlanVersion.id).where(PlanVersion.plan_id == plan_id).order_by(PlanVersion.id)
        )
        assert v is not None
        return int(v)


def _subscribe(env: Any, setup: dict[str, Any], plan_id: int, **params: str) -> int:
    """A one-year subscription of the customer on a TLD plan; vendor = the TLD owner."""
    with UnitOfWork(env.app.engine) as uow:
        sub = new_subscription(
            uow.session,
            env.clock,
            account_id=setup["acc"],
            vendor_id=setup["tld"].owner_id,
            plan_version_id=_version(env, plan_id),
            period_count=1,
            period_unit="year",
            start=env.clock.now().date(),
            parameters=params,
        )
        uow.commit()
        return sub.id


def _vendor_ctx(env: Any, uow: UnitOfWork) -> Any:
    vendor = uow.session.scalar(select(Account).where(Account.type == "provider"))
    assert vendor is not None
    return system_context(
        uow,
        env.clock,
        account_id=vendor.id,
        account_path=vendor.path,
        operation="test",
        runtime=env.app.runtime,
    )


def _provision(env: Any, *subscription_ids: int, order_id: int | None = None) -> int:
    with UnitOfWork(env.app.engine) as uow:
        ctx = _vendor_ctx(env, uow)
        bundles = {
            prov.provision_subscription(ctx, sid, order_id=order_id) for sid in subscription_ids
        }
        uow.commit()
    assert len(bundles) == 1
    return bundles.pop()


def _action(env: Any, sub_id: int, action: Any, **kw: Any) -> int | None:
    with UnitOfWork(env.app.engine) as uow:
        b = prov.request_action(_vendor_ctx(env, uow), sub_id, action, **kw)
        uow.commit()
        return b


def _run(env: Any) -> int:
    return prov.run_pending(env.app.engine, env.app.runtime)


def _state(env: Any, bundle_id: int) -> tuple[str, str | None]:
    with UnitOfWork(env.app.engine) as uow:
        return prov.bundle_state(uow.session, bundle_id)


def _services(env: Any, sub_id: int) -> list[Service]:
    with UnitOfWork(env.app.engine) as uow:
        rows = list(
            uow.session.scalars(
                select(Service).where(Service.subscription_id == sub_id).order_by(Service.id)
            )
        )
        for r in rows:
            uow.session.expunge(r)
        return rows


def _domain(env: Any, sub_id: int) -> Domain:
    with UnitOfWork(env.app.engine) as uow:
        d = uow.session.scalar(
            select(Domain).where(Domain.subscription_id == sub_id).order_by(Domain.id.desc())
        )
        assert d is not None
        uow.session.expunge(d)
        return d


def _ops(env: Any, sub_id: int) -> list[ProvisioningOperation]:
    with UnitOfWork(env.app.engine) as uow:
        rows = list(
            uow.session.scalars(
                select(ProvisioningOperation)
                .join(Service, Service.id == ProvisioningOperation.service_id)
                .where(Service.subscription_id == sub_id)
                .order_by(ProvisioningOperation.id)
            )
        )
        for r in rows:
            uow.session.expunge(r)
        return rows


def _register(env: Any, setup: dict[str, Any], name: str) -> int:
    sub = _subscribe(env, setup, setup["tld"].plan_id, domain=name)
    b = _provision(env, sub)
    assert _run(env) == 1
    assert _state(env, b) == ("done", None)
    return sub


def test_register_through_the_engine(env: Any, setup: dict[str, Any]) -> None:
    sub = _subscribe(
        env,
        setup,
        setup["tld"].plan_id,
        domain="Shop.TEST",
        nameservers="ns1.x.example,ns2.x.example",
    )
    b = _provision(env, sub)
    assert _state(env, b) == ("running", None)
    assert _run(env) == 1
    assert _state(env, b) == ("done", None)
    (svc,) = _services(env, sub)
    assert (svc.module, svc.instance_id, svc.status) == ("domains", None, "active")
    d = _domain(env, sub)
    today = env.clock.now().date()
    assert (d.name, d.status, d.service_id) == ("shop.test", "active", svc.id)
    assert d.expires_on == today.replace(year=today.year + 1)
    data = json.loads(svc.data)
    assert data["domain"] == "shop.test" and data["expires_on"] == d.expires_on.isoformat()
    assert svc.platform_id
    assert ("register", "shop.test") in _registry(setup).calls
    # the name is taken now: a second order for it is refused before it is placed
    template = ds.template_of(env, setup["tld"].plan_id)
    with service_ctx(env) as ctx, pytest.raises(ValidationError, match="already registered"):
        availability.check_order(ctx, template, {"domain": "shop.test"})


def test_transfer_good_and_wrong_auth_code(env: Any, setup: dict[str, Any]) -> None:
    tplan = setup["tld"].transfer_plan_id
    bad = _subscribe(env, setup, tplan, domain="moving.test", auth_code="wrong")
    b = _provision(env, bad)
    _run(env)
    state, reason = _state(env, b)
    assert state == "failed" and reason is not None and "2201" in reason
    (svc,) = _services(env, bad)
    assert svc.status == "failed"
    d = _domain(env, bad)
    assert (d.status, d.live_name) == ("failed", None)
    assert "AuthorizationError" in (d.last_error or "")
    # the name is free again: the right auth code moves it in
    good = _subscribe(env, setup, tplan, domain="moving.test", auth_code="s3cret")
    b2 = _provision(env, good)
    _run(env)
    assert _state(env, b2) == ("done", None)
    (svc,) = _services(env, good)
    d = _domain(env, good)
    assert (svc.status, d.status, d.action, d.live_name) == (
        "active",
        "active",
        "transfer",
        "moving.test",
    )
    assert d.expires_on is not None


def test_slow_transfer_is_polled_until_done(env: Any, setup: dict[str, Any]) -> None:
    sub = _subscribe(
        env, setup, setup["tld"].transfer_plan_id, domain="slow-move.test", auth_code="x"
    )
    b = _provision(env, sub)
    _run(env)
    assert _state(env, b)[0] == "running"
    assert _domain(env, sub).status == "transferring"
    assert _run(env) == 0  # polled later, not now
    env.clock.advance(timedelta(hours=1, seconds=1))
    assert _run(env) == 1
    assert _state(env, b) == ("done", None)
    assert _domain(env, sub).status == "active"


def test_registry_outage_is_retried_on_the_clock(env: Any, setup: dict[str, Any]) -> None:
    reg = _registry(setup)
    reg.offline = True
    sub = _subscribe(env, setup, setup["tld"].plan_id, domain="outage.test")
    b = _provision(env, sub)
    assert _run(env) == 1
    (op,) = _ops(env, sub)
    assert (op.status, op.failures) == ("pending", 1)
    assert _domain(env, sub).status == "pending"
    assert "unavailable" in (_domain(env, sub).last_error or "")
    reg.offline = False
    assert _run(env) == 0  # not due yet
    env.clock.advance(timedelta(minutes=5, seconds=1))
    assert _run(env) == 1
    assert _state(env, b) == ("done", None)
    (op,) = _ops(env, sub)
    assert (op.status, op.attempts) == ("done", 2)
    d = _domain(env, sub)
    assert (d.status, d.last_error) == ("active", None)
    # asked twice (the registry was down the first time), with one key
    assert [c for c in reg.calls if c[0] == "register"] == [("register", "outage.test")] * 2
    assert list(reg.keys) == [str(op.id)] and "outage.test" in reg.domains


def test_prolong_renews_once(env: Any, setup: dict[str, Any]) -> None:
    sub = _register(env, setup, "long.test")
    expiry = _domain(env, sub).expires_on
    assert expiry is not None
    until = expiry.replace(year=expiry.year + 1)
    b = _action(env, sub, "prolong", until=until)
    assert b is not None
    _run(env)
    assert _state(env, b) == ("done", None)
    assert _domain(env, sub).expires_on == until
    again = _action(env, sub, "prolong", until=until)
    assert again is not None and again != b
    _run(env)
    assert _state(env, again) == ("done", None)
    assert _domain(env, sub).expires_on == until
    assert [c for c in _registry(setup).calls if c[0] == "renew"] == [("renew", "long.test")]
    (svc,) = _services(env, sub)
    assert json.loads(svc.data)["expires_on"] == until.isoformat()


def test_delete_is_a_manual_task_completed_by_a_person(
    env: Any, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = _register(env, setup, "gone.test")
    heard: list[tuple[str, str]] = []
    builtin = BUILTIN_MODULES["domains"]
    assert builtin.on_result is not None
    original = builtin.on_result

    def spy(ctx: Any, service: Any, action: str, result: Any) -> None:
        heard.append((action, type(result).__name__))
        original(ctx, service, action, result)

    monkeypatch.setitem(
        BUILTIN_MODULES, "domains", type(builtin)(**{**builtin.__dict__, "on_result": spy})
    )
    b = _action(env, sub, "delete", reason="customer cancelled")
    assert b is not None
    _run(env)
    assert _state(env, b) == ("running", None)
    with UnitOfWork(env.app.engine) as uow:
        task = uow.session.scalar(select(Task).order_by(Task.id.desc()))
        assert task is not None and task.status == "open"
        task_id = task.id
    assert _domain(env, sub).status == "active"
    with service_ctx(env) as ctx:
        info = prov_ops.task_complete(ctx, task_id=task_id)
    assert info.status == "completed" and info.action == "delete"
    assert heard == [("delete", "Done")]
    assert _state(env, b) == ("done", None)
    (svc,) = _services(env, sub)
    d = _domain(env, sub)
    assert (svc.status, d.status, d.live_name) == ("deleted", "deleted", None)


def test_bundle_of_hosting_and_a_failing_domain_is_rolled_back(
    env: Any, setup: dict[str, Any], fake_module: ps.Script
) -> None:
    ps.instance(env)
    hosting = ps.subscribe(env, setup["acc"], ps.plan(env))
    domain = _subscribe(env, setup, setup["tld"].plan_id, domain="taken-name.test")
    b = _provision(env, hosting, domain, order_id=4242)
    _run(env)
    _run(env)  # the rollback's delete
    state, reason = _state(env, b)
    assert state == "failed" and reason is not None and "ObjectExists" in reason
    (h,) = _services(env, hosting)
    (dsvc,) = _services(env, domain)
    assert (h.status, dsvc.status) == ("deleted", "failed")
    assert fake_module.actions() == ["create", "delete"]
    hops = _ops(env, hosting)
    assert [(o.action, o.status, o.rollback) for o in hops] == [
        ("create", "done", False),
        ("delete", "done", True),
    ]
    d = _domain(env, domain)
    assert (d.status, d.live_name) == ("failed", None)


def test_bundle_of_hosting_and_a_domain_both_done(
    env: Any, setup: dict[str, Any], fake_module: ps.Script
) -> None:
    ps.instance(env)
    hosting = ps.subscribe(env, setup["acc"], ps.plan(env))
    domain = _subscribe(env, setup, setup["tld"].plan_id, domain="both.test")
    b = _provision(env, hosting, domain, order_id=4243)
    assert _run(env) == 2
    assert _state(env, b) == ("done", None)
    assert [s.status for s in _services(env, hosting) + _services(env, domain)] == [
        "active",
        "active",
    ]
    assert _domain(env, domain).expires_on is not None
    assert isinstance(_domain(env, domain).expires_on, date)


def test_bundle_whose_hosting_fails_hands_the_registered_domain_to_a_person(
    env: Any, setup: dict[str, Any], fake_module: ps.Script
) -> None:
    ps.instance(env)
    fake_module.then("create", FinalFailure("no capacity"))
    hosting = ps.subscribe(env, setup["acc"], ps.plan(env))
    domain = _subscribe(env, setup, setup["tld"].plan_id, domain="kept.test")
    b = _provision(env, domain, hosting, order_id=4244)
    _run(env)
    _run(env)
    state, reason = _state(env, b)
    assert state == "failed" and reason == "no capacity"
    # registries do not take a registration back: deleting it is a person's decision
    dops = _ops(env, domain)
    assert [(o.action, o.status, o.rollback) for o in dops] == [
        ("create", "done", False),
        ("delete", "manual", True),
    ]
    with UnitOfWork(env.app.engine) as uow:
        task = uow.session.scalar(select(Task).where(Task.operation_id == dops[1].id))
        assert task is not None and task.status == "open"
        task_id = task.id
    assert _domain(env, domain).status == "active"
    with service_ctx(env) as ctx:
        prov_ops.task_complete(ctx, task_id=task_id)
    d = _domain(env, domain)
    assert (d.status, d.live_name) == ("deleted", None)
    assert [s.status for s in _services(env, domain)] == ["deleted"]


# ---------------------------------------------------------------- registrar balance tasks


def _events(env: Any, type_: str) -> list[dict[str, Any]]:
    with UnitOfWork(env.app.engine) as uow:
        return [
            json.loads(e.payload)
            for e in uow.session.scalars(
                select(Event).where(Event.type == type_).order_by(Event.id)
            )
        ]


def _balance_job(env: Any, day: int) -> str:
    env.clock.freeze(datetime(2030, 1, day, 6, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        summary = domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()
    return summary


def _balance_tasks(env: Any) -> list[Any]:
    with service_ctx(env) as ctx:
        return prov_ops.task_list(ctx, kind="registrar_balance").items


def test_low_balance_opens_one_task_for_the_department(env: Any, setup: dict[str, Any]) -> None:
    with service_ctx(env) as ctx:
        me = ctx.principal.account_id
        tech = users.user_create(
            ctx, account_id=me, login="tech", password=PW, full_name="T", roles=["technical"]
        ).id
        dep = prov_ops.department_create(ctx, name="Domains")
        prov_ops.department_add_member(ctx, department_id=dep.id, user_id=tech)
        m = monitors.registrar_balance_minimum_set(
            ctx,
            instance_id=setup["inst"],
            minimum=Decimal("2000"),
            currency="USD",
            department_id=dep.id,
        )
    assert m.department_id == dep.id
    assert "1 low" in _balance_job(env, 1)
    (t,) = _balance_tasks(env)
    assert (t.kind, t.status, t.department_id, t.owner_id, t.instance_id) == (
        "registrar_balance",
        "open",
        dep.id,
        me,
        setup["inst"],
    )
    assert (t.operation_id, t.action, t.service_id, t.account_id) == (None, None, None, None)
    assert "top up" in t.subject and "1000.00 USD" in t.reason and "2000.00 USD" in t.reason
    (opened,) = _events(env, "task.opened")
    assert opened == {
        "task_id": t.id,
        "kind": "registrar_balance",
        "subject": t.subject,
        "reason": t.reason,
        "department": "Domains",
        "instance_id": setup["inst"],
    }
    # the next days: the event again, no second task while one is open or assigned
    _balance_job(env, 2)
    with service_ctx(env) as ctx:
        assigned = prov_ops.task_assign(ctx, task_id=t.id, user_id=tech)
    assert assigned.status == "assigned"
    _balance_job(env, 3)
    assert len(_events(env, "registrar.balance_low")) == 3
    assert [x.id for x in _balance_tasks(env)] == [t.id]
    assert len(_events(env, "task.opened")) == 1
    # all task operations see it alongside operation tasks
    with service_ctx(env) as ctx:
        assert [x.id for x in prov_ops.task_list(ctx, department_id=dep.id).items] == [t.id]
        assert [x.id for x in prov_ops.task_list(ctx, assignee_id=tech).items] == [t.id]
        assert prov_ops.task_list(ctx, kind="operation").items == []
        done = prov_ops.task_complete(ctx, task_id=t.id, data=[ServiceValue("topped_up", "500")])
    assert (done.status, done.assignee_id) == ("completed", tech)
    assert [(v.name, v.value) for v in done.result] == [("topped_up", "500")]
    with service_ctx(env) as ctx, pytest.raises(InvalidState):
        prov_ops.task_complete(ctx, task_id=t.id)
    # still low the day after: a new task
    _balance_job(env, 4)
    tasks = _balance_tasks(env)
    assert [x.status for x in tasks] == ["completed", "open"]
    with service_ctx(env) as ctx:
        rejected = prov_ops.task_reject(ctx, task_id=tasks[1].id, reason="paid by wire already")
    assert (rejected.status, rejected.reject_reason) == ("rejected", "paid by wire already")


def test_balance_task_without_a_department_and_department_checks(
    env: Any, setup: dict[str, Any]
) -> None:
    with service_ctx(env) as ctx:
        res = tree.account_create(ctx, type="reseller", name="Resell", partner_level="basic")
        other = prov_ops.department_create(ctx, name="Theirs", account_id=res.id)
        with pytest.raises(ValidationError, match="department_id"):
            monitors.registrar_balance_minimum_set(
                ctx,
                instance_id=setup["inst"],
                minimum=Decimal("2000"),
                currency="USD",
                department_id=other.id,
            )
        with pytest.raises(NotFound):
            monitors.registrar_balance_minimum_set(
                ctx,
                instance_id=setup["inst"],
                minimum=Decimal("2000"),
                currency="USD",
                department_id=999999,
            )
        monitors.registrar_balance_minimum_set(
            ctx, instance_id=setup["inst"], minimum=Decimal("2000"), currency="USD"
        )
    _balance_job(env, 1)
    (t,) = _balance_tasks(env)
    assert (t.department_id, t.status) == (None, "open")
    assert _events(env, "task.opened")[0]["department"] == ""


def test_a_domain_still_retried_when_its_bundle_fails_is_cancelled_and_handed_over(
    env: Any, setup: dict[str, Any], fake_module: ps.Script
) -> None:
    ps.instance(env)
    fake_module.then("create", FinalFailure("no capacity"))
    reg = _registry(setup)
    reg.offline = True
    domain = _subscribe(env, setup, setup["tld"].plan_id, domain="halfway.test")
    hosting = ps.subscribe(env, setup["acc"], ps.plan(env))
    b = _provision(env, domain, hosting, order_id=4245)
    _run(env)  # the domain: registry down (retry later); the hosting: fails finally
    _run(env)  # the domain's rollback: a person's task
    assert _state(env, b) == ("failed", "no capacity")
    dops = _ops(env, domain)
    assert [(o.action, o.status, o.rollback) for o in dops] == [
        ("create", "failed", False),
        ("delete", "manual", True),
    ]
    # the module heard it: the row no longer holds the name as pending
    d = _domain(env, domain)
    assert (d.status, d.live_name) == ("failed", None)
    assert "rolled back" in (d.last_error or "")
    with UnitOfWork(env.app.engine) as uow:
        task = uow.session.scalar(select(Task).where(Task.operation_id == dops[1].id))
        assert task is not None
        task_id = task.id
    with service_ctx(env) as ctx:
        prov_ops.task_complete(ctx, task_id=task_id)
    assert _domain(env, domain).status == "deleted"


# ---------------------------------------------------------------- through an order


def _order(env: Any, setup: dict[str, Any], tmp_path: Any, name: str) -> Any:
    from pba_server.orders import placing
    from pba_server.orders.types import OrderLineInput, ParameterValue
    from tests.orders_support import card, gateway

    card(env, setup["acc"], gateway(env, tmp_path))
    with service_ctx(env) as ctx:
        return placing.order_place(
            ctx,
            account_id=setup["acc"],
            lines=[
                OrderLineInput(
                    plan_id=setup["tld"].plan_id,
                    period_count=1,
                    period_unit="year",
                    parameters=[ParameterValue("domain", name)],
                )
            ],
        )


def _settle(env: Any) -> Any:
    from pba_server.orders import engine as orders_engine

    for _ in range(4):  # the order's steps, the engine's operations, the order again
        orders_engine.run_orders(env.app.engine, env.app.runtime)
        _run(env)


def _order_get(env: Any, order_id: int) -> Any:
    from pba_server.orders import queries

    with service_ctx(env) as ctx:
        return queries.order_get(ctx, order_id=order_id)


def test_an_order_for_a_domain_registers_it(env: Any, setup: dict[str, Any], tmp_path: Any) -> None:
    o = _order(env, setup, tmp_path, "ordered.test")
    assert o.total == Decimal("12.00")
    _settle(env)
    o = _order_get(env, o.id)
    assert o.status == "completed" and o.subscription_id is not None
    d = _domain(env, o.subscription_id)
    assert (d.name, d.status) == ("ordered.test", "active") and d.expires_on is not None
    (svc,) = _services(env, o.subscription_id)
    assert svc.status == "active"


def test_an_order_for_a_taken_domain_is_refunded(
    env: Any, setup: dict[str, Any], tmp_path: Any
) -> None:
    from pba_server.payments.charges import payment_charge_get

    o = _order(env, setup, tmp_path, "taken-one.test")
    _settle(env)
    o = _order_get(env, o.id)
    assert o.status == "rejected" and "ObjectExists" in (o.reason or "")
    assert o.charge_id is not None
    with service_ctx(env) as ctx:
        ch = payment_charge_get(ctx, charge_id=o.charge_id)
    assert ch.refunded == ch.amount == Decimal("12.00")
    d = _domain(env, o.subscription_id)
    assert (d.status, d.live_name) == ("failed", None)


def test_an_order_for_a_live_or_bad_name_is_refused_before_it_is_placed(
    env: Any, setup: dict[str, Any], tmp_path: Any
) -> None:
    _register(env, setup, "mine.test")
    for name, why in [
        ("mine.test", "already registered here"),
        ("mine.example", "not a .test name"),
        ("not a name", "not a valid domain name"),
    ]:
        with pytest.raises(ValidationError, match=why) as e:
            _order(env, setup, tmp_path, name)
        assert e.value.field == "lines[0].parameters.domain"


def test_change_sets_the_subscriptions_current_nameservers(env: Any, setup: dict[str, Any]) -> None:
    from pba_server.subscriptions.models import Subscription

    sub = _register(env, setup, "ns.test")
    with UnitOfWork(env.app.engine) as uow:
        s = uow.session.get(Subscription, sub)
        assert s is not None
        s.parameters = json.dumps(
            {"domain": "ns.test", "nameservers": "ns1.new.example ns2.new.example"}
        )
        uow.commit()
    b = _action(env, sub, "change")
    assert b is not None
    _run(env)
    assert _state(env, b) == ("done", None)
    hosts = ["ns1.new.example", "ns2.new.example"]
    assert _registry(setup).domains["ns.test"]["nameservers"] == hosts
    assert json.loads(_domain(env, sub).nameservers) == hosts
    (svc,) = _services(env, sub)
    assert json.loads(svc.parameters)["nameservers"] == "ns1.new.example ns2.new.example"


def test_a_renewal_order_renews_the_domain_once(
    env: Any, setup: dict[str, Any], tmp_path: Any
) -> None:
    from pba_server.orders import placing
    from pba_server.orders.types import OrderLineInput

    o = _order(env, setup, tmp_path, "renew-me.test")
    _settle(env)
    sub = _order_get(env, o.id).subscription_id
    first = _domain(env, sub).expires_on
    assert first is not None
    with service_ctx(env) as ctx:
        r = placing.order_place(
            ctx,
            account_id=setup["acc"],
            order_type="renewal",
            lines=[OrderLineInput(subscription_id=sub)],
        )
    assert r.total == Decimal("10.00")  # the TLD's renew price
    _settle(env)
    assert _order_get(env, r.id).status == "completed"
    assert _domain(env, sub).expires_on == first.replace(year=first.year + 1)
    assert [c for c in _registry(setup).calls if c[0] == "renew"] == [("renew", "renew-me.test")]
