"""Events at the service layer and through the deliverer, on SQLite and PostgreSQL:
the outbox, cursor polling, handler scoping, and delivery to a loopback webhook
receiver, a loopback SMTP server and a local command."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.accounts import standing, tree, users
from pba_server.accounts.types import ContactInput
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from pba_server.events import runtime
from pba_server.events import service as events
from pba_server.events.catalog import EVENT_TYPES
from pba_server.events.models import Delivery, Event
from pba_server.events.outbox import assign_sequence
from pba_server.notify import handlers
from pba_server.notify.delivery import Deliverer, MailSettings, backoff, sign
from pba_server.notify.templates import jinja_available
from tests.catalog_support import service_ctx
from tests.event_receivers import SmtpReceiver, WebhookReceiver

PW = "a-long-password-1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


def drain(env: Any, deliverer: Deliverer | None = None) -> None:
    d = deliverer or env.app.deliverer
    for _ in range(50):
        if not d.run_once():
            return
    raise AssertionError("deliveries keep coming")


def _reseller(env: Any, name: str = "Resell") -> int:
    with service_ctx(env) as ctx:
        acc = tree.account_create(
            ctx,
            type="reseller",
            name=name,
            partner_level="basic",
            contacts=[ContactInput("administrative", name, f"office@{name.lower()}.test")],
        )
        users.user_create(
            ctx, account_id=acc.id, login=name.lower(), password=PW, full_name=name, roles=["admin"]
        )
        return acc.id


def _customer(env: Any, login: str = "admin", name: str = "Cust", parent: int | None = None) -> int:
    with service_ctx(env, login) as ctx:
        return tree.account_create(
            ctx,
            type="customer_business",
            name=name,
            parent_id=parent,
            contacts=[ContactInput("billing", "Bill", f"billing@{name.lower()}.test")],
        ).id


def _webhook(env: Any, url: str, login: str = "admin", **kw: Any) -> tuple[int, str]:
    with service_ctx(env, login) as ctx:
        h = handlers.event_handler_create(
            ctx,
            name="hook",
            event_types=kw.pop("types", ["account.*"]),
            action="webhook",
            url=url,
            **kw,
        )
        assert h.secret
        return h.id, h.secret


def _types(env: Any, login: str = "admin", after: int = 0) -> list[str]:
    with service_ctx(env, login) as ctx:
        return [e.type for e in events.event_list(ctx, after=after).items]


# ---------------------------------------------------------------- catalog and outbox


def test_catalog_documents_every_event_the_issue_names() -> None:
    for name in [
        "account.created",
        "account.updated",
        "account.suspended",
        "user.created",
        "order.placed",
        "order.approved",
        "order.rejected",
        "order.completed",
        "subscription.created",
        "subscription.changed",
        "subscription.suspended",
        "subscription.resumed",
        "subscription.cancelled",
        "subscription.expiring",
        "invoice.issued",
        "invoice.paid",
        "invoice.overdue",
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
        "account.credit_limit_reached",
        "usage.threshold_reached",
        "service.provisioned",
        "service.failed",
        "operation.manual_task",
        "domain.expiring",
        "registrar.balance_low",
    ]:
        assert EVENT_TYPES[name].payload, name


def test_event_type_list(env: Any) -> None:
    with service_ctx(env) as ctx:
        types = events.event_type_list(ctx).items
    user = next(t for t in types if t.name == "user.created")
    assert {f.name for f in user.payload} >= {"user_id", "login", "account_id", "roles"}
    assert [t.name for t in types] == sorted(EVENT_TYPES)


def test_account_changes_raise_events_in_order(env: Any) -> None:
    rid = _reseller(env)
    with service_ctx(env) as ctx:
        tree.account_update(ctx, account_id=rid, name="Renamed")
        standing.account_suspend(ctx, account_id=rid, reason="unpaid")
        standing.account_resume(ctx, account_id=rid)
    with service_ctx(env) as ctx:
        page = events.event_list(ctx)
    assert [e.type for e in page.items] == [
        "account.created",
        "user.created",
        "account.updated",
        "account.suspended",
        "account.resumed",
    ]
    assert [e.seq for e in page.items] == [1, 2, 3, 4, 5]
    assert page.next_cursor == 5
    suspended = json.loads(page.items[3].payload)
    assert suspended["status"] == "suspended" and suspended["reason"] == "unpaid"
    assert json.loads(page.items[2].payload)["changes"]["name"] == {
        "from": "Resell",
        "to": "Renamed",
    }
    assert page.items[1].subject_type == "user" and page.items[0].account_id == rid


def test_a_rolled_back_change_emits_nothing(env: Any, hook: WebhookReceiver) -> None:
    _webhook(env, hook.url)
    with pytest.raises(RuntimeError), service_ctx(env) as ctx:
        tree.account_create(ctx, type="customer_personal", name="Ghost")
        raise RuntimeError("the call fails after the event was written")
    with UnitOfWork(env.app.engine) as uow:
        assert uow.session.scalar(select(func.count()).select_from(Event)) == 0
        assert uow.session.scalar(select(func.count()).select_from(Delivery)) == 0
    drain(env)
    assert hook.received == [] and hook.refused == []


def test_cursor_polling_filters_and_scope(env: Any) -> None:
    rid = _reseller(env)
    _customer(env, "resell", "Mine", rid)
    _customer(env, "admin", "Direct")
    # its own account and its customer's, not the provider's direct customer
    assert _types(env, "resell") == ["account.created", "user.created", "account.created"]
    with service_ctx(env) as ctx:
        first = events.event_list(ctx, limit=2)
        rest = events.event_list(ctx, after=first.next_cursor)
        only = events.event_list(ctx, types=["user.*"])
        none = events.event_list(ctx, after=rest.next_cursor)
        assert [e.seq for e in first.items + rest.items] == [1, 2, 3, 4]
        assert [e.type for e in only.items] == ["user.created"]
        assert none.items == [] and none.next_cursor == rest.next_cursor
        with pytest.raises(ValidationError):
            events.event_list(ctx, types=["no.such"])
    with service_ctx(env, "resell") as ctx, pytest.raises(NotFound):
        events.event_list(ctx, account_id=1)


def test_an_event_committed_late_is_not_skipped_by_pollers(env: Any) -> None:
    """Ids are handed out at insert, so a transaction that commits after a later
    one must still get a cursor above what pollers already read."""
    if env.backend == "sqlite":
        pytest.skip("SQLite has one writer: transactions cannot interleave")
    slow = service_ctx(env)
    ctx = slow.__enter__()
    try:
        tree.account_create(ctx, type="customer_personal", name="Slow")  # lower id
        _customer(env, "admin", "Fast")  # higher id, committed first
        with service_ctx(env) as c2:
            seen = events.event_list(c2)
        assert [json.loads(e.payload)["name"] for e in seen.items] == ["Fast"]
    finally:
        slow.__exit__(None, None, None)  # commits
    with service_ctx(env) as c3:
        late = events.event_list(c3, after=seen.next_cursor)
    assert [json.loads(e.payload)["name"] for e in late.items] == ["Slow"]
    assert late.items[0].seq == seen.next_cursor + 1
    assert late.items[0].id < seen.items[0].id


# ---------------------------------------------------------------- handlers


def test_handler_crud_and_scope(env: Any, hook: WebhookReceiver) -> None:
    rid = _reseller(env)
    other = _reseller(env, "Other")
    hid, secret = _webhook(env, hook.url, "resell")
    with service_ctx(env, "resell") as ctx:
        assert [h.id for h in handlers.event_handler_list(ctx).items] == [hid]
        assert handlers.event_handler_list(ctx).items[0].secret is None  # shown once
        h = handlers.event_handler_update(ctx, handler_id=hid, event_types=["user.created"])
        assert h.event_types == ["user.created"] and h.secret is None
        rotated = handlers.event_handler_update(ctx, handler_id=hid, rotate_secret=True)
        assert rotated.secret and rotated.secret != secret
        with pytest.raises(NotFound):
            handlers.event_handler_create(
                ctx, name="x", event_types=["*"], action="webhook", url=hook.url, account_id=other
            )
        with pytest.raises(ValidationError):
            handlers.event_handler_create(
                ctx, name="x", event_types=["account.nope"], action="webhook", url=hook.url
            )
        with pytest.raises(ValidationError):
            handlers.event_handler_create(
                ctx, name="x", event_types=["*"], action="webhook", url="file:///etc/passwd"
            )
        with pytest.raises(Forbidden):
            handlers.event_handler_create(
                ctx, name="x", event_types=["*"], action="command", command=["/bin/true"]
            )
    with service_ctx(env, "other") as ctx, pytest.raises(NotFound):
        handlers.event_handler_update(ctx, handler_id=hid, name="mine now")
    with service_ctx(env) as ctx:
        assert [h.id for h in handlers.event_handler_list(ctx).items] == [
            hid
        ]  # the provider sees below
        assert handlers.event_handler_list(ctx, account_id=other).items == []
    with service_ctx(env, "resell") as ctx:
        assert handlers.event_handler_delete(ctx, handler_id=hid) is True
        assert handlers.event_handler_list(ctx).items == []
        with pytest.raises(NotFound):
            handlers.event_handler_delete(ctx, handler_id=hid)
    assert rid


def test_handlers_get_events_of_their_own_subtree_only(env: Any, hook: WebhookReceiver) -> None:
    rid = _reseller(env)
    other = _reseller(env, "Other")
    mine, _ = _webhook(env, hook.url, "resell")
    top, _ = _webhook(env, hook.url, "admin")
    _customer(env, "resell", "Mine", rid)
    _customer(env, "other", "Theirs", other)
    _customer(env, "admin", "Direct")
    drain(env)
    got = [(int(r.headers["X-PBA-Delivery"]), r.json["data"]["name"]) for r in hook.received]
    with UnitOfWork(env.app.engine) as uow:
        by_handler = {d.id: d.handler_id for d in uow.session.scalars(select(Delivery))}
    assert sorted(n for d, n in got if by_handler[d] == mine) == ["Mine"]
    assert sorted(n for d, n in got if by_handler[d] == top) == ["Direct", "Mine", "Theirs"]


# ---------------------------------------------------------------- webhooks


def test_webhook_is_signed_and_retried_until_the_receiver_is_up(
    env: Any, hook: WebhookReceiver
) -> None:
    env.clock.freeze(T0)
    hid, secret = _webhook(env, hook.url)
    hook.status = 503
    rid = _customer(env)
    drain(env)
    assert len(hook.refused) == 1
    with service_ctx(env) as ctx:
        tree.account_update(ctx, account_id=rid, name="Second")
        tree.account_update(ctx, account_id=rid, name="Third")
        page = handlers.delivery_list(ctx, handler_id=hid)
    first = page.items[-1]
    assert first.status == "pending" and first.attempts == 1 and first.response_code == 503
    assert first.next_attempt_at == T0 + timedelta(seconds=30)
    assert first.attempt_log[0].response_code == 503 and not first.attempt_log[0].ok
    drain(env)  # not due yet; the later events wait behind the first
    assert len(hook.refused) == 1
    env.clock.advance(timedelta(seconds=31))
    drain(env)  # still down: second attempt, backoff doubles
    assert len(hook.refused) == 2
    hook.status = 200
    env.clock.advance(timedelta(seconds=61))
    drain(env)
    names = [
        r.json["data"].get("name") or r.json["data"]["changes"]["name"]["to"] for r in hook.received
    ]
    assert names == ["Cust", "Second", "Third"]  # once each, in order
    for r in hook.received:
        ts = r.headers["X-PBA-Timestamp"]
        expected = (
            "sha256="
            + hmac.new(secret.encode(), ts.encode() + b"." + r.body, hashlib.sha256).hexdigest()
        )
        assert hmac.compare_digest(r.headers["X-PBA-Signature"], expected)
        assert r.headers["X-PBA-Signature"] == sign(secret, ts, r.body)
    with service_ctx(env) as ctx:
        page = handlers.delivery_list(ctx, handler_id=hid, status="delivered")
    assert page.total == 3
    assert [a.response_code for a in page.items[-1].attempt_log] == [503, 503, 200]


def test_webhook_gives_up_then_retry_on_request(env: Any, hook: WebhookReceiver) -> None:
    env.clock.freeze(T0)
    hid, _ = _webhook(env, hook.url, retry_for_seconds=60)
    hook.status = 500
    _customer(env)
    drain(env)
    env.clock.advance(timedelta(seconds=31))
    drain(env)  # 30 s + 60 s would pass the 60 s window: failed
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=hid).items
        assert (
            d.status == "failed"
            and d.attempts == 2
            and d.last_error == "HTTP 500 Internal Server Error"
        )
        with pytest.raises(NotFound):
            handlers.delivery_retry(ctx, delivery_id=d.id + 1000)
    hook.status = 200
    with service_ctx(env) as ctx:
        again = handlers.delivery_retry(ctx, delivery_id=d.id)
        assert again.status == "pending"
    drain(env)
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=hid).items
    assert d.status == "delivered" and d.attempts == 3 and len(hook.received) == 1
    with service_ctx(env) as ctx, pytest.raises(InvalidState, match="only failed or cancelled"):
        handlers.delivery_retry(ctx, delivery_id=d.id)


def test_a_receiver_that_is_not_listening_is_a_failed_attempt(env: Any) -> None:
    env.clock.freeze(T0)
    dead = WebhookReceiver()
    url = dead.url
    dead.close()
    hid, _ = _webhook(env, url)
    _customer(env)
    drain(env)
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx, handler_id=hid).items
    assert (
        d.status == "pending" and d.response_code is None and "Connection" in (d.last_error or "")
    )


def test_concurrent_deliverers_send_each_delivery_once(env: Any, hook: WebhookReceiver) -> None:
    for i in range(4):
        _webhook(env, hook.url, types=["account.created"], secret=f"secret-number-{i:04d}")
    for i in range(5):
        _customer(env, "admin", f"C{i}")
    errors: list[BaseException] = []

    def work() -> None:
        d = Deliverer(env.app.engine, env.clock, env.app.secrets)
        try:
            for _ in range(40):
                d.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = [int(r.headers["X-PBA-Delivery"]) for r in hook.received]
    assert len(ids) == 20 and len(set(ids)) == 20


def test_the_after_commit_nudge_wakes_the_delivery_thread(env: Any, hook: WebhookReceiver) -> None:
    _webhook(env, hook.url)
    engine = env.app.engine
    runtime.register(engine, env.app.deliverer, idle_seconds=60)  # only a nudge can wake it
    runtime.start(engine)
    try:
        _customer(env)
        for _ in range(100):
            if hook.received:
                break
            threading.Event().wait(0.1)
        assert [r.json["type"] for r in hook.received] == ["account.created"]
    finally:
        loop = runtime._loops[id(engine)]
        runtime.stop(engine)
        assert loop.thread is not None
        loop.thread.join(10)
        runtime.register(engine, env.app.deliverer)


# ---------------------------------------------------------------- e-mail


def test_email_to_contacts_over_smtp_with_the_resellers_brand(env: Any, smtp: SmtpReceiver) -> None:
    rid = _reseller(env, "Brandy")
    with service_ctx(env, "brandy") as ctx:
        handlers.event_handler_create(
            ctx,
            name="tell billing",
            event_types=["account.suspended"],
            action="email",
            contact_kind="billing",
        )
    cid = _customer(env, "brandy", "Shop", rid)
    with service_ctx(env) as ctx:
        standing.account_suspend(ctx, account_id=cid, reason="unpaid")
    mailer = Deliverer(
        env.app.engine,
        env.clock,
        env.app.secrets,
        MailSettings(host="127.0.0.1", port=smtp.port, sender="noreply@provider.test"),
    )
    drain(env, mailer)
    (mail,) = smtp.mails
    assert mail.recipients == ["billing@shop.test"]
    assert mail.sender == "office@brandy.test"  # the reseller's address, not the provider's
    if jinja_available():
        assert mail.message["Subject"] == "Your account is suspended"
    else:
        assert mail.message["Subject"] == "[Brandy] An account was suspended"
    body = mail.message.get_payload()
    assert "unpaid" in body and "Brandy" in body
    with service_ctx(env, "brandy") as ctx:
        (d,) = handlers.delivery_list(ctx).items
    assert d.status == "delivered" and d.response_code == 250


def test_email_without_a_server_fails_and_retries(env: Any) -> None:
    env.clock.freeze(T0)
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx, name="m", event_types=["*"], action="email", email_to="ops@provider.test"
        )
    _customer(env)
    drain(env, Deliverer(env.app.engine, env.clock, env.app.secrets, MailSettings(sender="a@b.c")))
    with service_ctx(env) as ctx:
        (d,) = handlers.delivery_list(ctx).items
    assert d.status == "pending" and "no SMTP server" in (d.last_error or "")


# ---------------------------------------------------------------- commands


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "handler.py"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_command_gets_the_payload_on_stdin(env: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    script = _script(
        tmp_path,
        "import os, sys\n"
        f"open({str(out)!r}, 'w').write(os.environ['PBA_EVENT_TYPE'] + ' ' + sys.stdin.read())\n",
    )
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx, name="run", event_types=["account.created"], action="command", command=[script]
        )
        with pytest.raises(ValidationError):
            handlers.event_handler_create(
                ctx, name="rel", event_types=["*"], action="command", command=["true"]
            )
    _customer(env)
    drain(env)
    kind, _, body = out.read_text().partition(" ")
    assert kind == "account.created" and json.loads(body)["data"]["name"] == "Cust"


def test_command_timeout_and_exit_status_are_failures(env: Any, tmp_path: Path) -> None:
    env.clock.freeze(T0)
    slow = _script(tmp_path, "import time\ntime.sleep(10)\n")
    with service_ctx(env) as ctx:
        handlers.event_handler_create(
            ctx,
            name="slow",
            event_types=["account.created"],
            action="command",
            command=[slow],
            timeout_seconds=1,
        )
        handlers.event_handler_create(
            ctx,
            name="bad",
            event_types=["account.created"],
            action="command",
            command=[sys.executable, "-c", "import sys; sys.exit(3)"],
        )
    _customer(env)
    drain(env)
    with service_ctx(env) as ctx:
        page = handlers.delivery_list(ctx)
    errors = {d.handler_id: (d.response_code, d.last_error or "") for d in page.items}
    slow_result, bad_result = errors[min(errors)], errors[max(errors)]
    assert bad_result[0] == 3 and bad_result[1].startswith("exit status 3")
    assert slow_result == (None, "timed out after 1 s")


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(20) == 3600


def test_sequencing_twice_changes_nothing(env: Any) -> None:
    _customer(env)
    with UnitOfWork(env.app.engine) as uow:
        assert assign_sequence(uow.session) == 1
        assert assign_sequence(uow.session) == 0
        uow.commit()


def test_the_scheduler_starts_and_stops_the_delivery_thread(env: Any) -> None:
    from pba_server.scheduler.jobs import Ticker

    engine = env.app.engine
    runtime.register(engine, env.app.deliverer, idle_seconds=0.1)
    ticker = Ticker(engine, env.app.runtime, env.app.jobs, seconds=3600)
    ticker.start()
    loop = runtime._loops[id(engine)]
    try:
        assert loop.thread is not None and loop.thread.is_alive()
    finally:
        ticker.stop()
        assert loop.thread is not None
        loop.thread.join(10)
        assert not loop.thread.is_alive()
        runtime.register(engine, env.app.deliverer)


def test_emit_many_writes_what_emit_does_in_cursor_order(env: Any) -> None:
    from pba_server.events.outbox import NewEvent, emit, emit_many

    env.clock.freeze(T0)
    res = _reseller(env)
    c1 = _customer(env, "resell", "One")
    c2 = _customer(env, "resell", "Two")
    with service_ctx(env) as ctx:
        top = handlers.event_handler_create(
            ctx, name="all", event_types=["*"], action="email", email_to="a@example.test"
        ).id
        fam = handlers.event_handler_create(
            ctx,
            name="inv",
            event_types=["invoice.*"],
            action="email",
            email_to="i@example.test",
            account_id=res,
        ).id
        gone = handlers.event_handler_create(
            ctx,
            name="gone",
            event_types=["invoice.issued"],
            action="email",
            email_to="g@example.test",
            account_id=c1,
        ).id
        handlers.event_handler_delete(ctx, handler_id=gone)
        handlers.event_handler_create(
            ctx,
            name="other",
            event_types=["order.*"],
            action="email",
            email_to="o@example.test",
            account_id=c2,
        )
        from pba_server.accounts.models import Account

        paths = {a: ctx.session.get(Account, a).path for a in (c1, c2)}  # type: ignore[union-attr]
    before = _types(env)
    with service_ctx(env) as ctx:
        one = emit(
            ctx,
            "invoice.issued",
            ("invoice", 1),
            {"invoice_id": 1},
            account_id=c1,
            account_path=paths[c1],
        )
        ids = emit_many(
            ctx.session,
            "invoice.issued",
            [
                NewEvent(("invoice", 2), {"invoice_id": 2}, c1, paths[c1]),
                NewEvent(("invoice", 3), {"invoice_id": 3}, c2, paths[c2]),
            ],
            now=ctx.now(),
            correlation_id=ctx.correlation_id,
        )
        assert emit_many(ctx.session, "invoice.issued", [], now=ctx.now()) == []
        with pytest.raises(ValueError):
            emit_many(ctx.session, "invoice.nope", [], now=ctx.now())
        ctx.session.flush()
        assert ids == [one.id + 1, one.id + 2]
        rows = {
            e.id: e for e in ctx.session.scalars(select(Event).where(Event.id.in_([one.id, *ids])))
        }
        assert rows[ids[0]].payload == rows[one.id].payload.replace(
            '"invoice_id": 1', '"invoice_id": 2'
        )
        assert rows[ids[0]].correlation_id == rows[one.id].correlation_id
        assert rows[ids[0]].occurred_at == rows[one.id].occurred_at
        got = sorted(
            (d.event_id, d.handler_id)
            for d in ctx.session.scalars(
                select(Delivery).where(Delivery.event_id.in_([one.id, *ids]))
            )
        )
        # the same deliveries for emit's event and emit_many's event of c1
        assert got == sorted(
            [
                (one.id, top),
                (one.id, fam),
                (ids[0], top),
                (ids[0], fam),
                (ids[1], top),
                (ids[1], fam),
            ]
        )
    with service_ctx(env) as ctx:
        emit_many(
            ctx.session,
            "invoice.paid",
            [NewEvent(("invoice", 3), {"invoice_id": 3}, c2, paths[c2])],
            now=ctx.now(),
        )
    listed = _types(env)
    assert listed == [*before, "invoice.issued", "invoice.issued", "invoice.issued", "invoice.paid"]
    with service_ctx(env) as ctx:
        page = events.event_list(ctx, after=0, limit=1000).items
    assert [e.seq for e in page] == list(range(1, len(page) + 1))
    assert [e.id for e in page] == sorted(e.id for e in page)
