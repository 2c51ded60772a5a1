"""What a tenant sees of a plugin's trouble (issue 16): a plugin whose
exceptions carry its secret key, reached through the real endpoints as the
customer. The tenant sees no secret and no exception class, and a reference;
the operator's log has the masked detail, the plugin, the instance and the
traceback under that reference. A call the guard does not make (breaker
open) answers ``Server.Busy`` and leaves nothing behind."""

from __future__ import annotations

import logging
import re
import xmlrpc.client
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.accounts import users as accounts
from pba_server.core.db import UnitOfWork
from pba_server.payments import plugins
from pba_server.payments.models import GatewayPayment, GatewayRefund
from pba_server.payments.types import SettingValue
from pba_server.sdk import (
    SDK_VERSION,
    ChargeResult,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    RefundResult,
    SettingField,
    loader,
)
from pba_server.sdk import guard as plugincall
from pba_server.sdk.registrar import (
    CheckResult,
    DomainInfo,
    DomainRegistrar,
    DomainResult,
)
from tests import domains_support as ds
from tests.catalog_support import service_ctx
from tests.support import page_items

LEAKED = "sk_acme_test_4f1d"
PW = "Tenant-pass-1234"
REF = re.compile(r"ref ([0-9a-f]{12})")


class LeakyCard(PaymentGateway):
    """A gateway that raises with its key in the message while ``mode`` is raise."""

    info = PluginInfo(
        name="leaky_card",
        version="1.0",
        sdk_version=SDK_VERSION,
        settings=(SettingField("api_key", secret=True),),
        capabilities=frozenset({"charge", "refund", "partial_refund"}),
    )
    mode = "ok"

    def _leak(self, what: str) -> None:
        if type(self).mode == "raise":
            raise RuntimeError(f"{what} refused upstream: api_key={self.settings['api_key']}")

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        self._leak("charge")
        return ChargeResult(f"ch_{key}", amount, currency)

    def lookup(self, *, key: str) -> LookupResult:
        self._leak("lookup")
        return LookupResult("not_found")

    def refund(self, *, key: str, charge_reference: str, amount: Decimal) -> RefundResult:
        self._leak("refund")
        return RefundResult(f"re_{key}", amount)

    def validate_token(self, token: str) -> None:
        self._leak("validate_token")


class LeakyRegistrar(DomainRegistrar):
    info = PluginInfo(
        name="leaky_registrar2",
        version="1.0",
        sdk_version=SDK_VERSION,
        kind="domain_registrar",
        settings=(SettingField("api_key", secret=True),),
        capabilities=frozenset({"check", "register", "renew", "transfer", "info", "balance"}),
    )

    def get_balance(self) -> Any:
        raise RuntimeError(f"balance refused upstream: api_key={self.settings['api_key']}")

    def check(self, names: list[str]) -> list[CheckResult]:
        return [CheckResult(n, True) for n in names]

    def register(self, *, key: str, name: str, years: int, contacts: Any, nameservers: Any) -> Any:
        raise RuntimeError(f"registry said no (api_key={self.settings['api_key']})")

    def renew(self, **kw: Any) -> DomainResult:
        raise NotImplementedError

    def transfer(self, **kw: Any) -> DomainResult:
        raise NotImplementedError

    def domain_info(self, name: str) -> DomainInfo:
        raise NotImplementedError


@pytest.fixture
def leaky() -> Any:
    found = loader.plugins()
    found["leaky_card"] = loader.LoadedPlugin("leaky_card", "test", "ok", cls=LeakyCard)
    found["leaky_registrar2"] = loader.LoadedPlugin(
        "leaky_registrar2", "test", "ok", cls=LeakyRegistrar
    )
    LeakyCard.mode = "ok"
    yield
    found.pop("leaky_card", None)
    found.pop("leaky_registrar2", None)
    plugincall.runtime().reset()


def _tenant(env: Any, acc: int, login: str) -> str:
    with service_ctx(env) as ctx:
        accounts.user_create(
            ctx, account_id=acc, login=login, password=PW, full_name="T", roles=["admin"]
        )
    return login


