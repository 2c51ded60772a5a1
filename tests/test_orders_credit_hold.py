"""Credit hold (dunning) at OrderPlace, through SOAP: an account over its
credit limit for its seller's credit_hold_days places no new orders (fault
Client.CreditLimitExceeded) until it pays; paying and cancelling stay open."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import zeep.exceptions

from pba_server.dunning import service as dunning
from tests.catalog_support import plain
from tests.orders_support import PW, FakeProvisioner, buyer, card, gateway, plan, run, use_fake

D = Decimal


@pytest.fixture
def fake(env: Any) -> Iterator[FakeProvisioner]:
    f = FakeProvisioner()
    old = use_fake(env, f)
    yield f
    use_fake(env, old)


def _dun(env: Any, day: int) -> str:
    env.clock.freeze(datetime(2026, 3, day, 3, tzinfo=UTC))
    return dunning.run_dunning(env.app.engine, env.clock, env.app.runtime)


def test_an_account_on_credit_hold_places_no_new_orders_until_it_pays(env, api, fake, tmp_path):
    env.clock.freeze(datetime(2026, 3, 1, 9, tzinfo=UTC))
    p = plan(env, "Hosting", recurring="30.00")
    mini = plan(env, "Mini", recurring="5.00")
    acc = buyer(env, "Acme", credit_limit="100")
    admin = api.soap()
    me = api.soap("acme-admin", PW)
    o = me.OrderPlace(
        account_id=acc, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o1"
    )
    run(env)
    fake.finish(env)
    run(env)
    order = plain(me.OrderGet(order_id=o.id))
    assert order["status"] == "completed"
    # the provider lowers the limit below what the customer owes (30.00)
    admin.AccountSetCreditLimit(account_id=acc, credit_limit=D("10"))
    assert "0 account(s) on credit hold" in _dun(env, 2)  # over since today
    assert "0 account(s) on credit hold" in _dun(env, 8)  # 6 days over: not yet
    assert "1 account(s) on credit hold" in _dun(env, 9)  # 7 days (the default)
    with pytest.raises(zeep.exceptions.Fault) as e:
        me.OrderPlace(
            account_id=acc, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o3"
        )
    assert str(e.value.code).endswith("CreditLimitExceeded")
    assert f"account {acc} is on credit hold" in e.value.message
    with pytest.raises(zeep.exceptions.Fault) as e:  # a manual renewal is an order too
        me.SubscriptionRenew(subscription_id=order["subscription_id"], idempotency_key="r1")
    assert str(e.value.code).endswith("CreditLimitExceeded")
    assert plain(me.OrderList(account_id=acc))["total"] == 1  # nothing was written
    card(env, acc, gateway(env, tmp_path))
    with pytest.raises(zeep.exceptions.Fault) as e:  # paid by card too
        me.OrderPlace(account_id=acc, lines=[{"plan_id": mini["plan"]}], idempotency_key="o4")
    assert "credit hold" in e.value.message
    # a payment lifts the hold at once
    admin.PaymentRecord(
        account_id=acc,
        amount=D("30.00"),
        method="bank_transfer",
        reference="settled",
        received_on=datetime(2026, 3, 9, tzinfo=UTC).date(),
        idempotency_key="pay",
    )
    o5 = me.OrderPlace(
        account_id=acc, lines=[{"plan_id": mini["plan"]}], on_account=True, idempotency_key="o5"
    )
    assert o5.status == "running"
    assert "0 account(s) on credit hold" in _dun(env, 10)
