"""Stories 2 and 3 of PRODUCT.md through SOAP (zeep), as the people in them.

Story 2's overage line is the real billing run's (BillingRun over SOAP);
provisioning is a fake here (story 1 and story 5 run the real engine)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import zeep.exceptions

from pba_server.accounts import users
from pba_server.billing.payments import payment_record
from pba_server.catalog.resources import resource_create
from tests.billing_support import assert_books_sound
from tests.catalog_support import plain, service_ctx
from tests.orders_support import PW, FakeProvisioner, buyer, card, gateway, plan, run, use_fake

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


def staff(env: Any, login: str, roles: list[str]) -> None:
    with service_ctx(env) as ctx:
        users.user_create(
            ctx, account_id=1, login=login, password=PW, full_name=login.title(), roles=roles
        )


def fault_code(exc: pytest.ExceptionInfo[zeep.exceptions.Fault]) -> str:
    return str(exc.value.code)


def test_story_2_sales_manager_upgrades_a_customer_prorated(env, api, tmp_path, fake):
    env.clock.freeze(datetime(2026, 3, 1, 9, tzinfo=UTC))
    with service_ctx(env) as ctx:
        traffic = resource_create(
            ctx, name="Traffic", unit="GB", kind="metered", usage_reporting="per_period"
        ).id
    big = plan(env, "Traffic L", recurring="50.00", resource_id=traffic)
    small = plan(env, "Traffic S", recurring="20.00", resource_id=traffic)
    acc = buyer(env, "Acme")
    card(env, acc, gateway(env, tmp_path))
    admin = api.soap()
    o = admin.OrderPlace(account_id=acc, lines=[{"plan_id": small["plan"]}], idempotency_key="s")
    settle(env, fake)
    sub = admin.OrderGet(order_id=o.id).subscription_id
    # March's traffic: 410 GB, 400 over the 10 included (0.10 per GB)
    env.clock.freeze(datetime(2026, 3, 31, 23, tzinfo=UTC))
    admin.UsageReport(
        subscription_id=sub,
        resource_id=traffic,
        quantity=D(410),
        timestamp=datetime(2026, 3, 25, 12, tzinfo=UTC),
        record_id="march",
    )
    # the billing run invoices April in advance and March's overage
    env.clock.freeze(datetime(2026, 4, 1, 2, tzinfo=UTC))
    assert admin.BillingRun(as_of=date(2026, 4, 1)).invoices == 1
    # and the customer pays a lot more than usual
    env.clock.freeze(datetime(2026, 4, 5, 9, tzinfo=UTC))
    with service_ctx(env) as ctx:
        payment_record(
            ctx,
            account_id=acc,
            amount=D("400.00"),
            method="bank_transfer",
            reference="wire 991",
            received_on=date(2026, 4, 5),
        )
    env.clock.freeze(datetime(2026, 4, 11, 9, tzinfo=UTC))
    staff(env, "sam", ["sales"])
    sam = api.soap("sam", PW)
    bal = sam.AccountBalanceGet(account_id=acc)
    assert D(bal.balance) == D("-340.00")  # paid 400 for the run's 60: credit
    payments = plain(sam.PaymentList(account_id=acc))["items"]
    assert max(D(p["amount"]) for p in payments) == D("400.00")
    invoices = plain(sam.InvoiceList(account_id=acc))["items"]
    last = plain(sam.InvoiceGet(invoice_id=max(i["id"] for i in invoices)))
    assert last["status"] == "paid" and D(last["total"]) == D("60.00")
    over = [ln for ln in last["lines"] if "Traffic" in ln["description"]]
    assert len(over) == 1 and D(over[0]["total"]) == D("40.00"), last["lines"]
    assert "400" in over[0]["description"] and "2026-03-01" in over[0]["description"]
    # 20 of 30 April days left (11 April to 1 May): credit 20/30 of 20.00,
    # charge 20/30 of 50.00
    pv = plain(sam.ChangePreview(subscription_id=sub, plan_id=big["plan"]))
    assert (D(pv["credit"]), D(pv["charge"]), D(pv["net"])) == (
        D("-13.33"),
        D("33.33"),
        D("20.00"),
    )
    up = sam.SubscriptionChangePlan(subscription_id=sub, plan_id=big["plan"], idempotency_key="u1")
    assert (up.type, D(up.total)) == ("upgrade", D("20.00"))
    settle(env, fake)
    done = plain(sam.OrderGet(order_id=up.id))
    assert done["status"] == "completed"
    assert plain(sam.SubscriptionGet(subscription_id=sub))["plan_id"] == big["plan"]
    upgrade_invoice = plain(sam.InvoiceGet(invoice_id=done["invoice_id"]))
    assert D(upgrade_invoice["total"]) == D("20.00")
    assert upgrade_invoice["status"] == "paid"  # from the customer's prepaid credit
    assert done["charge_id"] is None
    # the next run bills May on the new plan
    env.clock.freeze(datetime(2026, 5, 1, 2, tzinfo=UTC))
    assert admin.BillingRun(as_of=date(2026, 5, 1)).invoices == 1
    may = plain(
        sam.InvoiceGet(
            invoice_id=max(i["id"] for i in plain(sam.InvoiceList(account_id=acc))["items"])
        )
    )
    assert D(may["total"]) == D("50.00") and may["status"] == "paid"  # still on credit
    assert_books_sound(env)


def test_story_3_reseller_sells_within_its_subtree_and_credit_limit(env, api, tmp_path, fake):
    p = plan(env, "Reseller plan", recurring="40.00")
    other = buyer(env, "Outsider", credit_limit="1000")
    staff(env, "chan", ["admin"])
    chan = api.soap("chan", PW)
    r = chan.AccountCreate(
        type="reseller",
        name="Resell Ltd",
        partner_level="basic",
        credit_limit=D("100"),
        idempotency_key="r",
    )
    chan.UserCreate(
        account_id=r.id,
        login="res-admin",
        password=PW,
        full_name="Res Admin",
        roles=["admin"],
        idempotency_key="ru",
    )
    res = api.soap("res-admin", PW)
    c = res.AccountCreate(type="customer_business", name="Small Shop", idempotency_key="c")
    res.AccountSetCreditLimit(account_id=c.id, credit_limit=D("50"))
    o = res.OrderPlace(
        account_id=c.id, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o1"
    )
    settle(env, fake)
    done = plain(res.OrderGet(order_id=o.id))
    assert done["status"] == "completed" and done["vendor_id"] == r.id
    assert plain(res.SubscriptionList())["total"] == 1
    invoice = plain(res.InvoiceGet(invoice_id=done["invoice_id"]))
    assert invoice["issuer_id"] == r.id  # the reseller bills its customer
    # going over the customer's credit limit is refused
    with pytest.raises(zeep.exceptions.Fault) as e:
        res.OrderPlace(
            account_id=c.id, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o2"
        )
    assert fault_code(e).endswith("CreditLimitExceeded")
    # and over the reseller's own, when it buys for itself
    res.OrderPlace(
        account_id=r.id, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="o3"
    )
    run(env)
    with pytest.raises(zeep.exceptions.Fault) as e:
        res.OrderPlace(
            account_id=r.id,
            lines=[{"plan_id": p["plan"]}, {"plan_id": p["plan"]}],
            on_account=True,
            idempotency_key="o4",
        )
    assert fault_code(e).endswith("CreditLimitExceeded")
    # nothing outside its subtree exists for it
    for op, kw in (
        ("AccountGet", {"account_id": other}),
        ("OrderList", {"account_id": other}),
        ("SubscriptionList", {"account_id": other}),
    ):
        with pytest.raises(zeep.exceptions.Fault) as e:
            getattr(res, op)(**kw)
        assert fault_code(e).endswith("NotFound"), op
    with pytest.raises(zeep.exceptions.Fault) as e:
        res.OrderPlace(
            account_id=other, lines=[{"plan_id": p["plan"]}], on_account=True, idempotency_key="x"
        )
    assert fault_code(e).endswith("NotFound")
    assert_books_sound(env)
