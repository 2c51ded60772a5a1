"""The catalog through the real SOAP and XML-RPC endpoints (each test runs on
both protocols and both databases)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.catalog_support import Caller, D

PROTOCOLS = ["soap", "xmlrpc"]


@pytest.fixture(params=PROTOCOLS)
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


def _user(call: Caller, account_id: int, login: str) -> None:
    call(
        "UserCreate",
        account_id=account_id,
        login=login,
        password="reseller-password-1",
        full_name=login,
        roles=["admin"],
    )


def _catalog(call: Caller) -> dict[str, Any]:
    """Resources, the "VPS Traffic Plus" template and plan, published."""
    res = {}
    for name, unit, kind in [
        ("Disk space", "GB", "allocated"),
        ("Traffic", "GB", "metered"),
        ("Mailboxes", "mailbox", "allocated"),
        ("mod_perl", "item", "allocated"),
        ("MySQL", "item", "allocated"),
    ]:
        r = call("ResourceCreate", name=name, unit=unit, kind=kind)
        assert r["name"] == name and r["kind"] == kind
        res[name] = r["id"]
    t = call(
        "ServiceTemplateCreate",
        name="VPS Traffic Plus",
        service_type="virtual_server",
        module="vps_manager",
        resources=[{"resource_id": rid, "default_limit": Decimal(1)} for rid in res.values()],
        order_parameters=[
            {"name": "hostname", "type": "hostname", "required": True},
            {
                "name": "os_template",
                "type": "string",
                "required": True,
                "pattern": "debian-12|ubuntu-24.04",
            },
        ],
        module_settings=[{"name": "cluster", "value": "fra-1"}],
    )
    assert [p["name"] for p in t["order_parameters"]] == ["hostname", "os_template"]
    assert t["module_settings"] == [{"name": "cluster", "value": "fra-1"}]
    plan = call(
        "PlanCreate",
        template_id=t["id"],
        name="VPS Traffic Plus",
        periods=[
            {
                "count": 1,
                "unit": "month",
                "setup_fee": Decimal("20.00"),
                "recurring_fee": Decimal("30.00"),
                "is_default": True,
            },
            {
                "count": 3,
                "unit": "month",
                "setup_fee": Decimal("20.00"),
                "recurring_fee": Decimal("85.00"),
            },
        ],
        rates=[
            {
                "resource_id": res["Traffic"],
                "included": Decimal(500),
                "maximum": Decimal(2000),
                "unit_recurring_price": Decimal("0.04"),
                "overage_price": Decimal("0.05"),
            },
            {
                "resource_id": res["Disk space"],
                "included": Decimal(50),
                "maximum": Decimal(200),
                "unit_setup_price": Decimal(1),
                "unit_recurring_price": Decimal("0.5"),
            },
            {
                "resource_id": res["mod_perl"],
                "included": Decimal(0),
                "maximum": Decimal(1),
                "unit_recurring_price": Decimal("2.00"),
                "optional": True,
            },
            {
                "resource_id": res["MySQL"],
                "included": Decimal(0),
                "maximum": Decimal(5),
                "unit_setup_price": Decimal("5.00"),
                "unit_recurring_price": Decimal("3.00"),
                "optional": True,
            },
        ],
    )
    assert plan["status"] == "draft" and plan["version"] == 1 and plan["currency"] == "USD"
    rates = {r["resource_id"]: r for r in plan["rates"]}
    assert D(rates[res["Traffic"]]["overage_price"]) == Decimal("0.05")
    # not rated: included at the template's default limit, free
    assert D(rates[res["Mailboxes"]]["included"]) == 1
    assert call("PlanPublish", plan_id=plan["id"])["status"] == "published"
    promo = call(
        "PromotionCreate",
        name="Spring: 10% off quarterly",
        code="spring10",
        percent=Decimal(10),
        on_recurring=True,
        cycles=3,
        plan_ids=[plan["id"]],
        periods=[{"count": 3, "unit": "month"}],
    )
    assert promo["code"] == "SPRING10" and promo["cycles"] == 3
    return {"res": res, "template": t, "plan": plan, "promo": promo}


def test_story_reseller_price_makes_quotes_differ(call: Caller, api: Any) -> None:
    cat = _catalog(call)
    res, plan = cat["res"], cat["plan"]
    customer = call("AccountCreate", type="customer_business", name="Direct Customer")
    reseller = call("AccountCreate", type="reseller", name="White Label", partner_level="basic")
    price = call(
        "ResellerPriceSet",
        reseller_id=reseller["id"],
        plan_id=plan["id"],
        period_count=3,
        period_unit="month",
        currency="USD",
        setup_fee=Decimal("25.00"),
        recurring_fee=Decimal("99.00"),
    )
    assert D(price["recurring_fee"]) == Decimal("99.00")
    _user(call, reseller["id"], f"wl-{call.protocol}")
    as_reseller = Caller(api, call.protocol, f"wl-{call.protocol}", "reseller-password-1")
    rcust = as_reseller("AccountCreate", type="customer_personal", name="Reseller Customer")

    order = {
        "plan_id": plan["id"],
        "period_count": 3,
        "period_unit": "month",
        "options": [res["mod_perl"], res["MySQL"]],
        "resources": [{"resource_id": res["Disk space"], "quantity": Decimal(10)}],
        "promotion_code": "Spring10",
    }
    q1 = call("PriceQuote", account_id=customer["id"], **order)
    assert q1["price_source"] == "plan" and q1["promotion_id"] == cat["promo"]["id"]
    lines = [(ln["kind"], D(ln["amount"])) for ln in q1["lines"]]
    assert lines == [
        ("setup", Decimal("20.00")),
        ("recurring", Decimal("85.00")),
        ("resource_setup", Decimal("10.00")),  # disk: 10 GB extra x 1.00
        ("resource_recurring", Decimal("15.00")),  # 10 x 0.50 x 3 months
        ("resource_recurring", Decimal("6.00")),  # mod_perl 2.00 x 3 months
        ("resource_setup", Decimal("5.00")),  # MySQL
        ("resource_recurring", Decimal("9.00")),
        ("discount", Decimal("-11.50")),  # 10% of the recurring 115.00
    ]
    assert D(q1["subtotal"]) == Decimal("150.00")
    assert D(q1["total"]) == Decimal("138.50") == sum(amount for _k, amount in lines)
    assert q1["discount_cycles"] == 3

    # the reseller quotes for its own customer: its price list applies
    q2 = as_reseller("PriceQuote", account_id=rcust["id"], **order)
    assert q2["price_source"] == "reseller_price"
    assert D(q2["subtotal"]) == Decimal("169.00")
    assert D(q2["discount"]) == Decimal("-12.90")
    assert D(q2["total"]) == Decimal("156.10")

    # PlanList as each account sees it: the reseller's customer sees its prices
    seen = as_reseller("PlanList", account_id=rcust["id"])
    assert seen["total"] == 1
    quarterly = [p for p in seen["items"][0]["periods"] if p["count"] == 3][0]
    assert D(quarterly["recurring_fee"]) == Decimal("99.00")
    assert seen["items"][0]["price_source"] == "reseller_price"
    direct = call("PlanList", account_id=customer["id"])["items"][0]
    assert [D(p["recurring_fee"]) for p in direct["periods"]] == [Decimal(30), Decimal(85)]

    # the reseller owns no plans and cannot make one; it cannot see the customer
    code, _ = as_reseller.fault(
        "PlanCreate",
        template_id=cat["template"]["id"],
        name="Mine",
        periods=[{"count": 1, "unit": "month", "setup_fee": "0", "recurring_fee": "1"}],
    )
    assert code == "Client.Forbidden"
    code, _ = as_reseller.fault("PriceQuote", account_id=customer["id"], plan_id=plan["id"])
    assert code == "Client.NotFound"
    code, _ = as_reseller.fault(
        "ResellerPriceSet",
        reseller_id=reseller["id"],
        plan_id=plan["id"],
        period_count=1,
        period_unit="month",
        currency="USD",
        setup_fee="0",
        recurring_fee="1",
    )
    assert code == "Client.Forbidden"
    assert [p["plan_id"] for p in as_reseller("ResellerPriceList", reseller_id=reseller["id"])] == [
        plan["id"]
    ]
