"""Notification templates: defaults, reseller overrides (white label), the
sandbox, languages, and rendered mails on a loopback SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("jinja2")

from pba_server.accounts import standing, tree, users
from pba_server.accounts.types import ContactInput
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import NotFound, ValidationError
from pba_server.events.models import NotificationTemplate
from pba_server.notify import handlers, template_service, templates
from pba_server.notify.delivery import Deliverer, MailSettings
from tests.catalog_support import service_ctx
from tests.event_receivers import SmtpReceiver

PW = "a-long-password-1"


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


def _tree(env: Any) -> dict[str, int]:
    with service_ctx(env) as ctx:
        ids = {}
        for name in ("Alpha", "Beta"):
            r = tree.account_create(
                ctx,
                type="reseller",
                name=f"{name} Hosting",
                partner_level="basic",
                contacts=[ContactInput("administrative", name, f"hello@{name.lower()}.test")],
            )
            users.user_create(
                ctx,
                account_id=r.id,
                login=name.lower(),
                password=PW,
                full_name=name,
                roles=["admin"],
            )
            ids[name] = r.id
            ids[f"{name}Cust"] = tree.account_create(
                ctx,
                type="customer_personal",
                name=f"{name} Customer",
                parent_id=r.id,
                contacts=[ContactInput("billing", "B", f"bill@{name.lower()}-cust.test")],
            ).id
        ids["Direct"] = tree.account_create(
            ctx, type="customer_personal", name="Direct Customer"
        ).id
        return ids


def test_defaults_ship_for_the_notifications_the_issue_names() -> None:
    for t in (
        "account.created",
        "service.provisioned",
        "invoice.issued",
        "payment.succeeded",
        "payment.failed",
        "invoice.overdue",
        "account.suspended",
        "usage.threshold_reached",
    ):
        tpl = templates.DEFAULTS[t]
        out = templates.render(
            t,
            templates.sample_payload(t),
            brand="B",
            template=tpl,
            account={"id": 1, "name": "N", "number": "1"},
        )
        assert out.subject and "B" in out.text


def test_a_resellers_template_overrides_the_providers_for_its_customers_only(env: Any) -> None:
    ids = _tree(env)
    with service_ctx(env) as ctx:
        template_service.notification_template_set(
            ctx,
            event_type="invoice.issued",
            subject="Provider invoice {{ data.number }}",
            text_body="From the provider to {{ account.name }}",
        )
    with service_ctx(env, "alpha") as ctx:
        mine = template_service.notification_template_set(
            ctx,
            event_type="invoice.issued",
            subject="{{ brand }}: invoice {{ data.number }}",
            text_body="Dear {{ account.name }}, love, {{ brand }}",
            html_body="<p>{{ account.name }}</p>",
        )
        assert mine.account_id == ids["Alpha"]
        own = template_service.notification_template_preview(
            ctx,
            event_type="invoice.issued",
            account_id=ids["AlphaCust"],
            payload='{"number": "A-7"}',
        )
        assert own.subject == "Alpha Hosting: invoice A-7"
        assert own.text_body == "Dear Alpha Customer, love, Alpha Hosting"
        assert own.html_body == "<p>Alpha Customer</p>"
        assert [t.event_type for t in template_service.notification_template_list(ctx).items] == [
            "invoice.issued"
        ]
        with pytest.raises(NotFound):
            template_service.notification_template_preview(
                ctx, event_type="invoice.issued", account_id=ids["BetaCust"]
            )
    with service_ctx(env, "beta") as ctx:
        other = template_service.notification_template_preview(
            ctx,
            event_type="invoice.issued",
            account_id=ids["BetaCust"],
            payload='{"number": "B-1"}',
        )
        assert other.subject == "Provider invoice B-1"
        got = template_service.notification_template_get(ctx, event_type="invoice.issued")
        assert got.account_id is None and got.subject.startswith("Provider invoice")
    with service_ctx(env) as ctx:
        direct = template_service.notification_template_preview(
            ctx, event_type="invoice.issued", account_id=ids["Direct"]
        )
        assert direct.subject == "Provider invoice sample"
        assert (
            template_service.notification_template_get(ctx, event_type="invoice.issued").account_id
            == 1
        )
    with service_ctx(env, "alpha") as ctx:
        assert template_service.notification_template_delete(ctx, event_type="invoice.issued")
        back = template_service.notification_template_preview(
            ctx, event_type="invoice.issued", account_id=ids["AlphaCust"]
        )
        assert back.subject == "Provider invoice sample"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ brand.format_map }}{{ [].append(1) }}",
        "{{ lipsum.__globals__['os'].system('true') }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "{{ nothing_like_this }}",
        "{% if %}",
    ],
)
def test_a_template_reaching_for_python_internals_is_refused(env: Any, source: str) -> None:
    with service_ctx(env) as ctx, pytest.raises(ValidationError):
        template_service.notification_template_set(
            ctx, event_type="account.created", subject="Hi", text_body=source
        )


def test_a_stored_bad_template_fails_the_delivery_safely(env: Any, smtp: SmtpReceiver) -> None:
    ids = _tree(env)
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx,
            name="m",
            event_types=["account.suspended"],
            action="email",
            contact_kind="billing",
        )
    with UnitOfWork(env.app.engine) as uow:  # as if written before a stricter check
        uow.session.add(
            NotificationTemplate(
                account_id=ids["Alpha"],
                account_path=f"/1/{ids['Alpha']}/",
                event_type="account.suspended",
                language="en",
                subject="x",
                text_body="{{ ''.__class__.__mro__[1].__subclasses__() }}",
                updated_at=env.clock.now(),
            )
        )
        uow.commit()
    with service_ctx(env) as ctx:
        standing.account_suspend(ctx, account_id=ids["AlphaCust"])
    d = Deliverer(env.app.engine, env.clock, env.app.secrets, MailSettings("127.0.0.1", smtp.port))
    d.run_once()
    assert smtp.mails == []
    with service_ctx(env) as ctx:
        (dl,) = handlers.delivery_list(ctx).items
    assert dl.status == "pending" and "SecurityError" in (dl.last_error or "")


def test_mail_uses_the_resellers_template_brand_and_language(env: Any, smtp: SmtpReceiver) -> None:
    ids = _tree(env)
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx,
            name="de",
            event_types=["account.suspended"],
            action="email",
            contact_kind="billing",
            language="de",
        )
    with service_ctx(env, "alpha") as ctx:
        template_service.notification_template_set(
            ctx,
            event_type="account.suspended",
            language="de",
            subject="{{ brand }}: Konto gesperrt",
            text_body="Hallo {{ account.name }}, Grund: {{ data.reason }}",
            html_body="<b>{{ data.reason }}</b>",
        )
    with service_ctx(env) as ctx:
        standing.account_suspend(ctx, account_id=ids["AlphaCust"], reason="<unpaid>")
        standing.account_suspend(ctx, account_id=ids["BetaCust"], reason="unpaid")
    d = Deliverer(
        env.app.engine,
        env.clock,
        env.app.secrets,
        MailSettings("127.0.0.1", smtp.port, sender="noreply@provider.test"),
    )
    while d.run_once():
        pass
    by_rcpt = {m.recipients[0]: m for m in smtp.mails}
    alpha = by_rcpt["bill@alpha-cust.test"]
    assert alpha.sender == "hello@alpha.test"
    assert alpha.message["Subject"] == "Alpha Hosting: Konto gesperrt"
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in alpha.message.walk()
        if not p.is_multipart()
    }
    assert parts["text/plain"].strip() == "Hallo Alpha Customer, Grund: <unpaid>"
    assert parts["text/html"].strip() == "<b>&lt;unpaid&gt;</b>"  # escaped in HTML
    beta = by_rcpt["bill@beta-cust.test"]  # no German template for Beta: the English default
    assert beta.sender == "hello@beta.test"
    assert beta.message["Subject"] == "Your account is suspended"
    assert "Beta Hosting" in beta.message.get_payload(decode=True).decode()
