"""Reselling an upstream pba-server: a second server process of our own is the
upstream (its own SQLite database); our side (the ``env`` database, both
backends) resells its plans with the ``upstream_pba`` processing module and
its domains with the ``upstream_pba_registrar`` plugin."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.catalog.models import PlanVersion
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import ModuleSetting, PlanPeriod
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.secrets import SecretBox
from pba_server.payments.models import PluginInstance
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.types import SettingValue
from pba_server.provisioning import api as prov
from pba_server.provisioning.models import ProvisioningOperation, Service
from pba_server.sdk import NotSupported, loader
from pba_server.sdk.provisioning import (
    Done,
    FinalFailure,
    InProgress,
    ServiceRequest,
)
from pba_server.sdk.registrar import Contact, DomainRegistrar, ObjectExists, RegistrarUnavailable
from pba_server.sdk.testing import RegistrarContract
from pba_server.subscriptions.models import Subscription
from tests.catalog_support import service_ctx
from tests.domains_support import customer
from tests.prov_support import subscribe
from tests.serverproc import child_env, cli, free_port, running
from tests.support import page_items, xmlrpc_client

UP_PW = "upstream-admin-pw-1"
RES_PW = "reseller-pass-123"
CONTACT = {
    "kind": "administrative",
    "name": "Res Admin",
    "email": "admin@reseller.example",
    "phone": "+49.301234567",
    "address": "Hauptstr. 1",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


class Upstream:
    def __init__(self, base: str) -> None:
        self.base = base
        self.url = f"{base}/soap"
        self.ids: dict[str, int] = {}
        self.api_key = ("", "")

    def admin(self) -> Any:
        return xmlrpc_client(self.base, "admin", UP_PW)

    def reseller(self) -> Any:
        return xmlrpc_client(self.base, "res-admin", RES_PW)

    def orders(self) -> list[dict[str, Any]]:
        with self.reseller() as r:
            return list(r.OrderList({"limit": 1000})["items"])

    def open_tasks(self) -> list[dict[str, Any]]:
        with self.admin() as a:
            return page_items(a.TaskList({"status": "open"}))

    def complete_tasks(self, data: dict[str, str] | None = None, timeout: float = 30) -> int:
        """Wait for open tasks at the upstream and complete them; how many."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.open_tasks()
            if tasks:
                with self.admin() as a:
                    for t in tasks:
                        a.TaskComplete(
                            {
                                "task_id": t["id"],
                                "data": [{"name": k, "value": v} for k, v in (data or {}).items()],
                            }
                        )
                return len(tasks)
            if time.monotonic() > deadline:
                raise AssertionError("no task appeared at the upstream")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A second pba-server process with its own SQLite database: a reseller
    account (our side's login there) with a credit limit, a plan provisioned
    by hand (module manual) and a TLD registered with sandbox_registrar."""
    where = tmp_path_factory.mktemp("upstream")
    url = f"sqlite:///{where / 'upstream.sqlite'}"
    env = child_env(PBA_SECRET_KEY=SecretBox.generate_key().decode(), PBA_DATABASE_URL=url)
    done = cli("init", "--admin-login", "admin", "--admin-password", UP_PW, cwd=where, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    with running(cwd=where, env=env) as server:
        up = Upstream(server.base)
        with up.admin() as a:
            r = a.AccountCreate(
                {
                    "type": "reseller",
                    "name": "Downstream Hosting",
                    "partner_level": "basic",
                    "credit_limit": "1000.00",
                    "country": "DE",
                    "contacts": [CONTACT, {**CONTACT, "kind": "technical"}],
                }
            )
            a.UserCreate(
                {
                    "account_id": r["id"],
                    "login": "res-admin",
                    "password": RES_PW,
                    "full_name": "Res Admin",
                    "roles": ["admin"],
                }
            )
            t = a.ServiceTemplateCreate(
                {
                    "name": "Managed hosting",
                    "service_type": "hosting",
                    "module": "manual",
                    "order_parameters": [
                        {"name": "hostname", "type": "hostname", "required": False}
                    ],
                }
            )
            p = a.PlanCreate(
                {
                    "template_id": t["id"],
                    "name": "Managed S",
                    "periods": [
                        {"count": 1, "unit": "month", "setup_fee": "0", "recurring_fee": "5.00"}
                    ],
                }
            )
            a.PlanPublish({"plan_id": p["id"]})
            m = a.PlanCreate(
                {
                    "template_id": t["id"],
                    "name": "Managed M",
                    "periods": [
                        {"count": 1, "unit": "month", "setup_fee": "0", "recurring_fee": "8.00"}
                    ],
                }
            )
            a.PlanPublish({"plan_id": m["id"]})
            with xmlrpc_client(server.base, "res-admin", RES_PW) as res:
                key = res.ApiKeyCreate({"name": "downstream registrar"})
            disk = a.ResourceCreate({"name": "Disk", "unit": "GB", "kind": "allocated"})
            dt = a.ServiceTemplateCreate(
                {
                    "name": "Managed disk",
                    "service_type": "hosting",
                    "module": "manual",
                    "resources": [{"resource_id": disk["id"], "default_limit": "10"}],
                }
            )
            d = a.PlanCreate(
                {
                    "template_id": dt["id"],
                    "name": "Managed D",
                    "periods": [
                        {"count": 1, "unit": "month", "setup_fee": "0", "recurring_fee": "3.00"}
                    ],
                    "rates": [
                        {
                            "resource_id": disk["id"],
                            "included": "10",
                            "maximum": "100",
                            "unit_recurring_price": "0.10",
                        }
                    ],
                }
            )
            a.PlanPublish({"plan_id": d["id"]})
            reg = a.PluginConfigure(
                {
                    "plugin": "sandbox_registrar",
                    "name": "registry",
                    "settings": [{"name": "registry", "value": f"up-{uuid.uuid4().hex[:6]}"}],
                }
            )
            tld = a.TldCreate(
                {
                    "name": "test",
                    "instance_id": reg["id"],
                    "prices": [
                        {"years": 1, "register": "8.00", "renew": "7.00", "transfer": "6.00"}
                    ],
                }
            )
        up.api_key = (key["key_id"], key["secret"])
        up.ids = {
            "reseller": r["id"],
            "plan": p["id"],
            "bigger_plan": m["id"],
            "disk_plan": d["id"],
            "tld_plan": tld["plan_id"],
        }
        yield up


# ---------------------------------------------------------------- our side


def _settings(up: Upstream, **extra: str) -> dict[str, str]:
    return {
        "url": up.url,
        "login": "res-admin",
        "password": RES_PW,
        "timeout": "10",
        "poll_seconds": "1",
        # our test databases restart their operation ids: keys must not meet
        "key_prefix": f"t{uuid.uuid4().hex[:8]}-",
        **extra,
    }


def _instance(env: Any, settings: dict[str, str], name: str = "upstream") -> int:
    from pba_server.provisioning import service as prov_ops

    with service_ctx(env, "admin", "ProcessingModuleConfigure") as ctx:
        return prov_ops.processing_module_configure(
            ctx,
            plugin="upstream_pba",
            name=name,
            settings=[SettingValue(k, v) for k, v in settings.items()],
        ).instance_id


def _plan(env: Any, upstream_plan_id: int, name: str = "Resold hosting") -> int:
    """Our published plan on a template of module upstream_pba; its version id."""
    with service_ctx(env) as ctx:
        t = service_template_create(
            ctx,
            name=name,
            service_type="hosting",
            module="upstream_pba",
            module_settings=[
                ModuleSetting("upstream_plan_id", str(upstream_plan_id)),
                ModuleSetting("period", "1 month"),
            ],
        )
        p = plan_create(
            ctx,
            template_id=t.id,
            name=name,
            periods=[PlanPeriod(1, "month", Decimal(0), Decimal("9.00"))],
        )
        plan_publish(ctx, plan_id=p.id)
        return int(ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == p.id)))


def _ctx_call(env: Any, fn: Callable[[Any], Any]) -> Any:
    with UnitOfWork(env.app.engine) as uow:
        provider = uow.session.execute(
            select(Account.id, Account.path).where(Account.type == "provider")
        ).one()
        ctx = system_context(
            uow,
            env.clock,
            account_id=provider[0],
            account_path=provider[1],
            operation="test",
            runtime=env.app.runtime,
        )
        out = fn(ctx)
        uow.commit()
    return out


def _service(env: Any, sub_id: int) -> Service:
    with UnitOfWork(env.app.engine) as uow:
        svc = uow.session.scalar(select(Service).where(Service.subscription_id == sub_id))
        assert svc is not None
        uow.session.expunge(svc)
        return svc


def _ops(env: Any, sub_id: int) -> list[ProvisioningOperation]:
    with UnitOfWork(env.app.engine) as uow:
        ops = list(
            uow.session.scalars(
                select(ProvisioningOperation)
                .join(Service, Service.id == ProvisioningOperation.service_id)
                .where(Service.subscription_id == sub_id)
                .order_by(ProvisioningOperation.id)
            )
        )
        for op in ops:
            uow.session.expunge(op)
        return ops


def _drive(env: Any, sub_id: int, action: str, timeout: float = 40) -> ProvisioningOperation:
    """Run our due operations (moving our clock, never sleeping it) until the
    subscription's last ``action`` operation is no longer pending/running."""
    deadline = time.monotonic() + timeout
    while True:
        env.clock.freeze(env.clock.now() + timedelta(minutes=6))
        prov.run_pending(env.app.engine, env.app.runtime)
        op = [o for o in _ops(env, sub_id) if o.action == action][-1]
        if op.status not in ("pending", "running"):
            return op
        if time.monotonic() > deadline:
            raise AssertionError(f"{action} is still {op.status}: {op.message}")
        time.sleep(0.2)  # the upstream process works in real time


def _upstream_order_done(up: Upstream, order_id: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with up.reseller() as r:
        while True:
            o = r.OrderGet({"order_id": order_id})
            if o["status"] not in ("running", "waiting"):
                return dict(o)
            if time.monotonic() > deadline:
                raise AssertionError(f"upstream order {order_id}: {o}")
            time.sleep(0.2)


def _module(env: Any, instance_id: int) -> Any:
    from pba_server.provisioning.engine import module_object

    with UnitOfWork(env.app.engine) as uow:
        inst = uow.session.get(PluginInstance, instance_id)
        assert inst is not None
        return module_object(env.app.secrets, inst, env.clock)


def test_create_prolong_delete_through_the_upstream(env, api, upstream):
    # the instance is configured through our public API
    inst = api.xmlrpc().ProcessingModuleConfigure(
        {
            "plugin": "upstream_pba",
            "name": "distributor",
            "settings": [{"name": k, "value": v} for k, v in _settings(upstream).items()],
        }
    )
    assert inst["capabilities"] and "password" in inst["secret_settings_set"]
    version = _plan(env, upstream.ids["plan"])
    cust = customer(env, "Hosting Buyer")
    sub = subscribe(env, cust, version, {"hostname": "www.buyer.example"})
    before = len(upstream.orders())
    _ctx_call(env, lambda ctx: prov.provision_subscription(ctx, sub))
    prov.run_pending(env.app.engine, env.app.runtime)
    op = _ops(env, sub)[0]
    assert op.status == "pending" and "upstream sales order" in (op.message or "")
    orders = upstream.orders()
    assert len(orders) == before + 1
    placed = orders[0]
    assert placed["account_id"] == upstream.ids["reseller"] and placed["on_account"]
    # asked again (a poll, a retry after a lost answer): the same order, never a second
    env.clock.freeze(env.clock.now() + timedelta(minutes=6))
    prov.run_pending(env.app.engine, env.app.runtime)
    svc = _service(env, sub)
    module = _module(env, inst["instance_id"])
    again = module.perform(
        ServiceRequest(
            key=str(op.id),
            action="create",
            service_id=svc.id,
            subscription_id=sub,
            account_id=cust,
            account_name="Hosting Buyer",
            service_type="hosting",
            template="Resold hosting",
            module_settings={"upstream_plan_id": str(upstream.ids["plan"]), "period": "1 month"},
            parameters={"hostname": "www.buyer.example"},
            limits={},
        )
    )
    assert isinstance(again, InProgress)
    assert len(upstream.orders()) == before + 1
    # a person at the upstream does the work
    assert upstream.complete_tasks({"login_url": "https://panel.upstream.example/42"}) == 1
    order = _upstream_order_done(upstream, placed["id"])
    assert order["status"] == "completed"
    done = _drive(env, sub, "create")
    assert done.status == "done"
    svc = _service(env, sub)
    assert svc.status == "active"
    assert svc.platform_id == str(order["subscription_id"])
    data = json.loads(svc.data)
    assert data["login_url"] == "https://panel.upstream.example/42"
    assert data["upstream_order_id"] == str(order["id"])
    assert data["upstream_status"] == "active"
    # our public API shows it
    shown = page_items(api.xmlrpc().ServiceList({"subscription_id": sub}))
    assert shown[0]["platform_id"] == svc.platform_id

    # prolong: renewed upstream until its period reaches ours
    with upstream.reseller() as r:
        up_sub = r.SubscriptionGet({"subscription_id": int(svc.platform_id)})
    until = date.fromisoformat(str(up_sub["period_end"])[:10]) + timedelta(days=20)
    _ctx_call(env, lambda ctx: prov.request_action(ctx, sub, "prolong", until=until))
    prolonged = _drive(env, sub, "prolong")
    assert prolonged.status == "done", prolonged.message
    with upstream.reseller() as r:
        renewed = r.SubscriptionGet({"subscription_id": int(svc.platform_id)})
    assert date.fromisoformat(str(renewed["period_end"])[:10]) >= until
    renewals = [
        o
        for o in upstream.orders()
        if o["type"] == "renewal" and o["subscription_id"] == int(svc.platform_id)
    ]
    assert len(renewals) == 1  # one month was enough; never twice

    # suspend: the upstream lets only its own staff suspend -> a manual task here
    _ctx_call(env, lambda ctx: prov.request_action(ctx, sub, "suspend"))
    suspended = _drive(env, sub, "suspend")
    assert suspended.status == "manual"

    # delete: cancelled upstream (its person deletes the service there)
    _ctx_call(env, lambda ctx: prov.request_action(ctx, sub, "delete"))
    prov.run_pending(env.app.engine, env.app.runtime)
    upstream.complete_tasks()
    deleted = _drive(env, sub, "delete")
    assert deleted.status == "done", deleted.message
    with upstream.reseller() as r:
        gone = r.SubscriptionGet({"subscription_id": int(svc.platform_id)})
    assert gone["status"] == "cancelled"
    assert _service(env, sub).status == "deleted"


def test_an_upstream_that_is_down_is_retried(env):
    dead = Upstream(f"http://127.0.0.1:{free_port()}")
    _instance(env, _settings(dead))
    version = _plan(env, 1)
    cust = customer(env, "Patient Buyer")
    sub = subscribe(env, cust, version, {"hostname": "a.example"})
    _ctx_call(env, lambda ctx: prov.provision_subscription(ctx, sub))
    prov.run_pending(env.app.engine, env.app.runtime)
    op = _ops(env, sub)[0]
    assert op.status == "pending" and op.attempts == 1
    assert "Server.Unavailable" in (op.message or "")
    assert _service(env, sub).status == "provisioning"


def test_a_client_fault_is_final(env, upstream):
    _instance(env, _settings(upstream))
    version = _plan(env, 987654)  # no such plan upstream
    cust = customer(env, "Unlucky Buyer")
    sub = subscribe(env, cust, version, {"hostname": "b.example"})
    _ctx_call(env, lambda ctx: prov.provision_subscription(ctx, sub))
    prov.run_pending(env.app.engine, env.app.runtime)
    op = _ops(env, sub)[0]
    assert op.status == "failed"
    assert "Client.Validation" in (op.message or "")
    assert _service(env, sub).status == "failed"


def test_wrong_credentials_are_retried(env, upstream):
    _instance(env, _settings(upstream, password="not-the-password"))
    version = _plan(env, upstream.ids["plan"])
    cust = customer(env, "Another Buyer")
    sub = subscribe(env, cust, version, {"hostname": "c.example"})
    _ctx_call(env, lambda ctx: prov.provision_subscription(ctx, sub))
    prov.run_pending(env.app.engine, env.app.runtime)
    op = _ops(env, sub)[0]
    assert op.status == "pending" and "Client.AuthFailed" in (op.message or "")


def _request(action: str, key: str, **kw: Any) -> ServiceRequest:
    fields: dict[str, Any] = {
        "key": key,
        "action": action,
        "service_id": 1,
        "subscription_id": None,
        "account_id": 1,
        "account_name": "x",
        "service_type": "hosting",
        "template": "t",
        "module_settings": {},
        "parameters": {},
        "limits": {},
    }
    fields.update(kw)
    return ServiceRequest(**fields)


def test_change_moves_the_upstream_subscription_to_another_plan(upstream):
    module = loader.plugins()["upstream_pba"].cls(_settings(upstream))
    key = uuid.uuid4().hex[:8]
    settings = {"upstream_plan_id": str(upstream.ids["plan"])}
    assert isinstance(module.perform(_request("create", key, module_settings=settings)), InProgress)
    upstream.complete_tasks()
    deadline = time.monotonic() + 30
    while not isinstance(
        made := module.perform(_request("create", key, module_settings=settings)), Done
    ):
        assert isinstance(made, InProgress) and time.monotonic() < deadline
        time.sleep(0.2)
    assert made.platform_id
    bigger = {"upstream_plan_id": str(upstream.ids["bigger_plan"])}
    change = _request("change", key + "c", module_settings=bigger, platform_id=made.platform_id)
    assert isinstance(module.perform(change), InProgress)  # the upstream's person changes it
    upstream.complete_tasks()
    deadline = time.monotonic() + 30
    while not isinstance(changed := module.perform(change), Done):
        assert isinstance(changed, InProgress) and time.monotonic() < deadline
        time.sleep(0.2)
    assert changed.data["upstream_plan_id"] == str(upstream.ids["bigger_plan"])
    # nothing else to change upstream: a person does it
    with pytest.raises(NotSupported):
        module.perform(
            _request("change", key + "d", module_settings=bigger, platform_id=made.platform_id)
        )
    # sync reads the upstream subscription back
    synced = module.perform(_request("sync", key + "s", platform_id=made.platform_id))
    assert isinstance(synced, Done) and synced.data["upstream_status"] == "active"


def _until_done(module: Any, request: ServiceRequest, timeout: float = 30) -> Done:
    deadline = time.monotonic() + timeout
    while not isinstance(result := module.perform(request), Done):
        assert isinstance(result, InProgress), result
        assert time.monotonic() < deadline, result
        time.sleep(0.2)
    return result


def test_change_buys_the_resources_we_sell_above_the_upstream_limit(upstream):
    module = loader.plugins()["upstream_pba"].cls(_settings(upstream))
    key = uuid.uuid4().hex[:8]
    settings = {"upstream_plan_id": str(upstream.ids["disk_plan"])}
    create = _request("create", key, module_settings=settings)
    assert isinstance(module.perform(create), InProgress)
    upstream.complete_tasks()
    made = _until_done(module, create)
    change = _request(
        "change",
        key + "c",
        module_settings=settings,
        platform_id=made.platform_id,
        limits={"Disk": Decimal(25)},
    )
    assert isinstance(module.perform(change), InProgress)
    upstream.complete_tasks()
    _until_done(module, change)
    with upstream.reseller() as r:
        sub = r.SubscriptionGet({"subscription_id": int(made.platform_id)})
    assert Decimal(sub["resources"][0]["limit"]) == 25

    def resource_orders() -> int:
        return len(
            [
                o
                for o in upstream.orders()
                if o["type"] == "resource" and o["subscription_id"] == int(made.platform_id)
            ]
        )

    assert resource_orders() == 1
    assert isinstance(module.perform(change), Done)  # asked again: nothing bought twice
    assert resource_orders() == 1


def test_an_order_the_upstream_rejects_is_a_final_failure(upstream):
    module = loader.plugins()["upstream_pba"].cls(_settings(upstream))
    key = uuid.uuid4().hex[:8]
    request = _request(
        "create", key, module_settings={"upstream_plan_id": str(upstream.ids["plan"])}
    )
    assert isinstance(module.perform(request), InProgress)
    deadline = time.monotonic() + 30
    while not (tasks := upstream.open_tasks()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with upstream.admin() as a:
        a.TaskReject({"task_id": tasks[0]["id"], "reason": "no capacity in that rack"})
    while not isinstance(result := module.perform(request), FinalFailure):
        assert isinstance(result, InProgress) and time.monotonic() < deadline
        time.sleep(0.2)
    assert "rejected" in result.message and "no capacity in that rack" in result.message


def test_fault_classes(upstream):
    from pba_server.sdk.upstream import Upstream as Client
    from pba_server.sdk.upstream import UpstreamFault

    assert UpstreamFault("Server.Unavailable", "db down").retryable
    assert UpstreamFault("Client.AuthFailed", "").retryable
    assert UpstreamFault("Client.CreditLimitExceeded", "").retryable
    assert UpstreamFault("Client.InvalidState", "subscription 3 has order 9 in progress").retryable
    assert not UpstreamFault("Client.InvalidState", "subscription 3 is cancelled").retryable
    assert not UpstreamFault("Client.Validation", "plan_id: no such plan").retryable
    # something that is not the upstream's SOAP endpoint: retried, never a crash
    with pytest.raises(UpstreamFault) as e:
        Client(f"{upstream.base}/health", "res-admin", RES_PW, timeout=5).call("WhoAmI")
    assert e.value.retryable, e.value
    me = Client(upstream.url, "res-admin", RES_PW, timeout=5)
    assert me.account_id() == upstream.ids["reseller"]
    assert me.account_id("77") == 77
    me.close()


def test_module_settings_are_checked():
    cls = loader.plugins()["upstream_pba"].cls
    from pba_server.sdk import ConfigurationError

    with pytest.raises(ConfigurationError):
        cls({"url": "ftp://x", "login": "a", "password": "b"})
    with pytest.raises(ConfigurationError):
        cls({"url": "http://x/soap", "login": "", "password": "b"})
    m = cls({"url": "http://x/soap", "login": "a", "password": "b", "poll_seconds": "5"})
    assert isinstance(
        m.perform(
            ServiceRequest(
                key="1",
                action="create",
                service_id=1,
                subscription_id=None,
                account_id=1,
                account_name="x",
                service_type="hosting",
                template="t",
                module_settings={},
                parameters={},
                limits={},
            )
        ),
        FinalFailure,
    )


# ---------------------------------------------------------------- the registrar


def _registrar(env: Any, up: Upstream, **extra: str) -> Any:
    with service_ctx(env) as ctx:
        inst = plugin_configure(
            ctx,
            plugin="upstream_pba_registrar",
            name=f"upstream-{uuid.uuid4().hex[:6]}",
            settings=[
                SettingValue(k, v)
                for k, v in {
                    "url": up.url,
                    "login": "res-admin",
                    "password": RES_PW,
                    "timeout": "10",
                    "wait": "20",
                    "key_prefix": f"t{uuid.uuid4().hex[:8]}-",
                    **extra,
                }.items()
            ],
        )
    from pba_server.domains.registrars import registrar_for

    with UnitOfWork(env.app.engine) as uow:
        row = uow.session.get(PluginInstance, inst.id)
        assert row is not None
        return inst.id, registrar_for(env.app.secrets, row, env.clock)


REGISTRANT = {
    "registrant": Contact(
        name="Dora Domain", email="dora@buyer.example", phone="+49.301234567", country="DE"
    )
}


def test_registrar_check_register_renew_and_balance(env, upstream):
    _inst, reg = _registrar(env, upstream)
    name = f"shop-{uuid.uuid4().hex[:6]}.test"
    checked = reg.check([name, "taken-one.test", "premium-x.test"])
    assert [c.available for c in checked] == [True, False, True]
    assert checked[2].price == Decimal("500.00")
    before = reg.get_balance()
    key = f"op-{uuid.uuid4().hex[:6]}"
    made = reg.register(key=key, name=name, years=1, contacts=REGISTRANT, nameservers=[])
    assert made.status == "active" and made.expires_on is not None
    # the same key again: the same domain, no second order
    n_orders = len(upstream.orders())
    again = reg.register(key=key, name=name, years=1, contacts=REGISTRANT, nameservers=[])
    assert again == made and len(upstream.orders()) == n_orders
    # another key: the name is taken
    with pytest.raises(ObjectExists):
        reg.register(key=key + "b", name=name, years=1, contacts=REGISTRANT, nameservers=[])
    info = reg.domain_info(name)
    assert info.status == "active" and info.expires_on == made.expires_on
    with upstream.reseller() as r:
        there = r.DomainList({"name": name})["items"][0]
    assert any(
        c["role"] == "registrant" and c["email"] == "dora@buyer.example" for c in there["contacts"]
    )
    ns = reg.set_nameservers(
        key="ns1", name=name, nameservers=["ns1.dns.example", "ns2.dns.example"]
    )
    assert ns.nameservers == ("ns1.dns.example", "ns2.dns.example")
    renewed = reg.renew(key="renew-1", name=name, years=1, current_expiry=made.expires_on)
    assert renewed.expires_on is not None and renewed.expires_on.year == made.expires_on.year + 1
    # repeated: already done, not renewed twice
    assert reg.renew(key="renew-1", name=name, years=1, current_expiry=made.expires_on) == renewed
    after = reg.get_balance()
    assert after.currency == before.currency
    assert after.amount == before.amount - Decimal("15.00")  # 8.00 + 7.00 on account


def test_the_balance_monitor_reads_our_credit_at_the_upstream(env, upstream):
    from pba_server.domains import jobs as domain_jobs
    from pba_server.domains import monitors

    inst, reg = _registrar(env, upstream)
    balance = reg.get_balance()
    with upstream.reseller() as r:
        there = r.AccountBalanceGet({})
    assert balance.amount == Decimal(there["available_credit"])
    with service_ctx(env) as ctx:
        monitors.registrar_balance_minimum_set(
            ctx,
            instance_id=inst,
            minimum=balance.amount + Decimal("1000.00"),
            currency=balance.currency,
        )
    with UnitOfWork(env.app.engine) as uow:
        summary = domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()
    assert summary.startswith("1 registrar balance(s) checked, 1 low"), summary
    with service_ctx(env) as ctx:
        monitor = monitors.registrar_monitor_list(ctx).items[0]
    assert monitor.last_balance == balance.amount and monitor.alerted_on is not None


def test_registrar_upstream_down_is_retryable(env):
    dead = Upstream(f"http://127.0.0.1:{free_port()}")
    _inst, reg = _registrar(env, dead)
    with pytest.raises(RegistrarUnavailable):
        reg.check(["a.test"])
    with pytest.raises(RegistrarUnavailable):
        reg.get_balance()


def test_a_domain_registered_through_the_upstream(env, api, upstream):
    from pba_server.domains import records, tlds
    from pba_server.domains.types import TldPrice

    inst, _reg = _registrar(env, upstream)
    with service_ctx(env) as ctx:
        tld = tlds.tld_create(
            ctx,
            name="test",
            instance_id=inst,
            prices=[TldPrice(1, Decimal("12.00"), Decimal("11.00"), None)],
        )
        version = int(
            ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == tld.plan_id))
        )
    cust = customer(env, "Domain Buyer")
    name = f"resold-{uuid.uuid4().hex[:6]}.test"
    # our SOAP API asks the upstream
    checked = api.soap().DomainCheck(names=[name, "taken-zz.test"])
    assert [c.available for c in checked] == [True, False]
    assert checked[0].register_price == Decimal("12.00")
    with UnitOfWork(env.app.engine) as uow:
        acc = uow.session.get(Account, cust)
        assert acc is not None and acc.parent_id is not None
        from pba_server.subscriptions.store import new_subscription

        sub = new_subscription(
            uow.session,
            env.clock,
            account_id=cust,
            vendor_id=acc.parent_id,
            plan_version_id=version,
            period_count=1,
            period_unit="year",
            start=env.clock.now().date(),
            parameters={"domain": name},
        ).id
        uow.commit()
    _ctx_call(env, lambda ctx: prov.provision_subscription(ctx, sub))
    op = _drive(env, sub, "create", timeout=60)
    assert op.status == "done", op.message
    with service_ctx(env) as ctx:
        page = records.domain_list(ctx, name=name)
    assert page.items[0].status == "active" and page.items[0].expires_on is not None
    with upstream.reseller() as r:
        there = r.DomainList({"name": name})["items"]
    assert there and there[0]["status"] == "active"
    # the registrant at the upstream is our customer, not our reseller account
    reg = next(c for c in there[0]["contacts"] if c["role"] == "registrant")
    assert reg["email"] == "ada@example.com"
    with UnitOfWork(env.app.engine) as uow:
        assert uow.session.get(Subscription, sub) is not None


def test_plugins_are_listed():
    found = loader.plugins()
    assert found["upstream_pba"].status == "ok"
    assert found["upstream_pba_registrar"].status == "ok"


class TestUpstreamRegistrarContract(RegistrarContract):
    """The conformance kit, against the upstream process (its sandbox registry)."""

    plugin = loader.plugins()["upstream_pba_registrar"].cls
    tld = "test"
    taken_name = "taken-by-someone.test"
    transfer_name = "theirs.test"

    @pytest.fixture(autouse=True)
    def _upstream(self, upstream: Upstream) -> None:
        self.up = upstream

    def make_registrar(self) -> DomainRegistrar:
        return self.plugin(
            {
                "url": self.up.url,
                "login": self.up.api_key[0],  # API credentials of our reseller's user
                "password": self.up.api_key[1],
                "timeout": "10",
                "wait": "20",
                "key_prefix": "contract-",
            }
        )

    def test_a_slow_transfer_is_pending(self) -> None:
        name = f"slow-{uuid.uuid4().hex[:8]}.test"
        moved = self.make_registrar().transfer(
            key=self.key(), name=name, auth_code="right", years=1
        )
        assert moved.status == "pending"
