"""Plugin instances, payment methods and gateway charges through the real
SOAP and XML-RPC endpoints (both protocols, both databases); the books are
checked after each test. The crash-in-the-middle test kills a real server
process between the gateway's capture and our commit."""

from __future__ import annotations

import logging
import xmlrpc.client
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pba_server.billing.balances import account_balance_get
from pba_server.billing.invoices import invoice_create, invoice_get, invoice_issue
from pba_server.billing.types import InvoiceLineInput
from pba_server.core.db import UnitOfWork
from pba_server.payments.charges import payment_charge, payment_charge_get, payment_refund
from pba_server.payments.methods import payment_method_add
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.reconcile import reconcile
from pba_server.payments.types import SettingValue
from pba_server.scheduler import jobs
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import Caller, D, service_ctx
from tests.conftest import TEST_KEY
from tests.serverproc import child_env, running
from tests.support import Api, page_items

PROTOCOLS = ["soap", "xmlrpc"]
SECRET = "sk_test_VERY-SECRET-4d1f9e"
PAN = "4111 1111 1111 1111"


@pytest.fixture(params=PROTOCOLS)
def call(request: pytest.FixtureRequest, api: Any, env: Any) -> Any:
    yield Caller(api, request.param)
    assert_books_sound(env)


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line of the server side (the test's own SOAP client logs its
    requests at DEBUG, secrets included: that is the caller's log, not ours)."""
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("zeep", "urllib3"))
    )


def _sandbox(call: Caller, state: Path, name: str = "cards") -> dict[str, Any]:
    return dict(
        call(
            "PluginConfigure",
            plugin="sandbox_card",
            name=name,
            settings=[
                {"name": "api_key", "value": SECRET},
                {"name": "state_file", "value": str(state)},
            ],
        )
    )


def _invoice(call: Caller, acc: int, amount: str = "50.00") -> dict[str, Any]:
    draft = call(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "Hosting", "unit_price": Decimal(amount)}],
        idempotency_key=f"inv-{acc}-{amount}",
    )
    return dict(call("InvoiceIssue", invoice_id=draft["id"]))


def _method(call: Caller, acc: int, inst: int, token: str, **kw: Any) -> dict[str, Any]:
    return dict(
        call(
            "PaymentMethodAdd",
            account_id=acc,
            instance_id=inst,
            token=token,
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="A. Customer",
            idempotency_key=f"pm-{token}",
            **kw,
        )
    )


