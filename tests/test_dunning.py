"""Dunning at the service layer (SQLite and PostgreSQL), with provisioning's
request_action and the auto-pay retry replaced by recorders (they live on
other branches; the lead wires them).

Story 7 of PRODUCT.md at the service layer: an invoice stays unpaid, the
customer is reminded, its services are suspended, it pays everything overdue
and the services resume by themselves."""

from __future__ import annotations

import json
import sys
import types
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.billing.payments import payment_record
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import ValidationError
from pba_server.dunning import service as dunning
from pba_server.events.models import Event
from tests.billing_support import assert_books_sound, customer
from tests.billrun_support import at, invoices, make_plan, run, sub, subscribe
from tests.catalog_support import service_ctx

D = Decimal


@pytest.fixture
def actions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    calls: list[tuple[int, str]] = []
    api = types.ModuleType("pba_server.provisioning.api")

    def request_action(ctx: Any, subscription_id: int, action: str, **kw: Any) -> int:
        calls.append((subscription_id, action))
        return 1

    api.request_action = request_action  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pba_server.provisioning.api", api)
    return calls


@pytest.fixture
def autopay(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    mod = types.ModuleType("pba_server.payments.autopay")

    def autopay_invoice(
        engine: Any, clock: Any, invoice_id: int, *, attempt: int = 1, runtime: Any = None
    ) -> str:
        calls.append((invoice_id, attempt))
        return "declined"

    mod.autopay_invoice = autopay_invoice  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pba_server.payments.autopay", mod)
    return calls


def _unpaid_invoice(env: Any) -> tuple[int, int, int]:
    """A customer with two subscriptions and an unpaid renewal invoice due 1 Feb 2026."""
    cat = make_plan(env)
    with service_ctx(env) as ctx:
        prov = ctx.principal.account_id
    c = customer(env, "C", country=None)
    s1 = subscribe(env, cat, c, prov, date(2026, 1, 1))
    subscribe(env, cat, c, prov, date(2026, 1, 1))
    run(env, date(2026, 2, 1))
    [(inv, _lines)] = invoices(env)
    assert inv.due_date == date(2026, 2, 1)
    return c, s1, inv.id


def _dun(env: Any, day: date) -> str:
    env.clock.freeze(at(day))
    return dunning.run_dunning(env.app.engine, env.clock, env.app.runtime)


def _events(env: Any, type_: str) -> list[dict[str, Any]]:
    with UnitOfWork(env.app.engine) as uow:
        return [
            json.loads(e.payload)
            for e in uow.session.scalars(
                select(Event).where(Event.type == type_).order_by(Event.id)
            )
        ]


def test_story_7_remind_suspend_pay_resume(
    env: Any, actions: list[tuple[int, str]], autopay: list[tuple[int, int]]
) -> None:
    c, s1, inv_id = _unpaid_invoice(env)
    assert "0 reminder" in _dun(env, date(2026, 2, 1))  # due today: not overdue yet
    assert "1 reminder(s)" in _dun(env, date(2026, 2, 2))
    assert "0 reminder(s)" in _dun(env, date(2026, 2, 2))  # once per invoice and step
    [ev] = _events(env, "invoice.overdue")
    assert ev["invoice_id"] == inv_id and ev["days_overdue"] == 1
    assert autopay == [(inv_id, 2)]
    assert "1 second reminder(s)" in _dun(env, date(2026, 2, 8))
    assert autopay == [(inv_id, 2), (inv_id, 3)]
    assert "1 suspension(s)" in _dun(env, date(2026, 2, 15))
    assert sub(env, s1).status == "suspended" and sub(env, s1).suspended_reason == "dunning"
    assert sorted(a for _s, a in actions) == ["suspend", "suspend"]
    _dun(env, date(2026, 2, 16))
    assert len(actions) == 2  # not suspended twice
    # the customer pays everything overdue: services resume at once
    with service_ctx(env) as ctx:
        payment_record(
            ctx,
            account_id=c,
            amount=D("20.00"),
            method="bank_transfer",
            reference="late",
            received_on=date(2026, 2, 16),
        )
    assert sub(env, s1).status == "active" and sub(env, s1).suspended_reason is None
    assert [a for _s, a in actions][-2:] == ["resume", "resume"]
    assert len(_events(env, "subscription.resumed")) == 2
    # and nothing more happens to the paid invoice
    assert "0 termination(s)" in _dun(env, date(2026, 3, 20))
    assert_books_sound(env)


def test_partial_payment_does_not_resume_and_terminate_cancels(
    env: Any, actions: list[tuple[int, str]]
) -> None:
    c, s1, _inv = _unpaid_invoice(env)
    _dun(env, date(2026, 2, 15))  # reminder, second reminder and suspension at once
    assert sub(env, s1).status == "suspended"
    with service_ctx(env) as ctx:
        payment_record(
            ctx,
            account_id=c,
            amount=D("5.00"),
            method="bank_transfer",
            reference="part",
            received_on=date(2026, 2, 15),
        )
    assert sub(env, s1).status == "suspended"
    assert "1 termination(s)" in _dun(env, date(2026, 3, 18))
    row = sub(env, s1)
    assert row.status == "cancelled" and row.next_billing_date is None
    assert row.cancel_reason and "dunning" in row.cancel_reason
    assert [a for _s, a in actions].count("delete") == 2


def test_schedule_set_get_and_steps_off(env: Any, actions: list[tuple[int, str]]) -> None:
    with service_ctx(env) as ctx:
        info = dunning.dunning_schedule_get(ctx)
        assert info.is_default and (info.reminder_days, info.suspend_days) == (1, 14)
        with pytest.raises(ValidationError) as e:
            dunning.dunning_schedule_set(ctx, reminder_days=10, suspend_days=5)
        assert e.value.field == "suspend_days"
        with pytest.raises(ValidationError) as e:
            dunning.dunning_schedule_set(ctx, reminder_days=-1)
        assert e.value.field == "reminder_days"
        info = dunning.dunning_schedule_set(ctx, reminder_days=3)
        assert not info.is_default and info.suspend_days is None
        assert dunning.dunning_schedule_get(ctx).reminder_days == 3
    _c, s1, _inv = _unpaid_invoice(env)
    assert "0 reminder(s)" in _dun(env, date(2026, 2, 3))
    assert "1 reminder(s)" in _dun(env, date(2026, 2, 4))
    _dun(env, date(2026, 4, 1))
    assert sub(env, s1).status == "active" and actions == []


def test_credit_hold_after_days_over_the_limit(env: Any) -> None:
    cat = make_plan(env)
    with service_ctx(env) as ctx:
        prov = ctx.principal.account_id
        dunning.dunning_schedule_set(ctx, credit_hold_days=3)
    c = customer(env, "C", country=None, credit_limit="5")
    subscribe(env, cat, c, prov, date(2026, 1, 1))
    run(env, date(2026, 2, 1))  # owes 10 > 5
    with UnitOfWork(env.app.engine) as uow:
        assert not dunning.on_credit_hold(uow.session, c)
    _dun(env, date(2026, 2, 1))
    assert "0 account(s) on credit hold" in _dun(env, date(2026, 2, 3))
    assert "1 account(s) on credit hold" in _dun(env, date(2026, 2, 4))
    with UnitOfWork(env.app.engine) as uow:
        assert dunning.on_credit_hold(uow.session, c)
    with service_ctx(env) as ctx:
        payment_record(
            ctx,
            account_id=c,
            amount=D("10.00"),
            method="bank_transfer",
            reference="pay",
            received_on=date(2026, 2, 4),
        )
    with UnitOfWork(env.app.engine) as uow:
        assert not dunning.on_credit_hold(uow.session, c)  # paid: lifted at once
    _dun(env, date(2026, 2, 5))
    with UnitOfWork(env.app.engine) as uow:
        assert not dunning.on_credit_hold(uow.session, c)


def test_jobs_are_registered() -> None:
    from pba_server.bootstrap import feature_jobs
    from pba_server.config import Settings

    jobs = feature_jobs(Settings())
    assert jobs["billing-run"].interval == timedelta(days=1)
    assert jobs["dunning"].interval == timedelta(hours=1)


def test_run_with_prepaid_credit_resumes_a_dunning_suspension(
    env: Any, actions: list[tuple[int, str]]
) -> None:
    """The billing run settles its invoices from prepaid credit through the
    billing core's path, settlement hook (and its events) included."""
    from pba_server.billing import run as billing_run

    c, s1, inv_id = _unpaid_invoice(env)
    _dun(env, date(2026, 2, 15))
    assert sub(env, s1).status == "suspended"
    with service_ctx(env) as ctx:  # credit, not allocated
        payment_record(
            ctx,
            account_id=c,
            amount=D("100.00"),
            method="bank_transfer",
            reference="credit",
            received_on=date(2026, 2, 15),
            allocate=False,
        )
    assert sub(env, s1).status == "suspended"
    draft = billing_run.DraftInvoice(1, c, "USD", total=D("20.00"), invoice_id=inv_id)
    with UnitOfWork(env.app.engine) as uow:
        billing_run.apply_prepaid_credit(uow.session, env.clock, [draft])
        uow.commit()
    assert sub(env, s1).status == "active"
    assert len(_events(env, "subscription.resumed")) == 2
    assert_books_sound(env)
