"""Events operations through the real SOAP and XML-RPC endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pba_server.notify.delivery import sign
from tests.catalog_support import Caller
from tests.event_receivers import WebhookReceiver
from tests.support import page_items


@pytest.fixture(params=["soap", "xmlrpc"])
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def test_subscribe_poll_and_deliver(call: Caller, env: Any, hook: WebhookReceiver) -> None:
    types = page_items(call("EventTypeList"))
    assert "invoice.overdue" in [t["name"] for t in types]
    h = call(
        "EventHandlerCreate",
        name="crm",
        event_types=["account.created", "user.*"],
        action="webhook",
        url=hook.url,
        idempotency_key="hook-1",
    )
    assert h["secret"].startswith("whsec_") and h["event_types"] == ["account.created", "user.*"]
    acc = call("AccountCreate", type="customer_personal", name="Ann")
    call(
        "UserCreate",
        account_id=acc["id"],
        login="ann",
        password="ann-password-1",
        full_name="Ann",
        roles=["admin"],
    )
    page = call("EventList", after=0)
    assert [e["type"] for e in page["items"]] == ["account.created", "user.created"]
    assert json.loads(page["items"][0]["payload"])["name"] == "Ann"
    assert call("EventList", after=page["next_cursor"])["items"] in ([], None)
    env.app.deliverer.run_once()
    env.app.deliverer.run_once()
    assert [r.json["type"] for r in hook.received] == ["account.created", "user.created"]
    for r in hook.received:
        assert r.headers["X-PBA-Signature"] == sign(
            h["secret"], r.headers["X-PBA-Timestamp"], r.body
        )
    deliveries = call("DeliveryList", handler_id=h["id"])
    assert deliveries["total"] == 2
    assert {d["status"] for d in deliveries["items"]} == {"delivered"}
    assert deliveries["items"][0]["attempt_log"][0]["response_code"] == 200
    listed = page_items(call("EventHandlerList"))
    assert [x["id"] for x in listed] == [h["id"]] and listed[0].get("secret") is None
    upd = call("EventHandlerUpdate", handler_id=h["id"], enabled=False)
    assert upd["enabled"] is False
    assert call("EventHandlerDelete", handler_id=h["id"]) is True
    code, _msg = call.fault("EventHandlerDelete", handler_id=h["id"])
    assert code.endswith("NotFound")
    code, msg = call.fault(
        "EventHandlerCreate", name="x", event_types=["nope"], action="webhook", url=hook.url
    )
    assert code.endswith("Validation") and "nope" in msg


def test_templates_over_the_wire(call: Caller) -> None:
    pytest.importorskip("jinja2")
    t = call(
        "NotificationTemplateSet",
        event_type="payment.failed",
        subject="{{ brand }}: payment failed",
        text_body="{{ data.amount }} {{ data.currency }}",
    )
    assert t["account_id"] == 1 and t["language"] == "en"
    out = call(
        "NotificationTemplatePreview", event_type="payment.failed", payload='{"amount": "9.50"}'
    )
    assert out["text_body"] == "9.50 EUR"
    got = call("NotificationTemplateGet", event_type="invoice.overdue")
    assert got.get("account_id") is None and "overdue" in got["subject"]
    assert [x["event_type"] for x in page_items(call("NotificationTemplateList"))] == [
        "payment.failed"
    ]
    code, _msg = call.fault(
        "NotificationTemplateSet",
        event_type="payment.failed",
        subject="x",
        text_body="{{ ''.__class__ }}",
    )
    assert code.endswith("Validation")
    assert call("NotificationTemplateDelete", event_type="payment.failed") is True