def test_plugin_list_and_instances(call, env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    plugins = {p["name"]: p for p in page_items(call("PluginList"))}
    assert plugins["offline"]["status"] == "ok"
    card = plugins["sandbox_card"]
    assert card["status"] == "ok" and card["sdk_version"] == "1.0"
    assert "refund" in card["capabilities"]
    assert {s["name"]: s["secret"] for s in card["settings"]} == {
        "api_key": True,
        "state_file": False,
    }
    code, msg = call.fault(
        "PluginConfigure",
        plugin="sandbox_card",
        name="bad",
        settings=[{"name": "api_key", "value": "live_key"}],
    )
    assert code == "Client.Validation" and "sk_test_" in msg
    inst = _sandbox(call, tmp_path / "s.json")
    assert inst["plugin"] == "sandbox_card" and inst["status"] == "active"
    assert inst["secret_settings_set"] == ["api_key"]
    assert [s["name"] for s in inst["settings"]] == ["state_file"]
    got = call("PluginInstanceGet", instance_id=inst["id"])
    assert got["name"] == "cards"
    # reconfiguring without the secret keeps it
    again = call(
        "PluginConfigure",
        plugin="sandbox_card",
        name="cards",
        settings=[{"name": "state_file", "value": str(tmp_path / "t.json")}],
    )
    assert again["id"] == inst["id"]
    assert [i["id"] for i in page_items(call("PluginInstanceList"))] == [inst["id"]]
    off = call(
        "PluginConfigure",
        plugin="offline",
        name="bank",
        settings=[{"name": "instructions", "value": "IBAN DE00"}],
    )
    assert call("PluginInstanceDisable", instance_id=off["id"])["status"] == "disabled"
    code, _ = call.fault(
        "PluginConfigure", plugin="nope", name="x", settings=[{"name": "a", "value": "b"}]
    )
    assert code == "Client.NotFound"

    # the secret: encrypted at rest, in no response, in no log line
    every = repr(call("PluginInstanceList")) + repr(got) + repr(again) + repr(inst)
    assert SECRET not in every
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(text("SELECT settings, secrets FROM plugin_instances")).all()
        audit = uow.session.execute(text("SELECT changes FROM audit_log")).all()
    assert rows and all(SECRET not in r[0] and SECRET not in r[1] for r in rows)
    assert all(SECRET not in r[0] for r in audit)
    assert SECRET not in server_log(caplog)


def test_payment_methods_refuse_card_numbers(call, env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    inst = _sandbox(call, tmp_path / "s.json")
    acc = customer(env, "Payer")
    for field in ("token", "holder"):
        kw = {"token": "tok_approve", "holder": "A"} | {field: f"x {PAN} y"}
        code, msg = call.fault(
            "PaymentMethodAdd",
            account_id=acc,
            instance_id=inst["id"],
            brand="visa",
            last4="1111",
            expiry_month=1,
            expiry_year=2030,
            idempotency_key=f"pan-{field}",
            **kw,
        )
        assert code == "Client.Validation" and "card number" in msg and PAN not in msg
    code, _ = call.fault(
        "PaymentMethodAdd",
        account_id=acc,
        instance_id=inst["id"],
        token="tok_approve",
        brand="visa",
        last4="123",
        expiry_month=1,
        expiry_year=2030,
        holder="A",
    )
    assert code == "Client.Validation"
    first = _method(call, acc, inst["id"], "tok_approve")
    assert first["is_default"] is True and first["last4"] == "4242"
    assert "token" not in first
    second = _method(call, acc, inst["id"], "tok_stolen_card")
    assert second["is_default"] is False
    assert call("PaymentMethodSetDefault", payment_method_id=second["id"])["is_default"]
    listed = page_items(call("PaymentMethodList", account_id=acc))
    assert [m["id"] for m in listed] == [second["id"], first["id"]]
    assert call("PaymentMethodRemove", payment_method_id=second["id"]) is True
    assert [m["id"] for m in page_items(call("PaymentMethodList", account_id=acc))] == [first["id"]]
    with UnitOfWork(env.app.engine) as uow:
        dump = repr(uow.session.execute(text("SELECT * FROM payment_methods")).all())
        dump += repr(uow.session.execute(text("SELECT changes FROM audit_log")).all())
    assert "4111111111111111" not in dump.replace(" ", "") and PAN not in server_log(caplog)


def test_charge_captured_declined_and_pending(call, env, tmp_path):
    inst = _sandbox(call, tmp_path / "s.json")
    acc = customer(env, "Payer")
    inv = _invoice(call, acc)
    ok = _method(call, acc, inst["id"], "tok_approve")
    stolen = _method(call, acc, inst["id"], "tok_stolen_card")
    poor = _method(call, acc, inst["id"], "tok_insufficient_funds")
    tds = _method(call, acc, inst["id"], "tok_3ds")

    for m, reason in [
        (stolen, "stolen_card"),
        (poor, "insufficient_funds"),
        (tds, "authentication_required"),
    ]:
        code, msg = call.fault(
            "PaymentCharge",
            payment_method_id=m["id"],
            invoice_id=inv["id"],
            idempotency_key=f"c-{reason}",
        )
        assert code == "Client.PaymentDeclined" and msg.startswith(reason)
    assert call("InvoiceGet", invoice_id=inv["id"])["status"] == "issued"

    charge = call(
        "PaymentCharge", payment_method_id=ok["id"], invoice_id=inv["id"], idempotency_key="c-1"
    )
    assert charge["status"] == "captured" and D(charge["amount"]) == D("50.00")
    assert charge["gateway_reference"].startswith("ch_") and charge["payment_id"]
    again = call(
        "PaymentCharge", payment_method_id=ok["id"], invoice_id=inv["id"], idempotency_key="c-1"
    )
    assert again["id"] == charge["id"] and again["payment_id"] == charge["payment_id"]
    paid = call("InvoiceGet", invoice_id=inv["id"])
    assert paid["status"] == "paid" and D(paid["outstanding"]) == 0
    code, _ = call.fault(
        "PaymentCharge", payment_method_id=ok["id"], invoice_id=inv["id"], idempotency_key="c-2"
    )
    assert code == "Client.InvalidState"
    payments_list = call("PaymentList", account_id=acc)["items"]
    assert [p["method"] for p in payments_list] == ["card"]

    # no answer from the gateway: pending until reconciliation asks by key
    slow = _method(call, acc, inst["id"], "tok_timeout")
    pending = call(
        "PaymentCharge", payment_method_id=slow["id"], amount=Decimal("7.50"), idempotency_key="t"
    )
    assert pending["status"] == "pending" and pending["payment_id"] is None
    with UnitOfWork(env.app.engine) as uow:
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    done = call("PaymentChargeGet", charge_id=pending["id"])
    assert done["status"] == "captured" and done["payment_id"]
    assert D(call("AccountBalanceGet", account_id=acc)["balance"]) == D("-7.50")

    call("PluginInstanceDisable", instance_id=inst["id"])
    code, _ = call.fault(
        "PaymentCharge", payment_method_id=ok["id"], amount=Decimal("1"), idempotency_key="d"
    )
    assert code == "Client.InvalidState"


def test_crash_between_gateway_and_commit_then_reconcile(env, tmp_path):
    """A real server process dies (os._exit) after the gateway captured and
    before our commit; the reconciliation job records the capture exactly once."""
    state = tmp_path / "sandbox.json"
    with service_ctx(env) as ctx:
        inst = plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[SettingValue("api_key", SECRET), SettingValue("state_file", str(state))],
        )
        ctx.uow.commit()
    acc = customer(env, "Payer")
    with service_ctx(env) as ctx:
        inv = invoice_create(
            ctx,
            account_id=acc,
            lines=[InvoiceLineInput(description="Hosting", unit_price=Decimal("30.00"))],
        )
        invoice_issue(ctx, invoice_id=inv.id)
        m = payment_method_add(
            ctx,
            account_id=acc,
            instance_id=inst.id,
            token="tok_approve",
            brand="visa",
            last4="4242",
            expiry_month=1,
            expiry_year=2031,
            holder="A",
        )
        ctx.uow.commit()
    url = env.app.engine.url.render_as_string(hide_password=False)
    child = child_env(
        PBA_DATABASE_URL=url,
        PBA_SECRET_KEY=TEST_KEY,
        PBA_TEST_CRASH_AFTER_GATEWAY="1",
    )
    with running(cwd=tmp_path, env=child) as srv:
        client = Api(srv.base, env)
        try:
            with pytest.raises((xmlrpc.client.ProtocolError, HTTPException, OSError)):
                client.xmlrpc().PaymentCharge(
                    {"payment_method_id": m.id, "invoice_id": inv.id, "idempotency_key": "k1"}
                )
        finally:
            client.close()
        assert srv.proc.wait(timeout=30) == 86
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(text("SELECT status, payment_id FROM gateway_payments")).all()
        n_payments = uow.session.execute(text("SELECT count(*) FROM payments")).scalar()
    assert [tuple(r) for r in rows] == [("pending", None)] and n_payments == 0
    assert '"status": "captured"' in state.read_text()  # the money moved

    env.clock.freeze(datetime.now(UTC) + timedelta(minutes=10))
    job = {"payments-reconcile": env.app.jobs["payments-reconcile"]}
    assert jobs.run_due(env.app.engine, env.app.runtime, job) == ["payments-reconcile"]
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(text("SELECT status FROM gateway_payments")).all()
        n_payments = uow.session.execute(text("SELECT count(*) FROM payments")).scalar()
    assert [r[0] for r in rows] == ["captured"] and n_payments == 1
    with service_ctx(env) as ctx:
        assert invoice_get(ctx, invoice_id=inv.id).status == "paid"
        # the client retries with its key: the same charge, no second capture
        again = payment_charge(ctx, payment_method_id=m.id, invoice_id=inv.id, idempotency_key="k1")
        assert again.status == "captured"
    # a second reconciliation finds nothing to do
    env.clock.freeze(datetime.now(UTC) + timedelta(minutes=20))
    jobs.run_due(env.app.engine, env.app.runtime, job)
    with UnitOfWork(env.app.engine) as uow:
        assert uow.session.execute(text("SELECT count(*) FROM payments")).scalar() == 1
    assert state.read_text().count('"status": "captured"') == 1
    assert_books_sound(env)


def test_refunds_full_and_partial(call, env, tmp_path):
    inst = _sandbox(call, tmp_path / "s.json")
    acc = customer(env, "Payer")
    inv = _invoice(call, acc)
    ok = _method(call, acc, inst["id"], "tok_approve")
    charge = call(
        "PaymentCharge", payment_method_id=ok["id"], invoice_id=inv["id"], idempotency_key="c"
    )
    part = call(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("20.00"),
        reason="goodwill",
        idempotency_key="r1",
    )
    assert part["status"] == "refunded" and part["gateway_reference"].startswith("re_")
    again = call(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("20.00"),
        reason="goodwill",
        idempotency_key="r1",
    )
    assert again["id"] == part["id"]
    got = call("InvoiceGet", invoice_id=inv["id"])
    assert got["status"] == "partially_paid" and D(got["outstanding"]) == D("20.00")
    assert D(call("PaymentChargeGet", charge_id=charge["id"])["refunded"]) == D("20.00")
    code, msg = call.fault(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("30.01"),
        reason="too much",
        idempotency_key="r2",
    )
    assert code == "Client.Validation" and "30.00 left" in msg
    call(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("30.00"),
        reason="cancelled",
        idempotency_key="r3",
    )
    got = call("InvoiceGet", invoice_id=inv["id"])
    assert got["status"] == "issued" and D(got["outstanding"]) == D("50.00")
    code, _ = call.fault(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("0.01"),
        reason="more",
        idempotency_key="r4",
    )
    assert code == "Client.Validation"
    assert D(call("AccountBalanceGet", account_id=acc)["balance"]) == D("50.00")

    prepaid = call(
        "PaymentCharge", payment_method_id=ok["id"], amount=Decimal("10.00"), idempotency_key="p"
    )
    call(
        "PaymentRefund",
        charge_id=prepaid["id"],
        amount=Decimal("10.00"),
        reason="unused credit",
        idempotency_key="rp",
    )
    assert D(call("AccountBalanceGet", account_id=acc)["balance"]) == D("50.00")
    declined = _method(call, acc, inst["id"], "tok_stolen_card")
    call.fault(
        "PaymentCharge", payment_method_id=declined["id"], amount=Decimal("5"), idempotency_key="x"
    )
    with UnitOfWork(env.app.engine) as uow:
        x = uow.session.execute(text("SELECT id FROM gateway_payments WHERE client_key = 'x'"))
        declined_id = x.scalar()
    code, _ = call.fault(
        "PaymentRefund",
        charge_id=declined_id,
        amount=Decimal("1"),
        reason="no",
        idempotency_key="rx",
    )
    assert code == "Client.InvalidState"


def test_server_runs_with_broken_plugins_and_lists_them(env, tmp_path):
    from pba_server.sdk.loader import DEFAULT_DIR

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "syntax_error.py").write_text("def broken(:\n")
    (folder / "future_sdk.py").write_text(
        (DEFAULT_DIR / "offline.py")
        .read_text()
        .replace('name="offline"', 'name="future_sdk"')
        .replace("sdk_version=SDK_VERSION", 'sdk_version="2.0"')
    )
    (folder / "offline.py").write_text((DEFAULT_DIR / "offline.py").read_text())
    url = env.app.engine.url.render_as_string(hide_password=False)
    child = child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY, PBA_PLUGINS_DIR=str(folder))
    with running(cwd=tmp_path, env=child) as srv:
        client = Api(srv.base, env)
        try:
            listed = {p["name"]: p for p in page_items(client.xmlrpc().PluginList({}))}
        finally:
            client.close()
        assert listed["offline"]["status"] == "ok"
        assert listed["syntax_error"]["status"] == "broken"
        assert "SyntaxError" in listed["syntax_error"]["reason"]
        assert listed["future_sdk"]["status"] == "broken"
        assert "targets SDK 2.0" in listed["future_sdk"]["reason"]
        srv.wait_for_output(r"plugin syntax_error .* is broken")
        srv.wait_for_output(r"plugin future_sdk .* is broken: targets SDK 2.0")
        assert srv.proc.poll() is None


