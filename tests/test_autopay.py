"""Auto-pay: an issued invoice is charged once to the buyer's default payment
method by the ``payments-autopay`` job; a decline raises payment.failed and
leaves it unpaid for dunning, which tries again with attempt 2. Invoices are
made through the real endpoints (both protocols) where the API is concerned,
and every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.billing.invoices import invoice_create, invoice_get
from pba_server.billing.types import InvoiceLineInput
from pba_server.core.db import UnitOfWork
from pba_server.events.models import Event
from pba_server.payments.autopay import autopay_invoice, run_autopay
from pba_server.payments.methods import payment_method_add
from pba_server.payments.models import GatewayPayment
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.reconcile import reconcile
from pba_server.payments.types import SettingValue
from pba_server.scheduler import jobs
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import Caller, D, service_ctx
from tests.support import page_items

SECRET = "sk_test_autopay-secret-1"


def gateway(env: Any, state: Path) -> int:
    with service_ctx(env) as ctx:
        return plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[SettingValue("api_key", SECRET), SettingValue("state_file", str(state))],
        ).id


def card(env: Any, acc: int, inst: int, token: str, default: bool = True) -> int:
    with service_ctx(env) as ctx:
        return payment_method_add(
            ctx,
            account_id=acc,
            instance_id=inst,
            token=token,
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="A",
            make_default=default,
        ).id


def invoice(env: Any, acc: int, amount: str = "30.00", autopay: bool | None = None) -> int:
    with service_ctx(env) as ctx:
        return invoice_create(
            ctx,
            account_id=acc,
            lines=[InvoiceLineInput("Hosting", Decimal(amount))],
            issue=True,
            autopay=autopay,
        ).id


def status(env: Any, invoice_id: int) -> str:
    with service_ctx(env) as ctx:
        return invoice_get(ctx, invoice_id=invoice_id).status


def run_job(env: Any) -> str:
    with UnitOfWork(env.app.engine) as uow:
        out = run_autopay(uow, env.clock, runtime=env.app.runtime)
        uow.commit()
    return out


def events_of(env: Any, type: str) -> list[dict[str, Any]]:
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.scalars(
            select(Event.payload).where(Event.type == type).order_by(Event.id)
        )
        return [json.loads(p) for p in rows]


def charges(env: Any) -> list[GatewayPayment]:
    with UnitOfWork(env.app.engine) as uow:
        rows = list(uow.session.scalars(select(GatewayPayment).order_by(GatewayPayment.id)))
        uow.session.expunge_all()
        return rows


def test_issued_invoice_is_charged_once(env, tmp_path):
    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Payer")
    card(env, acc, inst, "tok_approve")
    inv = invoice(env, acc)
    assert status(env, inv) == "issued"
    assert run_job(env) == "1 captured"
    assert status(env, inv) == "paid"
    assert run_job(env) == "nothing to auto-pay"
    # the same attempt asked again (say by a retrying caller) is the same charge
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, runtime=env.app.runtime) == "skipped"
    )  # nothing outstanding
    (charge,) = charges(env)
    assert charge.client_key == f"autopay:{inv}:1" and charge.status == "captured"
    (ok,) = events_of(env, "payment.succeeded")
    assert ok["charge_id"] == charge.id and ok["invoice_id"] == inv and ok["method"] == "card"
    assert [e["invoice_id"] for e in events_of(env, "invoice.paid")] == [inv]
    assert [e["invoice_id"] for e in events_of(env, "invoice.issued")] == [inv]
    assert_books_sound(env)


def test_decline_leaves_it_unpaid_and_dunning_retries(env, tmp_path):
    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Poor")
    card(env, acc, inst, "tok_insufficient_funds")
    inv = invoice(env, acc)
    assert run_job(env) == "1 declined"
    assert status(env, inv) == "issued"
    (failed,) = events_of(env, "payment.failed")
    assert failed["reason"] == "insufficient_funds" and failed["payment_id"] is None
    assert D(failed["amount"]) == D("30.00") and failed["invoice_id"] == inv
    assert run_job(env) == "nothing to auto-pay"  # attempt 1 is made once
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, runtime=env.app.runtime) == "declined"
    )  # asked again: same
    assert len(charges(env)) == 1
    # the customer adds a working card; dunning's next attempt charges it
    card(env, acc, inst, "tok_approve")
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, attempt=2, runtime=env.app.runtime)
        == "captured"
    )
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, attempt=2, runtime=env.app.runtime)
        == "skipped"
    )
    assert status(env, inv) == "paid"
    assert [c.client_key for c in charges(env)] == [f"autopay:{inv}:1", f"autopay:{inv}:2"]
    assert_books_sound(env)


def test_skipped_opted_out_no_method_and_unknown_outcome(env, tmp_path):
    inst = gateway(env, tmp_path / "s.json")
    nocard = customer(env, "No card")
    opted = customer(env, "Opted out")
    slow = customer(env, "Slow")
    card(env, opted, inst, "tok_approve")
    card(env, slow, inst, "tok_timeout")
    a = invoice(env, nocard)
    b = invoice(env, opted, autopay=False)
    c = invoice(env, slow)
    assert run_job(env) == "1 pending, 1 skipped"
    assert (
        autopay_invoice(env.app.engine, env.clock, b, attempt=2, runtime=env.app.runtime)
        == "skipped"
    )
    assert status(env, a) == status(env, b) == status(env, c) == "issued"
    # a card added later is not charged by the job (attempt 1 was made);
    # dunning's attempts are
    card(env, nocard, inst, "tok_approve")
    assert run_job(env) == "nothing to auto-pay"
    # the answer lost: reconciliation asks the gateway by key and records it once
    with UnitOfWork(env.app.engine) as uow:
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    assert status(env, c) == "paid"
    assert autopay_invoice(env.app.engine, env.clock, c, runtime=env.app.runtime) == "skipped"
    assert len(charges(env)) == 1
    assert_books_sound(env)


def test_the_job_runs_from_the_scheduler_and_attempts_once_across_processes(env, tmp_path):
    inst = gateway(env, tmp_path / "s.json")
    accs = [customer(env, f"P{i}") for i in range(3)]
    for acc in accs:
        card(env, acc, inst, "tok_approve")
    invs = [invoice(env, acc) for acc in accs]
    results: list[Any] = []

    def worker() -> None:
        try:
            results.append(run_job(env))
        except Exception as exc:  # pragma: no cover - shown by the assert
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, str) for r in results), results
    assert [status(env, i) for i in invs] == ["paid"] * 3
    with UnitOfWork(env.app.engine) as uow:
        assert uow.session.scalar(select(func.count()).select_from(GatewayPayment)) == 3
    job = {"payments-autopay": env.app.jobs["payments-autopay"]}
    assert jobs.run_due(env.app.engine, env.app.runtime, job) == ["payments-autopay"]
    assert_books_sound(env)


@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_invoice_create_autopay_flag_over_the_api(api, env, protocol, tmp_path):
    call = Caller(api, protocol)
    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Api payer")
    card(env, acc, inst, "tok_approve")
    line = [{"description": "Hosting", "unit_price": Decimal("12.00")}]
    off = call(
        "InvoiceCreate",
        account_id=acc,
        lines=line,
        issue=True,
        autopay=False,
        idempotency_key=f"off-{protocol}",
    )
    on = call(
        "InvoiceCreate", account_id=acc, lines=line, issue=True, idempotency_key=f"on-{protocol}"
    )
    assert off["autopay"] is False and on["autopay"] is True
    assert run_job(env) == "1 captured"
    assert call("InvoiceGet", invoice_id=on["id"])["status"] == "paid"
    assert call("InvoiceGet", invoice_id=off["id"])["status"] == "issued"
    assert_books_sound(env)


@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_account_autopay_switch_over_the_api(api, env, protocol, tmp_path):
    call = Caller(api, protocol)
    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Switcher")
    got = call("PaymentAutopayGet", account_id=acc)
    assert got["enabled"] is True and got.get("default_payment_method_id") is None
    m = card(env, acc, inst, "tok_approve")
    off = call("PaymentAutopaySet", account_id=acc, enabled=False)
    assert off["enabled"] is False and off["default_payment_method_id"] == m
    inv = invoice(env, acc)
    assert run_job(env) == "1 skipped"
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, attempt=2, runtime=env.app.runtime)
        == "skipped"
    )
    assert call("PaymentAutopaySet", account_id=acc, enabled=True)["enabled"] is True
    assert (
        autopay_invoice(env.app.engine, env.clock, inv, attempt=2, runtime=env.app.runtime)
        == "captured"
    )
    assert call("InvoiceGet", invoice_id=inv)["status"] == "paid"
    code, _ = call.fault("PaymentAutopayGet", account_id=99999)
    assert code == "Client.NotFound"
    audit = call("AuditLogList", account_id=acc)
    items = audit["items"] if isinstance(audit, dict) else audit
    assert any("autopay" in str(a) for a in items)
    assert_books_sound(env)


@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_empty_lists_can_be_sent(api, env, protocol, tmp_path):
    """PaymentRoutingSet without rules clears them; PluginConfigure without
    settings keeps the stored ones (SOAP cannot send an empty list)."""
    call = Caller(api, protocol)
    inst = gateway(env, tmp_path / "s.json")
    assert len(call("PaymentRoutingSet", rules=[{"instance_id": inst}])) == 1
    assert call("PaymentRoutingSet") in ([], None)
    assert page_items(call("PaymentRoutingList")) == []
    again = call("PluginConfigure", plugin="sandbox_card", name="cards")
    assert again["id"] == inst and again["secret_settings_set"] == ["api_key"]


def test_a_declined_auto_pay_mails_the_customer(env, tmp_path):
    """The story end to end: an invoice is issued, auto-pay is declined, and
    the customer's billing contact gets the "payment failed" notification
    (over SMTP on loopback) with the gateway's reason."""
    pytest.importorskip("jinja2")
    from pba_server.accounts import tree
    from pba_server.accounts.types import ContactInput
    from pba_server.notify import handlers
    from pba_server.notify.delivery import Deliverer, MailSettings
    from tests.event_receivers import SmtpReceiver

    smtp = SmtpReceiver()
    try:
        inst = gateway(env, tmp_path / "s.json")
        with service_ctx(env) as ctx:
            acc = tree.account_create(
                ctx,
                type="customer_business",
                name="Poor Co",
                country="DE",
                contacts=[ContactInput(kind="billing", name="Pat", email="pat@poor.test")],
            ).id
            handlers.event_handler_create(
                ctx,
                name="payment mails",
                event_types=["payment.failed"],
                action="email",
                contact_kind="billing",
            )
        card(env, acc, inst, "tok_stolen_card")
        inv = invoice(env, acc, "25.00")
        assert run_job(env) == "1 declined"
        d = Deliverer(
            env.app.engine,
            env.clock,
            env.app.secrets,
            MailSettings("127.0.0.1", smtp.port, sender="billing@provider.test"),
        )
        while d.run_once():
            pass
        (mail,) = smtp.mails
        assert mail.recipients == ["pat@poor.test"]
        assert mail.message["Subject"] == "Payment failed"
        body = mail.message.get_payload(decode=True).decode()
        assert "25.00 USD failed: stolen_card" in body
        assert status(env, inv) == "issued"
    finally:
        smtp.close()
