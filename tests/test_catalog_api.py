"""The catalog through the real SOAP and XML-RPC endpoints (each test runs on
both protocols and both databases)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.catalog_support import Caller, D
from tests.support import page_items

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
    quarterly = next(p for p in seen["items"][0]["periods"] if p["count"] == 3)
    assert D(quarterly["recurring_fee"]) == Decimal("99.00")
    assert seen["items"][0]["price_source"] == "reseller_price"
    got = as_reseller("PlanGet", plan_id=plan["id"])
    assert got["price_source"] == "reseller_price"
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
    assert [
        p["plan_id"]
        for p in page_items(as_reseller("ResellerPriceList", reseller_id=reseller["id"]))
    ] == [plan["id"]]


def test_currencies(call: Caller) -> None:
    currencies = {c["code"]: c["minor_units"] for c in page_items(call("CurrencyList"))}
    assert currencies["USD"] == 2 and currencies["JPY"] == 0 and currencies["BHD"] == 3


def test_resources_and_templates(call: Caller) -> None:
    disk = call("ResourceCreate", name="Disk", unit="GB", kind="allocated")
    traffic = call(
        "ResourceCreate", name="Traffic", unit="GB", kind="metered", usage_reporting="per_period"
    )
    assert call("ResourceList")["total"] == 2
    up = call("ResourceUpdate", resource_id=disk["id"], name="Disk space", description="SSD")
    assert up["name"] == "Disk space" and up["description"] == "SSD" and up["kind"] == "allocated"
    code, msg = call.fault("ResourceCreate", name="Traffic", unit="GB", kind="metered")
    assert code == "Client.Validation" and msg.startswith("name:")

    t = call(
        "ServiceTemplateCreate",
        name="Hosting",
        service_type="hosting",
        module="plesk",
        resources=[{"resource_id": disk["id"], "default_limit": "10"}],
    )
    assert call("ServiceTemplateGet", template_id=t["id"])["name"] == "Hosting"
    assert [x["id"] for x in call("ServiceTemplateList")["items"]] == [t["id"]]
    t2 = call(
        "ServiceTemplateUpdate",
        template_id=t["id"],
        resources=[
            {"resource_id": disk["id"], "default_limit": "20"},
            {"resource_id": traffic["id"], "default_limit": "100"},
        ],
        order_parameters=[{"name": "domain", "type": "domain"}],
        shared_with_resellers=True,
    )
    assert [D(r["default_limit"]) for r in t2["resources"]] == [20, 100]
    assert t2["shared_with_resellers"] is True
    assert t2["order_parameters"][0]["required"] is True
    code, msg = call.fault(
        "ServiceTemplateUpdate",
        template_id=t["id"],
        order_parameters=[{"name": "os", "type": "string", "pattern": "([a-z"}],
    )
    assert code == "Client.Validation" and msg.startswith("order_parameters[0].pattern:")
    code, _ = call.fault("ServiceTemplateGet", template_id=t["id"] + 1000)
    assert code == "Client.NotFound"


def _plan(call: Caller, name: str = "Basic") -> tuple[dict[str, Any], dict[str, Any]]:
    r = call("ResourceCreate", name=f"Disk {name}", unit="GB", kind="allocated")
    t = call(
        "ServiceTemplateCreate",
        name=f"T {name}",
        service_type="hosting",
        module="plesk",
        resources=[{"resource_id": r["id"], "default_limit": "10"}],
    )
    p = call(
        "PlanCreate",
        template_id=t["id"],
        name=name,
        periods=[{"count": 1, "unit": "month", "setup_fee": "5.00", "recurring_fee": "10.00"}],
        rates=[{"resource_id": r["id"], "included": "10", "maximum": "50", "overage_price": "1"}],
        trial={"length": 14, "unit": "day", "requires_card": True},
    )
    return t, p


def test_plan_lifecycle_and_versions(call: Caller) -> None:
    _t, p = _plan(call)
    assert p["trial"] == {"length": 14, "unit": "day", "requires_card": True}
    assert p["periods"][0]["is_default"] is True
    # a draft changes in place
    d = call(
        "PlanUpdate",
        plan_id=p["id"],
        periods=[{"count": 1, "unit": "month", "setup_fee": "5.00", "recurring_fee": "11.00"}],
    )
    assert d["version"] == 1 and D(d["periods"][0]["recurring_fee"]) == Decimal("11.00")
    call("PlanPublish", plan_id=p["id"])
    # once published, a price change is a new version; the old one stays as sold
    v2 = call(
        "PlanUpdate",
        plan_id=p["id"],
        periods=[
            {"count": 1, "unit": "month", "setup_fee": "5.00", "recurring_fee": "12.00"},
            {"count": 1, "unit": "year", "setup_fee": "0", "recurring_fee": "120.00"},
        ],
        remove_trial=True,
    )
    assert v2["version"] == 2 and v2["trial"] is None and len(v2["periods"]) == 2
    v1 = call("PlanGet", plan_id=p["id"], version=1)
    assert v1["version"] == 1 and D(v1["periods"][0]["recurring_fee"]) == Decimal("11.00")
    assert v1["trial"]["length"] == 14
    # renaming is not a price change
    assert call("PlanUpdate", plan_id=p["id"], name="Basic 2")["version"] == 2
    _t2, other = _plan(call, "Premium")
    up = call("PlanUpdate", plan_id=p["id"], upgrade_to=[other["id"]], change_timing="period_end")
    assert up["upgrade_to"] == [other["id"]] and up["change_timing"] == "period_end"
    assert up["version"] == 3  # change timing is a term of the version

    # subscribers of version 1 move to the current version at their next renewal
    m = call("PlanMigrateSubscribers", plan_id=p["id"], from_version=1)
    assert (m["from_version"], m["to_version"]) == (1, 3)
    assert [x["from_version"] for x in page_items(call("PlanMigrationList", plan_id=p["id"]))] == [
        1
    ]
    code, msg = call.fault("PlanMigrateSubscribers", plan_id=p["id"], from_version=4)
    assert code == "Client.Validation" and msg.startswith("from_version:")

    assert call("PlanList", status="published")["total"] == 1
    assert call("PlanUnpublish", plan_id=p["id"])["status"] == "unpublished"
    code, _ = call.fault("PlanDelete", plan_id=p["id"])
    assert code == "Client.InvalidState"
    assert call("PlanArchive", plan_id=p["id"])["status"] == "archived"
    code, _ = call.fault("PlanPublish", plan_id=p["id"])
    assert code == "Client.InvalidState"
    code, _ = call.fault("PlanUpdate", plan_id=p["id"], description="x")
    assert code == "Client.InvalidState"
    # a draft another plan may change to stays; a never-published one can go
    code, _ = call.fault("PlanDelete", plan_id=other["id"])
    assert code == "Client.InvalidState"
    _t3, spare = _plan(call, "Spare")
    assert call("PlanDelete", plan_id=spare["id"]) is True
    code, _ = call.fault("PlanGet", plan_id=spare["id"])
    assert code == "Client.NotFound"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"periods": [{"count": 1, "unit": "month", "setup_fee": "-1", "recurring_fee": "1"}]},
            "periods[0].setup_fee",
        ),
        (
            {"periods": [{"count": 0, "unit": "month", "setup_fee": "0", "recurring_fee": "1"}]},
            "periods[0].count",
        ),
        (
            {"periods": [{"count": 1, "unit": "week", "setup_fee": "0", "recurring_fee": "1"}]},
            "periods[0].unit",
        ),
        (
            {
                "periods": [
                    {"count": 1, "unit": "month", "setup_fee": "0.001", "recurring_fee": "1"}
                ]
            },
            "periods[0].setup_fee",
        ),
        ({"rates": [{"resource_id": 999999, "included": "1"}]}, "rates[0].resource_id"),
        ({"name": "Premium"}, "name"),
    ],
)
def test_plan_validation_names_the_field(call: Caller, change: dict[str, Any], field: str) -> None:
    _t, p = _plan(call)
    _plan(call, "Premium")
    code, msg = call.fault("PlanUpdate", plan_id=p["id"], **change)
    assert code == "Client.Validation"
    assert msg.startswith(f"{field}:"), msg


def test_rate_included_above_maximum(call: Caller) -> None:
    t, p = _plan(call)
    rid = t["resources"][0]["resource_id"]
    code, msg = call.fault(
        "PlanUpdate",
        plan_id=p["id"],
        rates=[{"resource_id": rid, "included": "60", "maximum": "50"}],
    )
    assert code == "Client.Validation" and msg.startswith("rates[0].included:")


def test_promotions(call: Caller) -> None:
    _t, p = _plan(call)
    code, msg = call.fault("PromotionCreate", name="Both", code="X", percent="10", amount="5.00")
    assert code == "Client.Validation" and msg.startswith("amount:")
    code, msg = call.fault("PromotionCreate", name="Big", code="X", percent="150")
    assert msg.startswith("percent:")
    fixed = call(
        "PromotionCreate",
        name="Five off setup",
        code="setup5",
        amount="5.00",
        on_setup=True,
        on_recurring=False,
        valid_from="2020-01-01T00:00:00+00:00",
        max_uses=100,
        once_per_account=True,
    )
    assert fixed["currency"] == "USD" and D(fixed["amount"]) == Decimal("5.00")
    assert fixed["cycles"] is None and fixed["once_per_account"] is True
    code, msg = call.fault("PromotionCreate", name="Dup", code="SETUP5", percent="1")
    assert code == "Client.Validation" and msg.startswith("code:")
    assert call("PromotionGet", promotion_id=fixed["id"])["name"] == "Five off setup"
    assert call("PromotionList")["total"] == 1

    call("PlanPublish", plan_id=p["id"])
    cust = call("AccountCreate", type="customer_personal", name="C")
    q = call("PriceQuote", account_id=cust["id"], plan_id=p["id"], promotion_code="setup5")
    assert D(q["total"]) == Decimal("10.00")  # 5.00 setup - 5.00 + 10.00 recurring
    assert call("PromotionDisable", promotion_id=fixed["id"])["status"] == "disabled"
    assert call("PromotionList", status="active")["total"] == 0
    code, msg = call.fault(
        "PriceQuote", account_id=cust["id"], plan_id=p["id"], promotion_code="setup5"
    )
    assert code == "Client.Validation" and "disabled" in msg


def test_reseller_price_currency_must_match_plan(call: Caller) -> None:
    _t, p = _plan(call)
    call("PlanPublish", plan_id=p["id"])
    r = call("AccountCreate", type="reseller", name="R", partner_level="basic")
    code, msg = call.fault(
        "ResellerPriceSet",
        reseller_id=r["id"],
        plan_id=p["id"],
        period_count=1,
        period_unit="month",
        currency="EUR",
        setup_fee="1.00",
        recurring_fee="2.00",
    )
    assert code == "Client.Validation" and msg.startswith("currency:")
    adv = call("AccountCreate", type="reseller", name="A", partner_level="advanced")
    code, msg = call.fault(
        "ResellerPriceSet",
        reseller_id=adv["id"],
        plan_id=p["id"],
        period_count=1,
        period_unit="month",
        currency="USD",
        setup_fee="1.00",
        recurring_fee="2.00",
    )
    assert msg.startswith("reseller_id:")


def test_roles_guard_catalog_changes(call: Caller, api: Any) -> None:
    me = call("WhoAmI")
    call(
        "UserCreate",
        account_id=me["account_id"],
        login=f"helpdesk-{call.protocol}",
        password="helpdesk-password-1",
        full_name="Help Desk",
        roles=["support"],
    )
    support = Caller(api, call.protocol, f"helpdesk-{call.protocol}", "helpdesk-password-1")
    code, _ = support.fault("ResourceCreate", name="Disk", unit="GB", kind="allocated")
    assert code == "Client.Forbidden"
    call("ResourceCreate", name="Disk", unit="GB", kind="allocated")
    assert support("ResourceList")["total"] == 1
    entries = call("AuditLogList", target_type="resource")["items"]
    assert [e["operation"] for e in entries] == ["ResourceCreate"]


def test_wholesale_prices_for_an_advanced_reseller(call: Caller, api: Any) -> None:
    disk = call("ResourceCreate", name="Disk", unit="GB", kind="allocated")
    t = call(
        "ServiceTemplateCreate",
        name="Shared",
        service_type="hosting",
        module="plesk",
        resources=[{"resource_id": disk["id"], "default_limit": "10"}],
        shared_with_resellers=True,
    )
    adv = call("AccountCreate", type="reseller", name="Adv", partner_level="advanced")
    _user(call, adv["id"], f"adv-{call.protocol}")
    as_adv = Caller(api, call.protocol, f"adv-{call.protocol}", "reseller-password-1")
    own = as_adv(
        "PlanCreate",
        template_id=t["id"],
        name="Adv Hosting",
        periods=[{"count": 1, "unit": "month", "setup_fee": "0", "recurring_fee": "15.00"}],
    )
    assert own["owner_id"] == adv["id"]
    per_plan = call(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        plan_id=own["id"],
        currency="USD",
        setup_fee="2.00",
        recurring_fee="6.00",
    )
    per_unit = call(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        resource_id=disk["id"],
        currency="USD",
        setup_fee="0",
        recurring_fee="0.025",
    )
    assert D(per_unit["recurring_fee"]) == Decimal("0.025")
    again = call(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        plan_id=own["id"],
        currency="USD",
        setup_fee="2.00",
        recurring_fee="7.00",
    )
    assert again["id"] == per_plan["id"] and D(again["recurring_fee"]) == 7
    listed = page_items(as_adv("WholesalePriceList", reseller_id=adv["id"]))
    assert [(w["plan_id"], w["resource_id"]) for w in listed] == [
        (own["id"], None),
        (None, disk["id"]),
    ]
    code, msg = call.fault(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        plan_id=own["id"],
        resource_id=disk["id"],
        currency="USD",
        setup_fee="0",
        recurring_fee="1",
    )
    assert code == "Client.Validation" and msg.startswith("plan_id:")
    code, msg = call.fault(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        plan_id=own["id"],
        currency="EUR",
        setup_fee="0",
        recurring_fee="1",
    )
    assert msg.startswith("currency:")
    code, _ = as_adv.fault(
        "WholesalePriceSet",
        reseller_id=adv["id"],
        plan_id=own["id"],
        currency="USD",
        setup_fee="0",
        recurring_fee="0",
    )
    assert code == "Client.Forbidden"


def test_plan_create_is_idempotent(call: Caller) -> None:
    r = call("ResourceCreate", name="Disk", unit="GB", kind="allocated")
    t = call(
        "ServiceTemplateCreate",
        name="T",
        service_type="hosting",
        module="plesk",
        resources=[{"resource_id": r["id"], "default_limit": "1"}],
    )
    args = {
        "template_id": t["id"],
        "name": "Once",
        "periods": [{"count": 1, "unit": "year", "setup_fee": "0", "recurring_fee": "99.00"}],
        "trial": {"length": 1, "unit": "month"},
        "idempotency_key": f"plan-once-{call.protocol}",
    }
    first = call("PlanCreate", **args)
    again = call("PlanCreate", **args)
    assert again["id"] == first["id"] and again["trial"] == first["trial"]
    assert call("PlanList")["total"] == 1


def test_a_template_may_bundle_no_resources(call: Caller) -> None:
    t = call("ServiceTemplateCreate", name="Licence", service_type="licence", module="keys")
    assert t["resources"] == []
    p = call(
        "PlanCreate",
        template_id=t["id"],
        name="Licence yearly",
        periods=[{"count": 1, "unit": "year", "setup_fee": "0", "recurring_fee": "49.00"}],
    )
    assert p["rates"] == []


def test_tax_inclusive_on_plans_versions_reseller_prices_and_quotes(call: Caller) -> None:
    _t, p = _plan(call)
    assert p["tax_inclusive"] is False  # the default: tax is added on top
    month = {"count": 1, "unit": "month", "setup_fee": "5.00", "recurring_fee": "10.00"}
    year = {"count": 1, "unit": "year", "setup_fee": "0", "recurring_fee": "100.00"}
    d = call("PlanUpdate", plan_id=p["id"], tax_inclusive=True, periods=[month, year])
    assert d["tax_inclusive"] is True and d["version"] == 1  # a draft changes in place
    call("PlanPublish", plan_id=p["id"])
    cust = call("AccountCreate", type="customer_business", name="Direct")
    q = call("PriceQuote", account_id=cust["id"], plan_id=p["id"])
    assert q["tax_inclusive"] is True and q["price_source"] == "plan"
    assert D(q["total"]) == Decimal("15.00")
    # on a published plan the flag is a term: changing it makes a new version
    v2 = call("PlanUpdate", plan_id=p["id"], tax_inclusive=False)
    assert v2["version"] == 2 and v2["tax_inclusive"] is False
    assert call("PlanGet", plan_id=p["id"], version=1)["tax_inclusive"] is True
    assert call("PlanGet", plan_id=p["id"])["tax_inclusive"] is False
    assert call("PlanUpdate", plan_id=p["id"], tax_inclusive=False)["version"] == 2
    assert call("PlanList")["items"][0]["tax_inclusive"] is False
    assert call("PriceQuote", account_id=cust["id"], plan_id=p["id"])["tax_inclusive"] is False
    t2 = call("ServiceTemplateCreate", name="T gross", service_type="other", module="plesk")
    gross = call(
        "PlanCreate", template_id=t2["id"], name="Gross", periods=[month], tax_inclusive=True
    )
    assert gross["tax_inclusive"] is True

    # a reseller's price list has its own flag (default: the plan's), one per plan
    r = call("AccountCreate", type="reseller", name="R", partner_level="basic")
    price = {"reseller_id": r["id"], "plan_id": p["id"], "currency": "USD", "setup_fee": "4.00"}
    monthly = call(
        "ResellerPriceSet", period_count=1, period_unit="month", recurring_fee="9.00", **price
    )
    assert monthly["tax_inclusive"] is False
    yearly = call(
        "ResellerPriceSet",
        period_count=1,
        period_unit="year",
        recurring_fee="90.00",
        tax_inclusive=True,
        **price,
    )
    assert yearly["tax_inclusive"] is True
    listed = page_items(call("ResellerPriceList", reseller_id=r["id"], plan_id=p["id"]))
    assert [x["tax_inclusive"] for x in listed] == [True, True]
    again = call(
        "ResellerPriceSet", period_count=1, period_unit="month", recurring_fee="9.50", **price
    )
    assert again["tax_inclusive"] is True  # omitted: the price list's value stays
    rcust = call("AccountCreate", type="customer_business", name="RC", parent_id=r["id"])
    rq = call("PriceQuote", account_id=rcust["id"], plan_id=p["id"])
    assert rq["price_source"] == "reseller_price" and rq["tax_inclusive"] is True
    assert D(rq["total"]) == Decimal("13.50")
    seen = call("PlanList", account_id=rcust["id"])["items"][0]
    assert seen["price_source"] == "reseller_price" and seen["tax_inclusive"] is True