def test_reconcile_unknown_key_and_pending_refund(env, tmp_path, monkeypatch):
    """A key the gateway never saw is declined (no money moved); a refund
    left pending is asked again with the same key and recorded once."""
    from pba_server.sdk import GatewayTimeout, loader

    cls = loader.plugins()["sandbox_card"].cls
    assert cls is not None
    with service_ctx(env) as ctx:
        inst = plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[
                SettingValue("api_key", SECRET),
                SettingValue("state_file", str(tmp_path / "s.json")),
            ],
        )
        ctx.uow.commit()
    acc = customer(env, "Payer")
    with service_ctx(env) as ctx:
        m = payment_method_add(
            ctx,
            account_id=acc,
            instance_id=inst.id,
            token="tok_approve",
            brand="visa",
            last4="4242",
            expiry_month=1,
            expiry_year=2031,
            holder="A",
        )
        ctx.uow.commit()

    def lost(self: Any, **kw: Any) -> Any:  # the request never reached the gateway
        raise GatewayTimeout("connect timeout")

    with monkeypatch.context() as mp:
        mp.setattr(cls, "charge", lost)
        with service_ctx(env) as ctx:
            never = payment_charge(
                ctx, payment_method_id=m.id, amount=Decimal("5"), idempotency_key="n"
            )
    assert never.status == "pending"
    with service_ctx(env) as ctx:
        ok = payment_charge(ctx, payment_method_id=m.id, amount=Decimal("9"), idempotency_key="ok")
        ctx.uow.commit()
    real_refund = cls.refund
    with monkeypatch.context() as mp:

        def refund_lost(self: Any, **kw: Any) -> Any:  # refunded, but the answer is lost
            real_refund(self, **kw)
            raise GatewayTimeout("read timeout")

        mp.setattr(cls, "refund", refund_lost)
        with service_ctx(env) as ctx:
            r = payment_refund(
                ctx, charge_id=ok.id, amount=Decimal("4"), reason="x", idempotency_key="r"
            )
    assert r.status == "pending"
    with UnitOfWork(env.app.engine) as uow:
        summary = reconcile(uow, env.app.runtime, older_than=timedelta(0))
        uow.commit()
    assert summary == "1 declined, 1 refund refunded"
    with service_ctx(env) as ctx:
        assert payment_charge_get(ctx, charge_id=never.id).status == "declined"
        assert payment_charge_get(ctx, charge_id=ok.id).refunded == Decimal("4.00")
        again = payment_refund(
            ctx, charge_id=ok.id, amount=Decimal("4"), reason="x", idempotency_key="r"
        )
        assert again.status == "refunded"
        assert account_balance_get(ctx, account_id=acc).balance == Decimal("-5.00")
    assert (tmp_path / "s.json").read_text().count('"re_') == 1
    assert_books_sound(env)