def _proxy(server: str, login: str) -> xmlrpc.client.ServerProxy:
    host = server.removeprefix("http://")
    return xmlrpc.client.ServerProxy(f"http://{login}:{PW}@{host}/xmlrpc", allow_none=True)


def _setup_card(env: Any) -> tuple[int, int, int]:
    """The provider's leaky gateway, a customer with a user and a stored card."""
    from tests.billing_support import customer

    with service_ctx(env) as ctx:
        inst = plugins.plugin_configure(
            ctx, plugin="leaky_card", name="leaky", settings=[SettingValue("api_key", LEAKED)]
        )
    acc = customer(env, "Tenant")
    with service_ctx(env) as ctx:
        from pba_server.payments import methods

        m = methods.payment_method_add(
            ctx,
            account_id=acc,
            token="tok",
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="T",
            instance_id=inst.id,
        )
    return inst.id, acc, m.id


def _tenant_sees(text: str) -> str:
    """The reference in what a tenant read; no secret, no exception class."""
    assert LEAKED not in text and "RuntimeError" not in text and "Traceback" not in text, text
    found = REF.search(text)
    assert found, text
    return found.group(1)


def _operator_has(caplog: pytest.LogCaptureFixture, ref: str, *, plugin: str, inst: int) -> None:
    """The operator's record under ``ref``: masked detail, plugin, instance, traceback."""
    records = [r for r in caplog.records if ref in r.getMessage()]
    assert records, f"no log record for ref {ref}"
    text = "\n".join(r.getMessage() + "\n" + (r.exc_text or "") for r in records)
    assert f"{plugin} (instance {inst})" in text, text
    assert "refused upstream: api_key=***" in text or "said no (api_key=***" in text, text
    assert "Traceback" in text, text
    assert LEAKED not in caplog.text


def test_a_charge_error_reaches_the_customer_generic_and_the_log_in_full(
    env, server, leaky, caplog
):
    caplog.set_level(logging.INFO)
    inst, acc, method = _setup_card(env)
    login = _tenant(env, acc, "tenant-charge")
    LeakyCard.mode = "raise"
    with _proxy(server, login) as proxy:
        got = proxy.PaymentCharge(
            {"payment_method_id": method, "idempotency_key": "c1", "amount": "5.00"}
        )
        assert got["status"] == "pending"
        ref = _tenant_sees(got["message"])
        again = proxy.PaymentChargeGet({"charge_id": got["id"]})
        assert _tenant_sees(again["message"]) == ref
    _operator_has(caplog, ref, plugin="leaky_card", inst=inst)
    # the call site's own record names the plugin and the instance too
    assert f"charge {got['id']}: plugin leaky_card (instance {inst}): outcome unknown" in (
        caplog.text
    )


def test_a_refund_error_and_a_token_check_error(env, server, leaky, caplog):
    caplog.set_level(logging.INFO)
    inst, acc, method = _setup_card(env)
    with _proxy_admin(server, env) as admin:
        ok = admin.PaymentCharge(
            {"payment_method_id": method, "idempotency_key": "c2", "amount": "9.00"}
        )
        assert ok["status"] == "captured"
        LeakyCard.mode = "raise"
        r = admin.PaymentRefund(
            {"charge_id": ok["id"], "amount": "4.00", "reason": "x", "idempotency_key": "r1"}
        )
    assert r["status"] == "pending"
    (ref,) = {m for m in REF.findall(caplog.text)}
    _operator_has(caplog, ref, plugin="leaky_card", inst=inst)
    assert f"refund {r['id']}: plugin leaky_card (instance {inst}): outcome unknown" in caplog.text
    with UnitOfWork(env.app.engine) as uow:  # nobody owns it now: reconciled by age
        row = uow.session.get(GatewayRefund, r["id"])
        assert row is not None and row.lease_until is None and row.sent_at is not None
    # PaymentMethodAdd asks the gateway to check the token: the fault is generic too
    caplog.clear()
    with _proxy_admin(server, env) as proxy, pytest.raises(xmlrpc.client.Fault) as fault:
        proxy.PaymentMethodAdd(
            {
                "account_id": acc,
                "token": "tok2",
                "brand": "visa",
                "last4": "4242",
                "expiry_month": 12,
                "expiry_year": 2031,
                "holder": "T",
                "instance_id": inst,
            }
        )
    assert fault.value.faultString.startswith("Server.Unavailable: ")
    _operator_has(caplog, _tenant_sees(fault.value.faultString), plugin="leaky_card", inst=inst)


