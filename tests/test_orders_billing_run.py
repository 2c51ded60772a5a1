"""Orders and the billing run side by side (service layer, both databases):
a trial is never billed by the run (the lifecycle job converts it with its
own order); a manual renewal order and the run never both bill a period;
a plan's scheduled subscriber migration applies at the run's renewal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import false

from pba_server.billing import run as billing_run
from pba_server.billing.ports import RenewalOrders
from pba_server.catalog.types import PlanTrial
from pba_server.core.db import UnitOfWork
from pba_server.orders import placing, queries
from pba_server.orders.renewals import Renewals
from pba_server.orders.types import OrderLineInput
from pba_server.subscriptions import service as subs
from pba_server.subscriptions.service import lifecycle
from tests.billing_support import assert_books_sound
from tests.billrun_support import invoices, sub
from tests.catalog_support import service_ctx
from tests.orders_support import FakeProvisioner, buyer, card, gateway, plan, run, use_fake

D = Decimal


@pytest.fixture
def fake(env: Any) -> Iterator[FakeProvisioner]:
    f = FakeProvisioner()
    old = use_fake(env, f)
    yield f
    use_fake(env, old)


def _at(d: date, hour: int = 6) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def _settle(env: Any, fake: FakeProvisioner) -> None:
    run(env)
    fake.finish(env)
    run(env)


def _bill(env: Any, as_of: date) -> billing_run.RunSummary:
    env.clock.freeze(_at(as_of))
    renewals = env.app.runtime.port(RenewalOrders)
    return billing_run.run(env.app.engine, env.clock, as_of=as_of, renewals=renewals)


def _order(env: Any, acc: int, plan_id: int, **kw: Any) -> int:
    with service_ctx(env) as ctx:
        return placing.order_place(
            ctx, account_id=acc, lines=[OrderLineInput(plan_id=plan_id)], **kw
        ).id


def _sub_of(env: Any, order_id: int) -> int:
    with service_ctx(env) as ctx:
        sid = queries.order_get(ctx, order_id=order_id).subscription_id
    assert sid is not None
    return sid


def _periods_billed(env: Any, acc: int) -> list[str]:
    """The service period of every invoice line that has one (not voided)."""
    out = []
    for inv, lines in invoices(env, acc):
        if inv.status == "void":
            continue
        for ln in lines:
            if ln.period_start is not None and ln.total > 0:
                out.append(f"{ln.period_start} to {ln.period_end}")
    return sorted(out)


def test_the_run_never_bills_a_trial_the_lifecycle_converts_it(env, fake, tmp_path):
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Trial", recurring="20.00", trial=PlanTrial(14, "day"))
    acc = buyer(env, "Acme")
    card(env, acc, gateway(env, tmp_path))
    o = _order(env, acc, p["plan"])
    _settle(env, fake)
    sid = _sub_of(env, o)
    s = sub(env, sid)
    assert s.status == "trial" and s.trial_ends_on == date(2026, 3, 15)
    n = len(invoices(env, acc))
    for day in (date(2026, 3, 15), date(2026, 4, 1)):  # at and after the trial's end
        summary = _bill(env, day)
        assert summary.invoices == 0 and summary.periods == 0
    assert len(invoices(env, acc)) == n
    # the lifecycle job converts it with its own order (invoice + charge)
    env.clock.freeze(_at(date(2026, 3, 15), 7))
    with UnitOfWork(env.app.engine) as uow:
        lifecycle(uow, env.clock, env.app.runtime)
        uow.commit()
    _settle(env, fake)
    assert sub(env, sid).status == "active"
    converted = len(invoices(env, acc)) - n
    assert converted == 1
    # the run bills the period after the converted one, once
    nbd = sub(env, sid).next_billing_date
    assert nbd is not None and nbd > date(2026, 3, 15)
    assert _bill(env, nbd).periods == 1
    assert _bill(env, nbd).periods == 0
    assert_books_sound(env)


def test_a_completed_renewal_order_moves_the_date_the_run_bills(env, fake):
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Hosting", recurring="20.00")
    acc = buyer(env, "Acme", credit_limit="500")
    o = _order(env, acc, p["plan"], on_account=True)
    _settle(env, fake)
    sid = _sub_of(env, o)
    env.clock.freeze(_at(date(2026, 3, 20), 9))
    with service_ctx(env) as ctx:
        subs.subscription_renew(ctx, subscription_id=sid, on_account=True)
    _settle(env, fake)
    s = sub(env, sid)
    assert (s.period_start, s.period_end, s.next_billing_date) == (
        date(2026, 4, 1),
        date(2026, 5, 1),
        date(2026, 5, 1),
    )
    assert _bill(env, date(2026, 4, 1)).periods == 0  # April is the renewal order's
    assert _bill(env, date(2026, 5, 1)).periods == 1  # May is the run's
    assert _periods_billed(env, acc) == [
        "2026-03-01 to 2026-04-01",
        "2026-04-01 to 2026-05-01",
        "2026-05-01 to 2026-06-01",
    ]
    assert_books_sound(env)


def test_a_renewal_order_still_running_at_the_run_keeps_its_period(env, fake):
    """The renewal order is placed for April but has not finished (e.g. waiting
    for approval) when the run reaches 1 April: the period is billed once."""
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Hosting", recurring="20.00")
    acc = buyer(env, "Acme", credit_limit="500")
    o = _order(env, acc, p["plan"], on_account=True)
    _settle(env, fake)
    sid = _sub_of(env, o)
    env.clock.freeze(_at(date(2026, 3, 31), 9))
    with service_ctx(env) as ctx:
        subs.subscription_renew(ctx, subscription_id=sid, on_account=True)
    _bill(env, date(2026, 4, 1))  # before the order's steps ran
    env.clock.freeze(_at(date(2026, 4, 1), 9))
    _settle(env, fake)
    _bill(env, date(2026, 4, 1))
    assert _periods_billed(env, acc) == [
        "2026-03-01 to 2026-04-01",
        "2026-04-01 to 2026-05-01",
    ]
    with service_ctx(env) as ctx:
        from pba_server.billing.balances import account_balance_get

        bal = account_balance_get(ctx, account_id=acc)
    assert D(bal.balance) == D("40.00")  # March and April, once each
    _bill(env, date(2026, 5, 1))
    assert _periods_billed(env, acc)[-1] == "2026-05-01 to 2026-06-01"
    assert len(_periods_billed(env, acc)) == 3
    assert_books_sound(env)


def test_a_renewal_the_run_billed_first_is_credited_back(env, fake, monkeypatch):
    """The race the run's check cannot see: it read the subscription just
    before the renewal order was placed, and billed April; the order, when it
    completes, finds April renewed and gives its amount back as credit."""
    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Hosting", recurring="20.00")
    acc = buyer(env, "Acme", credit_limit="500")
    o = _order(env, acc, p["plan"], on_account=True)
    _settle(env, fake)
    sid = _sub_of(env, o)
    env.clock.freeze(_at(date(2026, 3, 31), 9))
    with service_ctx(env) as ctx:
        r = subs.subscription_renew(ctx, subscription_id=sid, on_account=True)
    monkeypatch.setattr(Renewals, "in_flight", lambda _self, _sid: false())
    assert _bill(env, date(2026, 4, 1)).periods == 1
    env.clock.freeze(_at(date(2026, 4, 1), 9))
    _settle(env, fake)
    with service_ctx(env) as ctx:
        from pba_server.billing.balances import account_balance_get

        done = queries.order_get(ctx, order_id=r.id)
        bal = account_balance_get(ctx, account_id=acc)
    assert done.status == "completed"
    assert [h.result for h in done.history if h.action == "credit"] == ["credited"]
    assert D(bal.balance) == D("40.00")  # March and April, once each
    s = sub(env, sid)
    assert (s.period_start, s.next_billing_date) == (date(2026, 4, 1), date(2026, 5, 1))
    assert_books_sound(env)


def test_a_scheduled_migration_applies_at_the_runs_renewal(env, fake):
    """PlanMigrateSubscribers: subscribers on version 1 keep paying it until
    their renewal; the run renews them at the new version (its fee and its
    rates, units bought kept), and the overage of the period that ended is
    billed at the old rates."""
    from pba_server.catalog.plan_migrations import plan_migrate_subscribers
    from pba_server.catalog.plans import plan_update
    from pba_server.catalog.types import PlanPeriod, ResourceRate
    from pba_server.core.db import UnitOfWork
    from pba_server.subscriptions.models import SubscriptionResource
    from pba_server.usage import service as usage

    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Hosting", recurring="20.00", resource=True)  # 10 included, overage 0.10
    acc = buyer(env, "Acme", credit_limit="500")
    other = buyer(env, "Other", credit_limit="500")  # on version 1, not migrated below
    o = _order(env, acc, p["plan"], on_account=True)
    _order(env, other, p["plan"], on_account=True)
    _settle(env, fake)
    sid = _sub_of(env, o)
    with service_ctx(env) as ctx:
        # version 2: 25.00 a month, 50 GB included, overage 0.20
        plan_update(
            ctx,
            plan_id=p["plan"],
            periods=[PlanPeriod(1, "month", D(0), D("25.00"))],
            rates=[ResourceRate(p["resource"], D(50), D(100), D("1.00"), D("0.50"), D("0.20"))],
        )
    assert _bill(env, date(2026, 4, 1)).periods == 2  # no migration asked yet
    v1 = sub(env, sid).plan_version_id
    env.clock.freeze(_at(date(2026, 4, 15), 9))
    with service_ctx(env) as ctx:
        plan_migrate_subscribers(ctx, plan_id=p["plan"], from_version=1)
        usage.usage_report(  # April: 30 GB, 20 over version 1's 10 included
            ctx,
            subscription_id=sid,
            resource_id=p["resource"],
            quantity=D(30),
            timestamp=_at(date(2026, 4, 10)),
            record_id="u1",
        )
    april = [ln for inv, lines in invoices(env, acc) for ln in lines if inv.status != "void"]
    assert sorted(ln.total for ln in april if ln.period_start == date(2026, 4, 1)) == [
        D("20.00")
    ]  # April at version 1: the migration applies at the next renewal
    summary = _bill(env, date(2026, 5, 1))
    assert summary.periods == 2
    s = sub(env, sid)
    assert s.plan_version_id != v1
    may = [ln for _inv, lines in invoices(env, acc) for ln in lines]
    may = [ln for ln in may if ln.period_start == date(2026, 5, 1)]
    assert [ln.total for ln in may] == [D("25.00")], [(ln.description, ln.total) for ln in may]
    over = [
        ln
        for _inv, lines in invoices(env, acc)
        for ln in lines
        if ln.period_start == date(2026, 4, 1) and ln.link_type == "usage"
    ]
    assert [ln.total for ln in over] == [D("2.00")]  # 20 GB x 0.10: April's own rates
    with UnitOfWork(env.app.engine) as uow:
        r = uow.session.get(SubscriptionResource, (sid, p["resource"]))
        assert r is not None
        assert (r.included, r.overage_price) == (D(50), D("0.20"))
    # the other subscriber was migrated too (every subscriber of version 1)
    [(_i, other_lines)] = [
        (i, ls)
        for i, ls in invoices(env, other)
        if any(ln.period_start == date(2026, 5, 1) for ln in ls)
    ]
    assert [ln.total for ln in other_lines] == [D("25.00")]
    assert_books_sound(env)


def test_a_renewal_order_after_a_migration_renews_at_the_new_version(env, fake):
    from pba_server.catalog.plan_migrations import plan_migrate_subscribers
    from pba_server.catalog.plans import plan_update
    from pba_server.catalog.types import PlanPeriod, ResourceRate
    from pba_server.core.db import UnitOfWork
    from pba_server.subscriptions.models import SubscriptionResource

    env.clock.freeze(_at(date(2026, 3, 1), 9))
    p = plan(env, "Hosting", recurring="20.00", resource=True)
    acc = buyer(env, "Acme", credit_limit="500")
    o = _order(env, acc, p["plan"], on_account=True)
    _settle(env, fake)
    sid = _sub_of(env, o)
    v1 = sub(env, sid).plan_version_id
    with service_ctx(env) as ctx:
        plan_update(
            ctx,
            plan_id=p["plan"],
            periods=[PlanPeriod(1, "month", D(0), D("25.00"))],
            rates=[ResourceRate(p["resource"], D(50), D(100), D("1.00"), D("0.50"), D("0.20"))],
        )
        plan_migrate_subscribers(ctx, plan_id=p["plan"], from_version=1)
        r = subs.subscription_renew(ctx, subscription_id=sid, on_account=True)
    assert D(r.total) == D("25.00")
    _settle(env, fake)
    s = sub(env, sid)
    assert s.plan_version_id != v1 and s.next_billing_date == date(2026, 5, 1)
    with UnitOfWork(env.app.engine) as uow:
        res = uow.session.get(SubscriptionResource, (sid, p["resource"]))
        assert res is not None and (res.included, res.overage_price) == (D(50), D("0.20"))
    assert _bill(env, date(2026, 5, 1)).periods == 1
    may = [ln for _i, ls in invoices(env, acc) for ln in ls if ln.period_start == date(2026, 5, 1)]
    assert [ln.total for ln in may] == [D("25.00")]
    assert_books_sound(env)
