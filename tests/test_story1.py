"""Story 1 of PRODUCT.md through SOAP (zeep), with the real engines.

Provider staff create a plan with a setup and a monthly fee, included
traffic and an overage rate; a customer orders it by card (sandbox_card;
the server made by the ``script`` module, a real executable); traffic above
the included amount is reported; the billing run at the next billing date
invoices the next month in advance and the overage of the month just ended;
the customer pays it by card; the statement shows both invoices, the overage
line and both payments, and the balance is zero.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from tests.billing_support import assert_books_sound
from tests.catalog_support import plain, service_ctx
from tests.orders_support import PW, buyer, card, gateway
from tests.prov_support import instance
from tests.story_support import actions, drive, script

D = Decimal


def test_story_1_plan_order_usage_billing_run_payment_statement(env, api, tmp_path):
    env.clock.freeze(datetime(2026, 3, 1, 9, tzinfo=UTC))
    exe, log = script(tmp_path)
    instance(env, "in-house", plugin="script", settings={"executable": exe, "timeout": "20"})
    gw = gateway(env, tmp_path)
    with service_ctx(env) as ctx:
        from pba_server.accounts import users

        users.user_create(
            ctx, account_id=1, login="pat", password=PW, full_name="Pat", roles=["admin"]
        )
    # a provider staff member builds the plan
    staff = api.soap("pat", PW)
    traffic = staff.ResourceCreate(
        name="Traffic", unit="GB", kind="metered", usage_reporting="per_period"
    )
    tpl = staff.ServiceTemplateCreate(
        name="Web hosting",
        service_type="hosting",
        module="script",
        resources=[{"resource_id": traffic.id, "default_limit": D(100)}],
    )
    p = staff.PlanCreate(
        template_id=tpl.id,
        name="Web S",
        periods=[
            {
                "count": 1,
                "unit": "month",
                "setup_fee": D("10.00"),
                "recurring_fee": D("20.00"),
                "is_default": True,
            }
        ],
        rates=[
            {"resource_id": traffic.id, "included": D(100), "overage_price": D("0.50")},
        ],
    )
    assert staff.PlanPublish(plan_id=p.id).status == "published"
    # a customer with a card orders it
    acc = buyer(env, "Acme")
    pm = card(env, acc, gw)
    me = api.soap("acme-admin", PW)
    o = me.OrderPlace(account_id=acc, lines=[{"plan_id": p.id}], idempotency_key="o1")
    drive(env)
    order = plain(me.OrderGet(order_id=o.id))
    assert order["status"] == "completed", order
    first = plain(me.InvoiceGet(invoice_id=order["invoice_id"]))
    assert (first["status"], D(first["total"])) == ("paid", D("30.00"))  # setup + March
    sub = plain(me.SubscriptionGet(subscription_id=order["subscription_id"]))
    assert sub["status"] == "active" and sub["next_billing_date"] == date(2026, 4, 1)
    assert actions(log) == ["create"]
    # 150 GB of traffic in March: 50 GB over the 100 included
    env.clock.freeze(datetime(2026, 3, 20, 12, tzinfo=UTC))
    for i, qty in enumerate(("90", "60")):
        r = staff.UsageReport(
            subscription_id=sub["id"],
            resource_id=traffic.id,
            quantity=D(qty),
            timestamp=datetime(2026, 3, 10 + i, 12, tzinfo=UTC),
            record_id=f"meter-{i}",
        )
        assert r.accepted == 1
    # the billing run on the next billing date
    env.clock.freeze(datetime(2026, 4, 1, 2, tzinfo=UTC))
    run = plain(staff.BillingRun(as_of=date(2026, 4, 1)))
    assert run["invoices"] == 1, run
    invoices = plain(me.InvoiceList(account_id=acc))["items"]
    assert len(invoices) == 2
    second = plain(me.InvoiceGet(invoice_id=max(i["id"] for i in invoices)))
    assert second["status"] == "issued" and D(second["total"]) == D("45.00")
    descs = [ln["description"] for ln in second["lines"]]
    assert any("2026-04-01 to 2026-05-01" in d for d in descs), descs  # April in advance
    over = [ln for ln in second["lines"] if "Traffic" in ln["description"]]
    assert len(over) == 1 and D(over[0]["total"]) == D("25.00"), over  # 50 GB x 0.50
    assert "2026-03-01" in over[0]["description"]  # March's overage, in arrears
    # a second run on the same day bills nothing more
    assert plain(staff.BillingRun(as_of=date(2026, 4, 1)))["invoices"] == 0
    # the customer pays it itself with its stored card
    env.clock.freeze(datetime(2026, 4, 2, 10, tzinfo=UTC))
    ch = plain(
        me.PaymentCharge(payment_method_id=pm, invoice_id=second["id"], idempotency_key="p2")
    )
    assert ch["status"] == "captured" and D(ch["amount"]) == D("45.00")
    assert plain(me.InvoiceGet(invoice_id=second["id"]))["status"] == "paid"
    # the statement shows it all
    st = plain(
        me.StatementGet(account_id=acc, date_from=date(2026, 3, 1), date_to=date(2026, 4, 30))
    )
    kinds = [(ln["kind"], D(ln["amount"])) for ln in st["lines"]]
    assert kinds == [
        ("invoice", D("30.00")),
        ("payment", D("-30.00")),
        ("invoice", D("45.00")),
        ("payment", D("-45.00")),
    ], kinds
    assert [ln["document_number"] for ln in st["lines"] if ln["kind"] == "invoice"] == [
        first["number"],
        second["number"],
    ]
    assert D(st["opening_balance"]) == 0 and D(st["closing_balance"]) == 0
    assert D(plain(me.AccountBalanceGet(account_id=acc))["balance"]) == 0
    assert_books_sound(env)
