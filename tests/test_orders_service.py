"""Orders on the service layer: placing, the workflow running in the
background, payment branches, provisioning outcomes, approval, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from pba_server.billing.balances import account_balance_get
from pba_server.billing.invoices import invoice_get
from pba_server.core.errors import CreditLimitExceeded, InvalidState, ValidationError
from pba_server.orders import decisions, placing, queries, workflows
from pba_server.orders.types import OrderLineInput, ParameterValue
from tests.billing_support import assert_books_sound
from tests.catalog_support import service_ctx
from tests.orders_support import (
    FakeProvisioner,
    buyer,
    card,
    gateway,
    plan,
    run,
    subscriptions_of,
    use_fake,
)

D = Decimal


@pytest.fixture
def fake(env: Any) -> Iterator[FakeProvisioner]:
    f = FakeProvisioner()
    old = use_fake(env, f)
    yield f
    use_fake(env, old)


def place(env: Any, acc: int, *lines: OrderLineInput, login: str = "admin", **kw: Any) -> Any:
    with service_ctx(env, login) as ctx:
        return placing.order_place(ctx, account_id=acc, lines=list(lines), **kw)


def get(env: Any, order_id: int) -> Any:
    with service_ctx(env) as ctx:
        return queries.order_get(ctx, order_id=order_id)


def test_sales_order_runs_invoice_charge_provision_complete(env, tmp_path, fake):
    p = plan(env, setup="5.00")
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    o = place(env, acc, OrderLineInput(plan_id=p["plan"]))
    assert (o.status, o.current_step, o.total) == ("running", "screen", D("35.00"))
    assert [c.description for c in o.lines[0].charges] == ["Setup fee", "Subscription, 1 month"]
    run(env)
    o = get(env, o.id)
    assert (o.status, o.current_action) == ("running", "provision")
    assert o.invoice_id and o.charge_id
    with service_ctx(env) as ctx:
        inv = invoice_get(ctx, invoice_id=o.invoice_id)
    assert (inv.status, inv.total) == ("paid", D("35.00"))
    [sub] = subscriptions_of(env, acc)
    assert sub.status == "active"
    assert fake.calls == [("create", sub.id)]
    assert fake.finish(env) == 1
    run(env)
    o = get(env, o.id)
    assert (o.status, o.subscription_id) == ("completed", sub.id)
    assert [h.action for h in o.history] == [
        "place",
        "fraud_screen",
        "invoice",
        "invoice",
        "charge",
        "charge",
        "provision",
        "provision",
        "complete",
    ]
    assert_books_sound(env)


def test_declined_card_rejects_with_the_reason_and_provisions_nothing(env, tmp_path, fake):
    p = plan(env)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path), token="tok_insufficient_funds")
    o = place(env, acc, OrderLineInput(plan_id=p["plan"]))
    run(env)
    o = get(env, o.id)
    assert o.status == "rejected"
    assert "insufficient_funds" in (o.reason or "")
    assert fake.calls == [] and subscriptions_of(env, acc) == []
    with service_ctx(env) as ctx:
        assert invoice_get(ctx, invoice_id=o.invoice_id).status == "void"
    assert_books_sound(env)


def test_provisioning_failure_refunds_and_rejects(env, tmp_path, fake):
    p = plan(env)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    o = place(env, acc, OrderLineInput(plan_id=p["plan"]))
    run(env)
    fake.finish(env, "failed", "platform refused")
    run(env)
    o = get(env, o.id)
    assert o.status == "rejected"
    assert "platform refused" in (o.reason or "")
    [sub] = subscriptions_of(env, acc)
    assert sub.status == "cancelled"
    from pba_server.payments.charges import payment_charge_get

    with service_ctx(env) as ctx:
        ch = payment_charge_get(ctx, charge_id=o.charge_id)
        assert ch.refunded == ch.amount == D("30.00")
        bal = account_balance_get(ctx, account_id=acc)
    assert bal.balance == 0
    assert_books_sound(env)


def test_on_account_respects_the_credit_limit(env, fake):
    p = plan(env, recurring="80.00")
    acc = buyer(env, credit_limit="100")
    o = place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    with pytest.raises(CreditLimitExceeded):
        place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    run(env)
    fake.finish(env)
    run(env)
    o = get(env, o.id)
    assert o.status == "completed" and o.charge_id is None
    with service_ctx(env) as ctx:
        assert invoice_get(ctx, invoice_id=o.invoice_id).status == "issued"


def test_validation(env, tmp_path, fake):
    p = plan(env)
    acc = buyer(env)
    with pytest.raises(ValidationError) as e:
        place(env, acc, OrderLineInput(plan_id=p["plan"]))
    assert e.value.field == "payment_method_id"
    with pytest.raises(ValidationError) as e:
        place(
            env,
            acc,
            OrderLineInput(plan_id=p["plan"], parameters=[ParameterValue("x", "y")]),
            on_account=True,
        )
    assert e.value.field == "lines[0].parameters.x"
    with pytest.raises(ValidationError) as e:
        place(env, acc, OrderLineInput(plan_id=999), on_account=True)
    assert e.value.field == "lines[0].plan_id"
    with pytest.raises(ValidationError):
        place(env, acc, OrderLineInput(), on_account=True)


def test_approval_and_reject_and_cancel(env, tmp_path, fake):
    from pba_server.orders.types import WorkflowStep
    from pba_server.orders.types import WorkflowTransition as T

    p = plan(env)
    acc = buyer(env, credit_limit="1000")
    with service_ctx(env) as ctx:
        workflows.workflow_set(
            ctx,
            order_type="sales",
            start="approval",
            steps=[
                WorkflowStep(
                    "approval", "wait_approval", [T("approved", "invoice"), T("rejected", "no")]
                ),
                WorkflowStep("invoice", "invoice", [T("*", "done")]),
                WorkflowStep("done", "complete"),
                WorkflowStep("no", "reject"),
            ],
        )
    a = place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    b = place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    c = place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    run(env)
    assert get(env, a.id).status == "waiting"
    with service_ctx(env, "cust-admin") as ctx, pytest.raises(Exception):
        decisions.order_approve(ctx, order_id=a.id)
    with service_ctx(env) as ctx:
        decisions.order_approve(ctx, order_id=a.id, note="ok")
        decisions.order_reject(ctx, order_id=b.id, reason="no stock")
        decisions.order_cancel(ctx, order_id=c.id, reason="changed my mind")
        with pytest.raises(InvalidState):
            decisions.order_approve(ctx, order_id=c.id)
    run(env)
    assert get(env, a.id).status == "completed"
    assert (get(env, b.id).status, get(env, b.id).reason) == ("rejected", "no stock")
    assert get(env, c.id).status == "cancelled"
    # no provision step: the complete step created the subscription
    assert len(subscriptions_of(env, acc)) == 1


def test_rules_screener_sends_suspect_orders_to_approval(env, tmp_path, fake):
    from pba_server.payments.plugins import plugin_configure
    from pba_server.payments.types import SettingValue

    with service_ctx(env) as ctx:
        plugin_configure(
            ctx,
            plugin="rules_screener",
            name="rules",
            settings=[SettingValue("max_amount", "100"), SettingValue("new_account_hours", "0")],
        )
    p = plan(env, recurring="30.00")
    big = plan(env, "Dedicated", recurring="300.00")
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    ok = place(env, acc, OrderLineInput(plan_id=p["plan"]))
    suspect = place(env, acc, OrderLineInput(plan_id=big["plan"]))
    run(env)
    assert get(env, ok.id).current_action == "provision"
    s = get(env, suspect.id)
    assert (s.status, s.current_step, s.fraud_score) == ("waiting", "approval", 40)
    assert s.fraud_reasons == ["amount 300.00 USD over 100"]
    assert s.invoice_id is None  # nothing invoiced or charged before approval
    with service_ctx(env) as ctx:
        decisions.order_approve(ctx, order_id=suspect.id)
    run(env)
    fake.finish(env)
    run(env)
    assert get(env, suspect.id).status == "completed"


def test_rules_screener_rules() -> None:
    from datetime import UTC, datetime, timedelta

    from pba_server.sdk.fraud import OrderFacts
    from plugins.rules_screener import RulesScreener

    now = datetime(2026, 1, 1, tzinfo=UTC)
    s = RulesScreener({"max_amount": "100", "fraud_score": "90"})
    base = OrderFacts(1, "sales", 1, now - timedelta(days=30), "DE", "EUR", D(10), now, False)
    assert s.screen(base).verdict == "pass"
    new = OrderFacts(1, "sales", 1, now - timedelta(hours=1), "DE", "EUR", D(10), now, False)
    assert s.screen(new).reasons == ("first order of a new account",)
    assert s.screen(new).verdict == "suspect"
    card = OrderFacts(
        1, "sales", 1, now - timedelta(days=30), "DE", "EUR", D(500), now, False, card_country="NG"
    )
    v = s.screen(card)
    assert (v.verdict, v.score) == ("suspect", 80)
    fast = OrderFacts(
        1,
        "sales",
        1,
        now - timedelta(days=30),
        "DE",
        "EUR",
        D(500),
        now,
        False,
        card_country="NG",
        previous_orders=9,
        orders_last_hour=9,
    )
    assert s.screen(fast).verdict == "fraud"


def test_payment_transfer_and_pending_charge(env, tmp_path, fake):
    from pba_server.payments.models import GatewayPayment
    from tests.orders_support import subscriptions_of

    inst = gateway(env, tmp_path)
    acc = buyer(env)
    card(env, acc, inst)
    # a prepayment: charged without an invoice, kept as credit
    o = place(env, acc, OrderLineInput(amount=D("25.00")), order_type="payment")
    run(env)
    o = get(env, o.id)
    assert (o.status, o.invoice_id) == ("completed", None) and o.charge_id
    with service_ctx(env) as ctx:
        assert account_balance_get(ctx, account_id=acc).balance == D("-25.00")
    # transfer a subscription to another customer of the same seller
    p = plan(env)
    s = place(env, acc, OrderLineInput(plan_id=p["plan"]))
    run(env)
    fake.finish(env)
    run(env)
    sub = get(env, s.id).subscription_id
    other = buyer(env, "Other")
    t = place(
        env, acc, OrderLineInput(subscription_id=sub, to_account_id=other), order_type="transfer"
    )
    run(env)
    assert get(env, t.id).status == "completed"
    assert [x.id for x in subscriptions_of(env, other)] == [sub]
    # a charge whose answer is lost stays pending: the order waits, never charges twice
    late = buyer(env, "Late")
    card(env, late, inst, token="tok_timeout")
    w = place(env, late, OrderLineInput(plan_id=p["plan"]))
    run(env)
    w = get(env, w.id)
    assert (w.status, w.current_step) == ("running", "charge")
    assert w.history[-1].result == "pending"
    from datetime import UTC, datetime, timedelta

    env.clock.freeze(datetime.now(UTC) + timedelta(minutes=10))
    run(env)  # asks again with the same key: still the one pending charge
    from sqlalchemy import func, select

    from pba_server.core.db import UnitOfWork

    with UnitOfWork(env.app.engine) as uow:
        n = uow.session.scalar(
            select(func.count())
            .select_from(GatewayPayment)
            .where(GatewayPayment.account_id == late)
        )
    assert n == 1


def test_a_step_refused_by_a_business_rule_retries_then_rejects(env, tmp_path, fake):
    from datetime import UTC, datetime, timedelta

    from pba_server.accounts import standing

    p = plan(env)
    acc = buyer(env, credit_limit="100")
    o = place(env, acc, OrderLineInput(plan_id=p["plan"]), on_account=True)
    with service_ctx(env) as ctx:
        standing.account_close(ctx, account_id=acc, reason="gone")
    at = datetime.now(UTC)
    for i in range(4):
        env.clock.freeze(at + timedelta(hours=2 * i))
        run(env)
    o = get(env, o.id)
    assert o.status == "rejected" and "closed" in (o.reason or "")
    assert [h.action for h in o.history].count("error") == 3
    assert subscriptions_of(env, acc) == []