def test_routing_by_brand_and_through_the_parent(call, env, tmp_path):
    visa = _sandbox(call, tmp_path / "a.json", name="visa-proc")
    amex = _sandbox(call, tmp_path / "b.json", name="amex-proc")
    rules = call(
        "PaymentRoutingSet",
        rules=[
            {"instance_id": amex["id"], "brand": "Amex"},
            {"instance_id": visa["id"], "currency": "EUR"},
        ],
    )
    assert [(r["position"], r["brand"], r["instance_id"]) for r in rules] == [
        (0, "amex", amex["id"]),
        (1, None, visa["id"]),
    ]
    assert len(page_items(call("PaymentRoutingList"))) == 2
    res = call("AccountCreate", type="reseller", name="Res", partner_level="advanced", country="DE")
    acc = call(
        "AccountCreate",
        type="customer_personal",
        name="Rc",
        parent_id=res["id"],
        currency="EUR",
    )["id"]
    base = {
        "account_id": acc,
        "last4": "0005",
        "expiry_month": 3,
        "expiry_year": 2031,
        "holder": "R. C.",
    }
    a = call("PaymentMethodAdd", token="tok_approve", brand="AMEX", idempotency_key="a", **base)
    v = call("PaymentMethodAdd", token="tok_approve", brand="visa", idempotency_key="v", **base)
    assert (a["instance_id"], v["instance_id"]) == (amex["id"], visa["id"])
    call("PaymentRoutingSet", rules=[{"instance_id": amex["id"], "brand": "amex"}])
    code, msg = call.fault(
        "PaymentMethodAdd", token="tok_approve", brand="visa", idempotency_key="n", **base
    )
    assert code == "Client.Validation" and "no routing rule" in msg


def test_reconciled_capture_of_an_invoice_paid_meanwhile_becomes_credit(call, env, tmp_path):
    inst = _sandbox(call, tmp_path / "s.json")
    acc = customer(env, "Payer")
    inv = _invoice(call, acc)
    slow = _method(call, acc, inst["id"], "tok_timeout")
    pending = call(
        "PaymentCharge", payment_method_id=slow["id"], invoice_id=inv["id"], idempotency_key="t"
    )
    assert pending["status"] == "pending"
    call(
        "PaymentRecord",
        account_id=acc,
        amount=Decimal("50.00"),
        method="bank_transfer",
        reference="wire 1",
        received_on=datetime.now(UTC).date().isoformat(),
        invoice_ids=[inv["id"]],
        idempotency_key="wire",
    )
    with UnitOfWork(env.app.engine) as uow:
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    assert call("PaymentChargeGet", charge_id=pending["id"])["status"] == "captured"
    assert call("InvoiceGet", invoice_id=inv["id"])["status"] == "paid"
    assert D(call("AccountBalanceGet", account_id=acc)["balance"]) == D("-50.00")
