"""Subscription operations on the service layer: changes through orders,
prorated; cancel with refund policy; suspend/resume; trials; expiry notices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.billing.balances import account_balance_get
from pba_server.billing.invoices import invoice_get
from pba_server.catalog.types import PlanTrial, ResourceQuantity
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import ValidationError
from pba_server.events.models import Event
from pba_server.orders import placing, queries
from pba_server.orders.types import OrderLineInput
from pba_server.subscriptions import service as subs
from tests.billing_support import assert_books_sound
from tests.catalog_support import service_ctx
from tests.orders_support import FakeProvisioner, buyer, card, gateway, plan, run, use_fake

D = Decimal


@pytest.fixture
def fake(env: Any) -> Iterator[FakeProvisioner]:
    f = FakeProvisioner()
    old = use_fake(env, f)
    yield f
    use_fake(env, old)


def settle(env: Any, fake: FakeProvisioner) -> None:
    run(env)
    fake.finish(env)
    run(env)


def at(env: Any, d: date) -> None:
    env.clock.freeze(datetime(d.year, d.month, d.day, 10, tzinfo=UTC))


def bought(
    env: Any, fake: FakeProvisioner, tmp_path: Any, **kw: Any
) -> tuple[int, int, dict[str, int]]:
    p = plan(env, **kw)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    with service_ctx(env) as ctx:
        o = placing.order_place(ctx, account_id=acc, lines=[OrderLineInput(plan_id=p["plan"])])
    settle(env, fake)
    with service_ctx(env) as ctx:
        o2 = queries.order_get(ctx, order_id=o.id)
    assert o2.status == "completed", o2
    assert o2.subscription_id is not None
    return acc, o2.subscription_id, p


def test_upgrade_now_is_prorated_and_preview_equals_the_order(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    big = plan(env, "Hosting L", recurring="60.00")
    _acc, sub, _small = bought(env, fake, tmp_path, recurring="30.00", upgrade_to=None)
    at(env, date(2026, 4, 16))  # 15 of 30 days left
    with service_ctx(env) as ctx:
        pv = subs.change_preview(ctx, subscription_id=sub, plan_id=big["plan"])
        assert (pv.order_type, pv.credit, pv.charge, pv.net) == (
            "upgrade",
            D("-15.00"),
            D("30.00"),
            D("15.00"),
        )
        assert pv.invoice_total == D("15.00")
        o = subs.subscription_change_plan(ctx, subscription_id=sub, plan_id=big["plan"])
    assert (o.type, o.total) == ("upgrade", D("15.00"))
    settle(env, fake)
    with service_ctx(env) as ctx:
        o = queries.order_get(ctx, order_id=o.id)
        assert o.status == "completed", o
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert s.plan_id == big["plan"]
        inv = invoice_get(ctx, invoice_id=o.invoice_id)
        assert (inv.total, inv.status) == (D("15.00"), "paid")
    assert_books_sound(env)


def test_downgrade_now_credits_the_difference(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    small = plan(env, "Hosting XS", recurring="10.00")
    acc, sub, _p = bought(env, fake, tmp_path, recurring="30.00")
    at(env, date(2026, 4, 11))  # 20 of 30 days left: credit 20, charge 6.67
    with service_ctx(env) as ctx:
        o = subs.subscription_change_plan(ctx, subscription_id=sub, plan_id=small["plan"])
    assert (o.type, o.total) == ("downgrade", D("0.00"))
    settle(env, fake)
    with service_ctx(env) as ctx:
        assert queries.order_get(ctx, order_id=o.id).status == "completed"
        bal = account_balance_get(ctx, account_id=acc)
    assert bal.balance == D("-13.33")  # 20.00 - 6.67, owed to the customer
    assert_books_sound(env)


def test_change_at_period_end_waits_for_it(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    big = plan(env, "Hosting L", recurring="60.00")
    _acc, sub, _p = bought(env, fake, tmp_path)
    with service_ctx(env) as ctx:
        o = subs.subscription_change_plan(
            ctx, subscription_id=sub, plan_id=big["plan"], when="period_end"
        )
    assert o.total == 0
    run(env)
    with service_ctx(env) as ctx:
        assert subs.subscription_get(ctx, subscription_id=sub).plan_id != big["plan"]
    at(env, date(2026, 5, 1))
    settle(env, fake)
    with service_ctx(env) as ctx:
        assert queries.order_get(ctx, order_id=o.id).status == "completed"
        assert subs.subscription_get(ctx, subscription_id=sub).plan_id == big["plan"]


def test_buy_resource_prorated_and_maximum(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    _acc, sub, p = bought(env, fake, tmp_path, resource=True)
    at(env, date(2026, 4, 16))
    with service_ctx(env) as ctx:
        pv = subs.change_preview(
            ctx, subscription_id=sub, resources=[ResourceQuantity(p["resource"], D(10))]
        )
        # 10 units x 0.50/month for 15/30 days = 2.50, plus setup 10 x 1.00
        assert pv.net == D("2.50") and pv.invoice_total == D("12.50")
        o = subs.subscription_buy_resource(
            ctx, subscription_id=sub, resource_id=p["resource"], amount=D(10)
        )
        assert o.total == D("12.50")
    settle(env, fake)
    with service_ctx(env) as ctx:
        assert queries.order_get(ctx, order_id=o.id).status == "completed"
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert s.resources[0].limit == D(20)
        with pytest.raises(ValidationError):
            subs.subscription_buy_resource(
                ctx, subscription_id=sub, resource_id=p["resource"], amount=D(81)
            )


def test_cancel_now_with_prorated_refund_and_at_period_end(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    acc, sub, _p = bought(env, fake, tmp_path, refund_policy="prorated")
    at(env, date(2026, 4, 21))  # 10 of 30 days unused: 10.00 back
    with service_ctx(env) as ctx:
        o = subs.subscription_cancel(ctx, subscription_id=sub, reason="too slow")
    settle(env, fake)
    with service_ctx(env) as ctx:
        assert queries.order_get(ctx, order_id=o.id).status == "completed"
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert (s.status, s.cancel_reason) == ("cancelled", "too slow")
        assert account_balance_get(ctx, account_id=acc).balance == D("-10.00")
    assert ("delete", sub) in fake.calls


def test_cancel_at_period_end_then_the_job_cancels(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    _acc, sub, _p = bought(env, fake, tmp_path)
    with service_ctx(env) as ctx:
        subs.subscription_cancel(ctx, subscription_id=sub, when="period_end")
    run(env)
    with service_ctx(env) as ctx:
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert (s.status, s.cancel_on, s.auto_renew) == ("active", date(2026, 5, 1), False)
    at(env, date(2026, 5, 1))
    with UnitOfWork(env.app.engine) as uow:
        subs.lifecycle(uow, env.clock, env.app.runtime)
        uow.commit()
    with service_ctx(env) as ctx:
        assert subs.subscription_get(ctx, subscription_id=sub).status == "cancelled"


def test_suspend_resume_staff_only(env, tmp_path, fake):
    _acc, sub, _p = bought(env, fake, tmp_path)
    with service_ctx(env, "cust-admin") as ctx, pytest.raises(Exception):
        subs.subscription_suspend(ctx, subscription_id=sub)
    with service_ctx(env) as ctx:
        assert (
            subs.subscription_suspend(ctx, subscription_id=sub, reason="abuse").status
            == "suspended"
        )
        assert subs.subscription_resume(ctx, subscription_id=sub).status == "active"
    assert ("suspend", sub) in fake.calls and ("resume", sub) in fake.calls


def test_trial_converts_or_expires_and_expiry_notice(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    p = plan(env, trial=PlanTrial(14, "day", requires_card=True))
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    with service_ctx(env) as ctx:
        o = placing.order_place(ctx, account_id=acc, lines=[OrderLineInput(plan_id=p["plan"])])
    assert o.total == 0
    settle(env, fake)
    with service_ctx(env) as ctx:
        sub = queries.order_get(ctx, order_id=o.id).subscription_id
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert (s.status, s.trial_ends_on) == ("trial", date(2026, 4, 15))
    at(env, date(2026, 4, 15))
    with UnitOfWork(env.app.engine) as uow:
        assert "1 trial(s) converting" in subs.lifecycle(uow, env.clock, env.app.runtime)
        uow.commit()
    settle(env, fake)
    with service_ctx(env) as ctx:
        s = subs.subscription_get(ctx, subscription_id=sub)
        assert (s.status, s.period_start, s.period_end) == (
            "active",
            date(2026, 4, 15),
            date(2026, 5, 15),
        )
        subs.subscription_set_auto_renew(ctx, subscription_id=sub, auto_renew=False)
    at(env, date(2026, 5, 5))
    for _ in range(2):
        with UnitOfWork(env.app.engine) as uow:
            subs.lifecycle(uow, env.clock, env.app.runtime)
            uow.commit()
    with UnitOfWork(env.app.engine) as uow:
        payloads = uow.session.scalars(
            select(Event.payload).where(Event.type == "subscription.expiring").order_by(Event.id)
        ).all()
    # a term that ends without renewal: one expiry notice, however often the job ran
    assert [json.loads(p)["auto_renew"] for p in payloads] == [False]


def test_trial_without_card_expires(env, tmp_path, fake):
    at(env, date(2026, 4, 1))
    p = plan(env, trial=PlanTrial(7, "day", requires_card=False))
    acc = buyer(env)
    with service_ctx(env) as ctx:
        o = placing.order_place(ctx, account_id=acc, lines=[OrderLineInput(plan_id=p["plan"])])
    settle(env, fake)
    with UnitOfWork(env.app.engine) as uow:
        from pba_server.catalog.models import PlanVersion
        from pba_server.subscriptions.models import Subscription, SubscriptionResource  # noqa: F401

        v = uow.session.scalar(select(PlanVersion).where(PlanVersion.plan_id == p["plan"]))
        v.trial_requires_card = True
        uow.commit()
    at(env, date(2026, 4, 8))
    with UnitOfWork(env.app.engine) as uow:
        assert "1 expired" in subs.lifecycle(uow, env.clock, env.app.runtime)
        uow.commit()
    with service_ctx(env) as ctx:
        sub = queries.order_get(ctx, order_id=o.id).subscription_id
        assert subs.subscription_get(ctx, subscription_id=sub).status == "expired"