def _proxy_admin(server: str, env: Any) -> xmlrpc.client.ServerProxy:
    host = server.removeprefix("http://")
    return xmlrpc.client.ServerProxy(
        f"http://admin:{env.admin_password}@{host}/xmlrpc", allow_none=True
    )


def test_a_gateway_not_called_answers_server_busy_and_leaves_nothing(env, server, leaky, caplog):
    """The breaker open: PaymentCharge answers Server.Busy (5031), no charge
    row is left (no money moved, never a decline), and the same key charges
    once the gateway is called again."""
    _inst, _acc, method = _setup_card(env)
    limit = env.app.settings.plugin_breaker_failures
    LeakyCard.mode = "raise"
    with _proxy_admin(server, env) as admin:
        for i in range(limit):
            got = admin.PaymentCharge(
                {"payment_method_id": method, "idempotency_key": f"f{i}", "amount": "1.00"}
            )
            assert got["status"] == "pending"
        LeakyCard.mode = "ok"
        with pytest.raises(xmlrpc.client.Fault) as fault:
            admin.PaymentCharge(
                {"payment_method_id": method, "idempotency_key": "b1", "amount": "2.00"}
            )
        assert fault.value.faultCode == 5031
        assert fault.value.faultString.startswith("Server.Busy: ")
        assert "nothing was charged" in fault.value.faultString
        with UnitOfWork(env.app.engine) as uow:
            keys = set(uow.session.scalars(select(GatewayPayment.client_key)))
        assert "b1" not in keys and len(keys) == limit
        plugincall.runtime().reset()  # the cooldown is over
        again = admin.PaymentCharge(
            {"payment_method_id": method, "idempotency_key": "b1", "amount": "2.00"}
        )
        assert again["status"] == "captured"
    with UnitOfWork(env.app.engine) as uow:
        n = uow.session.scalar(
            select(func.count())
            .select_from(GatewayPayment)
            .where(GatewayPayment.client_key == "b1")
        )
    assert n == 1


def test_a_registrar_error_on_the_customers_domain_list(env, server, leaky, caplog):
    caplog.set_level(logging.INFO)
    with service_ctx(env) as ctx:
        inst = plugins.plugin_configure(
            ctx,
            plugin="leaky_registrar2",
            name="leaky",
            settings=[SettingValue("api_key", LEAKED)],
        )
    t = ds.tld(env, inst.id, "leak2")
    acc = ds.customer(env)
    login = _tenant(env, acc, "tenant-domains")
    svc = ds.service(env, acc, ds.template_of(env, t.plan_id), domain="shop.leak2")
    ds.run(env, svc, "create")
    with _proxy(server, login) as proxy:
        (d,) = page_items(proxy.DomainList({}))
    ref = _tenant_sees(d["last_error"])
    _operator_has(caplog, ref, plugin="leaky_registrar2", inst=inst.id)


def test_the_balance_monitor_keeps_the_registrars_text_out(env, leaky, caplog):
    from pba_server.domains import jobs as domain_jobs
    from pba_server.domains import monitors as domains

    caplog.set_level(logging.INFO)
    with service_ctx(env) as ctx:
        inst = plugins.plugin_configure(
            ctx,
            plugin="leaky_registrar2",
            name="leaky",
            settings=[SettingValue("api_key", LEAKED)],
        )
        domains.registrar_balance_minimum_set(
            ctx, instance_id=inst.id, minimum=Decimal("10"), currency="EUR"
        )

    with UnitOfWork(env.app.engine) as uow:
        domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()
    with service_ctx(env) as ctx:
        (m,) = domains.registrar_monitor_list(ctx).items
    ref = _tenant_sees(m.last_error or "")
    _operator_has(caplog, ref, plugin="leaky_registrar2", inst=inst.id)
