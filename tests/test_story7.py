"""Story 7 of PRODUCT.md through SOAP (zeep), with the real engines: the
provisioning engine running the ``script`` module (a real executable that
logs what the platform is asked), the scheduler's jobs (``run_due``: billing
run, auto-pay, dunning, provisioning) and the sandbox card gateway. No
fakes: the clock moves, nothing sleeps.

An unpaid invoice passes its due date: reminder (invoice.overdue), second
reminder, suspension (the subscription and the service on the platform);
the customer pays everything overdue and the service resumes by itself. And
a failed auto-pay charge is retried on the dunning days until a good card
pays it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import users
from pba_server.core.db import UnitOfWork
from pba_server.notify import handlers
from pba_server.notify.delivery import Deliverer, MailSettings
from pba_server.payments.models import GatewayPayment
from tests.billing_support import assert_books_sound
from tests.catalog_support import plain, service_ctx
from tests.event_receivers import SmtpReceiver
from tests.orders_support import PW, buyer, card, gateway, plan
from tests.prov_support import instance
from tests.story_support import actions, drive, run_jobs, script
from tests.support import page_items

D = Decimal


def _at(d: date, hour: int = 3) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def _shop(env: Any, tmp_path: Path) -> tuple[dict[str, int], Path, int]:
    """The provider's hosting plan (20.00 a month) made by its script, its
    card gateway and its billing clerk."""
    exe, log = script(tmp_path)
    instance(env, "in-house", plugin="script", settings={"executable": exe, "timeout": "20"})
    with service_ctx(env) as ctx:
        from pba_server.catalog.resources import resource_create
        from pba_server.catalog.templates import service_template_create
        from pba_server.catalog.types import TemplateResource

        r = resource_create(ctx, name="Disk", unit="GB", kind="allocated").id
        t = service_template_create(
            ctx,
            name="Hosting",
            service_type="hosting",
            module="script",
            resources=[TemplateResource(r, D(10))],
        ).id
        users.user_create(
            ctx, account_id=1, login="bill", password=PW, full_name="Bill", roles=["billing"]
        )
    p = plan(env, "Hosting", recurring="20.00", template_id=t)
    return p, log, gateway(env, tmp_path)


def _events(admin: Any, account_id: int, type_: str) -> list[dict[str, Any]]:
    items = plain(admin.EventList(account_id=account_id, limit=1000))["items"]
    return [e for e in items if e["type"] == type_]


def _service(me: Any) -> dict[str, Any]:
    [svc] = page_items(plain(me.ServiceList()))
    return svc  # type: ignore[no-any-return]


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


def test_story_7_reminder_suspension_payment_resumption(env, api, tmp_path, smtp):
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p, log, _gw = _shop(env, tmp_path)
    acc = buyer(env, "Acme", credit_limit="100")
    me = api.soap("acme-admin", PW)
    me.ContactAdd(
        account_id=acc,
        contact={"kind": "billing", "name": "Ann Acme", "email": "ann@acme.test"},
        idempotency_key="c1",
    )
    with service_ctx(env) as ctx:  # the provider mails overdue reminders to billing contacts
        handlers.event_handler_create(
            ctx,
            name="reminders",
            event_types=["invoice.overdue"],
            action="email",
            contact_kind="billing",
        )
    mail = MailSettings("127.0.0.1", smtp.port, sender="billing@provider.test")
    deliverer = Deliverer(env.app.engine, env.clock, env.app.secrets, mail)
    o = me.OrderPlace(
        account_id=acc, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o1"
    )
    drive(env)
    order = plain(me.OrderGet(order_id=o.id))
    assert order["status"] == "completed", order
    sub_id = order["subscription_id"]
    assert _service(me)["status"] == "active" and actions(log) == ["create"]
    inv = plain(me.InvoiceGet(invoice_id=order["invoice_id"]))
    assert inv["status"] == "issued" and D(inv["total"]) == D("20.00")  # on account: unpaid
    due = inv["due_date"]
    admin = api.soap()
    bill = api.soap("bill", PW)

    def day(n: int) -> list[str]:
        env.clock.freeze(_at(due + timedelta(days=n)))
        ran = run_jobs(env)
        drive(env)
        return ran

    assert "dunning" in day(0)  # due today: not overdue yet
    assert _events(admin, acc, "invoice.overdue") == []
    day(1)  # the reminder
    [ev] = _events(admin, acc, "invoice.overdue")
    assert (ev["subject_type"], ev["subject_id"]) == ("invoice", str(inv["id"]))
    assert json.loads(ev["payload"])["days_overdue"] == 1
    deliverer.run_once()  # the event deliverer's pass: the reminder is mailed
    [reminder] = smtp.mails
    assert reminder.recipients == ["ann@acme.test"]
    assert reminder.message["Subject"] == f"Reminder: invoice {inv['number']} is overdue"
    assert plain(me.InvoiceGet(invoice_id=inv["id"]))["status"] == "overdue"
    assert plain(me.SubscriptionGet(subscription_id=sub_id))["status"] == "active"
    day(7)  # the second reminder
    assert len(_events(admin, acc, "invoice.overdue")) == 2
    deliverer.run_once()
    assert len(smtp.mails) == 2
    assert plain(me.SubscriptionGet(subscription_id=sub_id))["status"] == "active"
    assert actions(log) == ["create"]
    day(14)  # suspension: the subscription, and the service on the platform
    s = plain(me.SubscriptionGet(subscription_id=sub_id))
    assert (s["status"], s["suspended_reason"]) == ("suspended", "dunning")
    assert actions(log) == ["create", "suspend"]
    assert _service(me)["status"] == "suspended"
    assert len(_events(admin, acc, "subscription.suspended")) == 1
    day(15)
    assert actions(log) == ["create", "suspend"]  # once
    # the customer pays everything overdue: the service resumes by itself
    overdue = [
        i for i in plain(me.InvoiceList(account_id=acc))["items"] if i["status"] == "overdue"
    ]
    assert [i["id"] for i in overdue] == [inv["id"]]
    bill.PaymentRecord(
        account_id=acc,
        amount=D(overdue[0]["total"]),
        method="bank_transfer",
        reference="finally",
        received_on=env.clock.now().date(),
        idempotency_key="pay-1",
    )
    s = plain(me.SubscriptionGet(subscription_id=sub_id))
    assert s["status"] == "active" and s["suspended_reason"] is None  # at once
    drive(env)  # the provisioning worker
    assert actions(log) == ["create", "suspend", "resume"]
    assert _service(me)["status"] == "active"
    assert len(_events(admin, acc, "subscription.resumed")) == 1
    day(16)
    assert actions(log) == ["create", "suspend", "resume"]
    assert plain(me.SubscriptionGet(subscription_id=sub_id))["status"] == "active"
    assert_books_sound(env)


def test_story_7_failed_auto_pay_is_retried_on_the_dunning_days(env, api, tmp_path):
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p, log, gw = _shop(env, tmp_path)
    acc = buyer(env, "Acme")
    card(env, acc, gw)  # a good card pays the order
    me = api.soap("acme-admin", PW)
    o = me.OrderPlace(account_id=acc, lines=[{"plan_id": p["plan"]}], idempotency_key="o1")
    drive(env)
    order = plain(me.OrderGet(order_id=o.id))
    assert order["status"] == "completed", order
    sub_id = order["subscription_id"]
    # then the customer's default card becomes one that is declined
    card(env, acc, gw, token="tok_insufficient_funds")
    # the billing run (a job) invoices April; auto-pay (a job) is declined
    env.clock.freeze(_at(date(2026, 4, 1)))
    run_jobs(env)
    invoices = plain(me.InvoiceList(account_id=acc))["items"]
    april = plain(me.InvoiceGet(invoice_id=max(i["id"] for i in invoices)))
    assert april["id"] != order["invoice_id"] and D(april["total"]) == D("20.00")
    assert april["status"] == "issued"
    env.clock.freeze(_at(date(2026, 4, 1)) + timedelta(minutes=2))
    run_jobs(env)  # auto-pay runs after the billing run (every minute)
    env.clock.freeze(_at(date(2026, 4, 1)) + timedelta(minutes=4))
    run_jobs(env)  # once: not charged again
    due = april["due_date"]

    def attempts() -> list[tuple[str, str]]:
        with UnitOfWork(env.app.engine) as uow:
            return [
                (g.client_key, g.status)
                for g in uow.session.scalars(
                    select(GatewayPayment)
                    .where(GatewayPayment.invoice_id == april["id"])
                    .order_by(GatewayPayment.id)
                )
            ]

    key = f"autopay:{april['id']}"
    assert attempts() == [(f"{key}:1", "declined")]
    admin = api.soap()
    assert len(_events(admin, acc, "payment.failed")) == 1

    def day(n: int) -> None:
        env.clock.freeze(_at(due + timedelta(days=n)))
        run_jobs(env)
        drive(env)

    day(1)  # reminder: retried, declined again
    assert attempts() == [(f"{key}:1", "declined"), (f"{key}:2", "declined")]
    assert len(_events(admin, acc, "invoice.overdue")) == 1
    # the customer adds a good card as its default
    card(env, acc, gw)
    day(7)  # second reminder: retried with the new default card, paid
    assert attempts() == [
        (f"{key}:1", "declined"),
        (f"{key}:2", "declined"),
        (f"{key}:3", "captured"),
    ]
    assert plain(me.InvoiceGet(invoice_id=april["id"]))["status"] == "paid"
    day(14)  # paid: no suspension
    assert plain(me.SubscriptionGet(subscription_id=sub_id))["status"] == "active"
    assert actions(log) == ["create"]
    assert_books_sound(env)
