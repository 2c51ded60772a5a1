"""Domains operations through the real SOAP and XML-RPC endpoints (both
protocols, both databases), with the sandbox_registrar plugin."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from pba_server.sdk import loader
from pba_server.sdk.provisioning import Done
from tests import domains_support as ds
from tests.catalog_support import Caller
from tests.support import page_items

PROTOCOLS = ["soap", "xmlrpc"]
PRICES = [
    {
        "years": 1,
        "register": Decimal("12.00"),
        "renew": Decimal("10.00"),
        "transfer": Decimal("8.00"),
    },
    {"years": 2, "register": Decimal("22.00"), "renew": Decimal("20.00")},
]


@pytest.fixture(params=PROTOCOLS)
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


def _sandbox(call: Caller, name: str = "registrar") -> tuple[int, str]:
    registry = f"api-{uuid.uuid4().hex[:8]}"
    inst = call(
        "PluginConfigure",
        plugin="sandbox_registrar",
        name=name,
        settings=[{"name": "registry", "value": registry}, {"name": "password", "value": "pw"}],
    )
    return int(inst["id"]), registry


def _registry(name: str) -> Any:
    return loader.plugins()["sandbox_registrar"].cls.state(name)


def _tld(call: Caller, inst: int, name: str = "test", **kw: Any) -> dict[str, Any]:
    return dict(call("TldCreate", name=name, instance_id=inst, prices=PRICES, **kw))


def D(v: Any) -> Decimal:
    return Decimal(str(v))


def test_tld_create_list_update(call, env):
    inst, _ = _sandbox(call)
    t = _tld(call, inst, ".Test", idempotency_key="tld-1")
    assert (t["name"], t["registrar"], t["currency"], t["status"]) == (
        "test",
        "sandbox_registrar",
        "USD",
        "active",
    )
    assert [(p["years"], D(p["register"]), D(p["renew"])) for p in t["prices"]] == [
        (1, Decimal("12.00"), Decimal("10.00")),
        (2, Decimal("22.00"), Decimal("20.00")),
    ]
    assert t["transfer_plan_id"]
    # a repeat with the same key is the same TLD; without it, a conflict
    assert _tld(call, inst, ".Test", idempotency_key="tld-1")["id"] == t["id"]
    code, _ = call.fault("TldCreate", name="test", instance_id=inst, prices=PRICES)
    assert code == "Client.Conflict"
    plan = call("PlanGet", plan_id=t["plan_id"])
    assert plan["status"] == "published"
    assert [x["name"] for x in page_items(call("TldList"))] == ["test"]

    new_prices = [{"years": 1, "register": Decimal("15.00"), "renew": Decimal("11.00")}]
    u = call("TldUpdate", tld_id=t["id"], prices=new_prices)
    assert [(p["years"], D(p["register"]), p.get("transfer")) for p in u["prices"]] == [
        (1, Decimal("15.00"), None)
    ]
    plan = call("PlanGet", plan_id=t["plan_id"])
    assert plan["version"] == 2  # published: a new version; subscribers keep theirs
    assert call("PlanGet", plan_id=t["transfer_plan_id"])["status"] == "unpublished"
    d = call("TldUpdate", tld_id=t["id"], status="disabled")
    assert d["status"] == "disabled"
    assert call("PlanGet", plan_id=t["plan_id"])["status"] == "unpublished"
    assert call("TldUpdate", tld_id=t["id"], status="active")["status"] == "active"
    assert call("PlanGet", plan_id=t["plan_id"])["status"] == "published"


def test_tld_faults(call, env):
    inst, _ = _sandbox(call)
    card = call(
        "PluginConfigure",
        plugin="sandbox_card",
        name="cards",
        settings=[{"name": "api_key", "value": "sk_test_x"}],
    )
    for kw, field in [
        ({"name": "bad_tld!", "instance_id": inst, "prices": PRICES}, "name"),
        ({"name": "ok", "instance_id": card["id"], "prices": PRICES}, "instance_id"),
        ({"name": "ok", "instance_id": inst, "prices": []}, "prices"),
        (
            {
                "name": "ok",
                "instance_id": inst,
                "prices": [{"years": 1, "register": Decimal("-1"), "renew": Decimal("1")}],
            },
            "register",
        ),
        (
            {
                "name": "ok",
                "instance_id": inst,
                "prices": [{"years": 1, "register": Decimal("1.001"), "renew": Decimal("1")}],
            },
            "register",
        ),
    ]:
        if call.protocol == "soap" and not kw["prices"]:
            continue  # zeep itself refuses an empty required list
        code, message = call.fault("TldCreate", **kw)
        assert code == "Client.Validation" and field in message, (kw, message)
    code, _ = call.fault("TldUpdate", tld_id=99999, status="disabled")
    assert code == "Client.NotFound"


def test_domain_check(call, env):
    inst, _ = _sandbox(call)
    _tld(call, inst)
    items = call(
        "DomainCheck",
        names=["Free.TEST", "taken.test", "premium1.test", "x.unknown", "no spaces.test"],
    )
    got = {i["name"]: (i["available"], i["reason"] or "") for i in items}
    assert got == {
        "free.test": (True, ""),
        "taken.test": (False, "taken"),
        "premium1.test": (True, "premium"),
        "x.unknown": (False, "unknown TLD"),
        "no spaces.test": (False, "invalid name"),
    }
    free = items[0]
    assert D(free["register_price"]) == Decimal("12.00") and D(free["transfer_price"]) == Decimal(
        "8.00"
    )
    assert D(items[2]["premium_price"]) == Decimal("500.00")
    code, _ = call.fault("DomainCheck", names=["down.test"])
    assert code == "Server.Unavailable"
    if call.protocol == "xmlrpc":  # zeep itself refuses an empty required list
        code, _ = call.fault("DomainCheck", names=[])
        assert code == "Client.Validation"
    code, _ = call.fault("DomainCheck", names=[f"n{i}.test" for i in range(51)])
    assert code == "Client.Validation"


def _registered(env: Any, call: Caller, name: str = "mine.test") -> tuple[int, dict[str, Any], str]:
    inst, registry = _sandbox(call)
    t = _tld(call, inst)
    acc = ds.customer(env)
    svc = ds.service(env, acc, ds.template_of(env, t["plan_id"]), domain=name)
    assert isinstance(ds.run(env, svc, "create"), Done)
    (d,) = call("DomainList", account_id=acc)["items"]
    return acc, d, registry


def test_domain_get_list_and_scope(call, env, api):
    acc, d, _ = _registered(env, call)
    assert (d["name"], d["status"], d["action"], d["account_id"]) == (
        "mine.test",
        "active",
        "register",
        acc,
    )
    assert d["expires_on"] and d["registry_id"]
    roles = {c["role"] for c in d["contacts"]}
    assert roles == {"registrant", "admin", "tech", "billing"}
    got = call("DomainGet", domain_id=d["id"])
    assert got["name"] == "mine.test"
    page = call("DomainList", status="active", name="mine")
    assert page["total"] == 1
    assert call("DomainList", status="failed")["total"] == 0
    assert call("DomainList", expires_before="2000-01-01")["total"] == 0
    code, _ = call.fault("DomainList", expires_before="soon")
    assert code == "Client.Validation"
    # another customer's user does not see it
    other = ds.customer(env, "Other Buyer")
    call(
        "UserCreate",
        account_id=other,
        login=f"other-{call.protocol}",
        password="other-password-1",
        full_name="Other",
        roles=["admin"],
    )
    as_other = Caller(api, call.protocol, f"other-{call.protocol}", "other-password-1")
    code, _ = as_other.fault("DomainGet", domain_id=d["id"])
    assert code == "Client.NotFound"
    assert as_other("DomainList")["total"] == 0
    # it sees the TLDs sold to it and may check names
    assert [t["name"] for t in page_items(as_other("TldList"))] == ["test"]
    assert as_other("DomainCheck", names=["fresh.test"])[0]["available"] is True


def test_set_nameservers_and_contacts(call, env):
    _, d, registry = _registered(env, call)
    got = call(
        "DomainSetNameservers",
        domain_id=d["id"],
        nameservers=["NS1.Host.example", "ns2.host.example"],
    )
    assert got["nameservers"] == ["ns1.host.example", "ns2.host.example"]
    assert _registry(registry).domains["mine.test"]["nameservers"] == [
        "ns1.host.example",
        "ns2.host.example",
    ]
    for ns, field in [(["one.example"], "nameservers"), (["a..b", "c.example"], "nameservers[0]")]:
        code, message = call.fault("DomainSetNameservers", domain_id=d["id"], nameservers=ns)
        assert code == "Client.Validation" and field in message
    code, message = call.fault(
        "DomainSetNameservers", domain_id=d["id"], nameservers=["bogus1.example", "ns2.example"]
    )
    assert code == "Client.Validation" and "2303" in message
    # nothing changed
    assert call("DomainGet", domain_id=d["id"])["nameservers"] == [
        "ns1.host.example",
        "ns2.host.example",
    ]
    bob = {"role": "tech", "name": "Bob Tech", "email": "bob@example.com", "country": "de"}
    got = call("DomainSetContacts", domain_id=d["id"], contacts=[bob])
    tech = next(c for c in got["contacts"] if c["role"] == "tech")
    assert (tech["name"], tech["country"]) == ("Bob Tech", "DE")
    assert next(c for c in got["contacts"] if c["role"] == "registrant")["name"] == "Ada Admin"
    assert _registry(registry).domains["mine.test"]["contacts"]["tech"].name == "Bob Tech"
    for contact, field in [
        ({**bob, "role": "owner"}, "role"),
        ({**bob, "email": "nope"}, "email"),
        ({**bob, "country": "DEU"}, "country"),
    ]:
        code, message = call.fault("DomainSetContacts", domain_id=d["id"], contacts=[contact])
        assert code == "Client.Validation" and field in message, message
    code, _ = call.fault(
        "DomainSetNameservers", domain_id=999999, nameservers=["a.example", "b.example"]
    )
    assert code == "Client.NotFound"


def test_registrar_unreachable_changes_nothing(call, env):
    _, d, registry = _registered(env, call)
    _registry(registry).offline = True
    code, message = call.fault(
        "DomainSetNameservers", domain_id=d["id"], nameservers=["ns1.example", "ns2.example"]
    )
    assert code == "Server.Unavailable" and "nothing changed" in message
    assert call("DomainGet", domain_id=d["id"])["nameservers"] == []


def test_balance_minimum(call, env):
    inst, _ = _sandbox(call)
    m = call("RegistrarBalanceMinimumSet", instance_id=inst, minimum=Decimal("100"), currency="usd")
    assert (D(m["minimum"]), m["currency"]) == (Decimal("100.00"), "USD")
    (listed,) = page_items(call("RegistrarMonitorList"))
    assert listed["instance_id"] == inst and listed.get("last_balance") is None
    for kw, code in [
        ({"instance_id": 99999, "minimum": Decimal("1"), "currency": "USD"}, "Client.NotFound"),
        ({"instance_id": inst, "minimum": Decimal("-1"), "currency": "USD"}, "Client.Validation"),
        ({"instance_id": inst, "minimum": Decimal("1"), "currency": "XXX"}, "Client.Validation"),
    ]:
        assert call.fault("RegistrarBalanceMinimumSet", **kw)[0] == code
