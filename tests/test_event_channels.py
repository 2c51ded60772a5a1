"""Notification channels (the ``notification_channel`` plugin kind, shipped
``log_channel``), the webhook private-address policy and the purge of old
events: service layer and deliverer on both databases, handler operations
through both endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.accounts import standing, tree
from pba_server.accounts.types import ContactInput
from pba_server.core import netpolicy
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import ValidationError
from pba_server.events import retention
from pba_server.events import service as events
from pba_server.events.models import Delivery, Event
from pba_server.events.outbox import assign_sequence
from pba_server.notify import handlers
from pba_server.notify.delivery import Deliverer
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.types import SettingValue
from pba_server.scheduler import jobs
from pba_server.sdk import loader
from pba_server.sdk.notify import NotificationChannel, Recipient
from pba_server.sdk.testing import ChannelContract
from tests.catalog_support import Caller, service_ctx
from tests.conftest import TEST_NETWORKS
from tests.event_receivers import WebhookReceiver


def drain(env: Any, d: Deliverer | None = None) -> None:
    d = d or env.app.deliverer
    for _ in range(50):
        if not d.run_once():
            return
    raise AssertionError("deliveries keep coming")


def channel(env: Any, path: Path, name: str = "log") -> int:
    with service_ctx(env) as ctx:
        return plugin_configure(
            ctx, plugin="log_channel", name=name, settings=[SettingValue("path", str(path))]
        ).id


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def customer(env: Any, name: str = "Ann", phone: str | None = "+49301234567") -> int:
    with service_ctx(env) as ctx:
        return tree.account_create(
            ctx,
            type="customer_personal",
            name=name,
            contacts=[
                ContactInput(kind="billing", name=f"{name} B", email="b@example.com", phone=phone),
                ContactInput(kind="technical", name=f"{name} T", email="t@example.com"),
            ],
        ).id


class TestLogChannelConformance(ChannelContract):
    plugin = loader.plugins()["log_channel"].cls
    address = "+15550100"
    invalid_address = "invalid:nobody"

    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "conformance.log"
        self.settings = {"path": str(self.path)}

    def sent_count(self, key: str) -> int | None:
        return sum(1 for x in lines(self.path) if x["key"] == key)


def test_log_channel_plugin_contract(tmp_path):
    p = loader.plugins()["log_channel"]
    assert p.status == "ok" and p.info is not None and p.info.kind == "notification_channel"
    assert issubclass(p.cls, NotificationChannel)
    ch = p.cls({"path": str(tmp_path / "n.log"), "max_bytes": "1000000"})
    r = Recipient("+4930")
    first = ch.send(key="k1", recipient=r, subject="s", text="t", html=None, metadata={})
    again = ch.send(key="k1", recipient=r, subject="s", text="t", html=None, metadata={})
    assert first.reference == again.reference and len(lines(tmp_path / "n.log")) == 1
    from pba_server.sdk.notify import FinalSendError, RetryableSendError

    with pytest.raises(FinalSendError):
        ch.send(
            key="k2", recipient=Recipient("invalid:x"), subject="", text="", html=None, metadata={}
        )
    gone = p.cls({"path": str(tmp_path / "missing" / "n.log")})
    with pytest.raises(RetryableSendError):
        gone.send(key="k3", recipient=r, subject="", text="", html=None, metadata={})


def test_channel_handler_renders_the_template_and_retries(env, tmp_path):
    pytest.importorskip("jinja2")
    out = tmp_path / "later" / "notifications.log"
    inst = channel(env, out)
    with service_ctx(env) as ctx:
        h = handlers.event_handler_create(
            ctx,
            name="sms",
            event_types=["account.created"],
            action="channel",
            instance_id=inst,
            contact_kind="billing",
        )
        fixed = handlers.event_handler_create(
            ctx,
            name="ops room",
            event_types=["account.created"],
            action="channel",
            instance_id=inst,
            recipient="#ops",
        )
    assert h.instance_id == inst and h.contact_kind == "billing" and fixed.recipient == "#ops"
    acc = customer(env)
    drain(env)  # the log's folder does not exist yet: retryable failure
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=h.id).items
    assert d.status == "pending" and "RetryableSendError" in (d.last_error or "")
    out.parent.mkdir()
    env.clock.freeze(env.clock.now() + timedelta(minutes=5))
    drain(env)
    drain(env)
    got = lines(out)
    assert sorted(x["to"] for x in got) == ["#ops", "+49301234567"]  # the contact's phone
    msg = next(x for x in got if x["to"] != "#ops")
    assert msg["subject"] == "Welcome to pba-server" or msg["subject"].startswith("Welcome")
    assert "Ann" in msg["text"] and msg["metadata"]["event_type"] == "account.created"
    assert msg["metadata"]["account_id"] == str(acc)
    with service_ctx(env) as ctx:
        statuses = [x.status for x in handlers.delivery_list(ctx, handler_id=h.id).items]
    assert statuses == ["delivered"]
    # a retry of a delivered message is the same message (key per delivery and address)
    with UnitOfWork(env.app.engine) as uow:
        row = uow.session.get(Delivery, d.id)
        row.status, row.next_attempt_at = "pending", env.clock.now()
        uow.commit()
    drain(env)
    assert len(lines(out)) == 2


def test_channel_final_failure_and_validation(env, tmp_path):
    inst = channel(env, tmp_path / "n.log")
    with service_ctx(env) as ctx:
        h = handlers.event_handler_create(
            ctx,
            name="bad address",
            event_types=["account.created"],
            action="channel",
            instance_id=inst,
            recipient="invalid:nobody",
        )
        for kw, field in [
            ({"recipient": "x"}, "instance_id"),  # no instance
            ({"instance_id": inst}, "recipient"),  # nobody to notify
            ({"instance_id": inst, "recipient": "x", "contact_kind": "billing"}, "recipient"),
        ]:
            with pytest.raises(ValidationError) as exc:
                handlers.event_handler_create(
                    ctx, name="x", event_types=["*"], action="channel", **kw
                )
            assert exc.value.field == field
        hook_inst = plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[SettingValue("api_key", "sk_test_abcdefgh")],
        ).id
        with pytest.raises(ValidationError, match="not a notification channel"):
            handlers.event_handler_create(
                ctx,
                name="x",
                event_types=["*"],
                action="channel",
                instance_id=hook_inst,
                recipient="a",
            )
    customer(env)
    drain(env)
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=h.id).items
    assert d.status == "failed" and d.attempts == 1 and "refused" in (d.last_error or "")


# ---------------------------------------------------------------- private addresses


@pytest.fixture
def strict() -> Iterator[None]:
    netpolicy.configure()
    yield
    netpolicy.configure(allowed_networks=TEST_NETWORKS)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def test_address_classification():
    for private in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
    ):
        assert not netpolicy.is_public(private), private
    for public in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert netpolicy.is_public(public), public


def test_webhooks_to_private_addresses_are_refused_unless_allowed(env, hook, strict):
    with service_ctx(env) as ctx:
        for url in (hook.url, "http://localhost:9/x", "http://169.254.169.254/latest/meta-data"):
            with pytest.raises(ValidationError, match="non-public address") as exc:
                handlers.event_handler_create(
                    ctx, name="x", event_types=["*"], action="webhook", url=url
                )
            assert exc.value.field == "url"
    netpolicy.configure(allow_private=True)
    with service_ctx(env) as ctx:
        h = handlers.event_handler_create(
            ctx, name="x", event_types=["account.created"], action="webhook", url=hook.url
        )
    netpolicy.configure()
    # changing it is checked as well
    with service_ctx(env) as ctx, pytest.raises(ValidationError):
        handlers.event_handler_update(ctx, handler_id=h.id, url=hook.url + "/other")
    customer(env)
    drain(env)  # at delivery, after resolution: refused for good, nothing sent
    assert hook.received == []
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=h.id).items
    assert d.status == "failed" and "non-public" in (d.last_error or "")


def test_delivery_connects_to_the_checked_address(env, hook, strict, monkeypatch):
    """With the policy on, a delivery resolves the host once, checks the
    address and connects to it, sending the host name in Host (no second
    lookup that a rebinding DNS server could answer differently)."""
    port = hook.server.server_address[1]
    url = f"http://hooks.example.test:{port}/hook"
    looked_up: list[str] = []

    def fake_resolve(host: str, p: int) -> str:
        looked_up.append(host)
        return "127.0.0.1"  # what a (test) DNS says is public

    monkeypatch.setattr(netpolicy, "resolve", fake_resolve)
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx, name="x", event_types=["account.created"], action="webhook", url=url
        )
    customer(env)
    drain(env)
    (got,) = hook.received
    assert got.headers["Host"] == f"hooks.example.test:{port}"
    assert looked_up == ["hooks.example.test", "hooks.example.test"]  # create, delivery


@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_channel_handler_and_refusal_over_the_api(api, env, protocol, tmp_path, strict):
    call = Caller(api, protocol)
    inst = call(
        "PluginConfigure",
        plugin="log_channel",
        name="log",
        settings=[{"name": "path", "value": str(tmp_path / "n.log")}],
    )
    h = call(
        "EventHandlerCreate",
        name="chat",
        event_types=["account.*"],
        action="channel",
        instance_id=inst["id"],
        recipient="#billing",
        idempotency_key=f"ch-{protocol}",
    )
    assert h["action"] == "channel" and h["instance_id"] == inst["id"]
    assert h["recipient"] == "#billing"
    upd = call("EventHandlerUpdate", handler_id=h["id"], contact_kind="technical")
    assert upd.get("recipient") is None and upd["contact_kind"] == "technical"
    call(
        "AccountCreate",
        type="customer_personal",
        name="Bo",
        contacts=[{"kind": "technical", "name": "Bo", "email": "bo@example.com"}],
    )
    drain(env)
    assert [x["to"] for x in lines(tmp_path / "n.log")] == ["bo@example.com"]
    code, msg = call.fault(
        "EventHandlerCreate",
        name="probe",
        event_types=["*"],
        action="webhook",
        url="http://127.0.0.1:6379/",
    )
    assert code == "Client.Validation" and "non-public" in msg


# ---------------------------------------------------------------- purge


def test_purge_keeps_unfinished_and_the_newest(env, hook):
    with service_ctx(env) as ctx:
        ok = handlers.event_handler_create(
            ctx, name="ok", event_types=["account.created"], action="webhook", url=hook.url
        )
    t0 = env.clock.now()
    env.clock.freeze(t0 - timedelta(days=100))
    customer(env, "Old delivered")
    drain(env)
    with service_ctx(env) as ctx:  # a handler whose receiver is down: stays pending
        handlers.event_handler_create(
            ctx,
            name="down",
            event_types=["account.suspended"],
            action="webhook",
            url="http://127.0.0.1:9/",
        )
    old_pending = customer(env, "Old pending")
    with service_ctx(env) as ctx:
        standing.account_suspend(ctx, account_id=old_pending, reason="test")
    drain(env)
    env.clock.freeze(t0)
    customer(env, "New")
    with UnitOfWork(env.app.engine) as uow:
        assign_sequence(uow.session)
        uow.commit()
    with UnitOfWork(env.app.engine) as uow:
        before = uow.session.scalar(select(func.count()).select_from(Event))
        summary = retention.purge(uow, env.clock)
        uow.commit()
    with UnitOfWork(env.app.engine) as uow:
        left = list(uow.session.scalars(select(Event.type).order_by(Event.id)))
        kept = sorted(uow.session.scalars(select(Delivery.status)))
    # the two old creations, delivered, are gone with their deliveries and
    # attempts; the old suspension still waiting for its receiver stays
    assert summary == "2 event(s) older than 90 days purged" and before == 4
    assert left == ["account.suspended", "account.created"]
    assert kept == ["pending", "pending"]  # the suspension's, and the new event's
    with UnitOfWork(env.app.engine) as uow:  # nothing old is left to purge
        assert retention.purge(uow, env.clock) == "0 event(s) purged"
        assert retention.purge(uow, env.clock, days=0) == "event retention is off"
    job = {"purge-events": env.app.jobs["purge-events"]}
    assert jobs.run_due(env.app.engine, env.app.runtime, job) == ["purge-events"]
    with service_ctx(env) as ctx:  # the cursor never goes back
        page = events.event_list(ctx, after=0)
    assert [e.seq for e in page.items] == [3, 4]
    assert ok.id
