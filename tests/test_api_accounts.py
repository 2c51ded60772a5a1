"""Account, user and contact stories through the real SOAP and XML-RPC endpoints."""

from __future__ import annotations

import xmlrpc.client
from decimal import Decimal

import pytest
import zeep.exceptions

from tests.support import page_items

PW = "reseller-pass-1"


def soap_code(exc: zeep.exceptions.Fault) -> str:
    return exc.code.split(":")[-1]


def soap_fault(fn, *a, **kw) -> zeep.exceptions.Fault:
    with pytest.raises(zeep.exceptions.Fault) as e:
        fn(*a, **kw)
    return e.value


def xml_fault(fn, *a) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as e:
        fn(*a)
    return e.value


def test_channel_manager_reseller_story_soap(api):
    """Story 3: register a reseller with credit limit and partner level, create its
    users; the reseller logs in with its own credentials, creates customers under
    itself and cannot see anything outside its subtree."""
    admin = api.soap()
    other = admin.AccountCreate(type="customer_business", name="Someone Else Ltd")
    reseller = admin.AccountCreate(
        type="reseller",
        name="Acme Reseller",
        partner_level="advanced",
        credit_limit=Decimal("5000.00"),
        currency="EUR",
        country="NL",
        contacts=[{"kind": "billing", "name": "Ann Bill", "email": "bill@acme.example"}],
    )
    assert reseller.partner_level == "advanced"
    assert reseller.credit_limit == Decimal("5000.00")
    assert reseller.currency == "EUR"
    assert [c.kind for c in reseller.contacts] == ["billing"]
    user = admin.UserCreate(
        account_id=reseller.id,
        login="acme-admin",
        password=PW,
        full_name="Acme Admin",
        roles=["admin"],
    )
    assert user.account_id == reseller.id

    rs = api.soap("acme-admin", PW)
    me = rs.WhoAmI()
    assert me.account_id == reseller.id and me.roles == ["admin"]
    cust = rs.AccountCreate(type="customer_personal", name="Bob Buyer")
    assert cust.parent_id == reseller.id
    assert cust.currency == "EUR"  # inherited from the reseller
    page = rs.AccountList()
    assert [a.id for a in page.items] == [cust.id]
    assert page.total == 1

    # outside the subtree: NotFound, never Forbidden
    for call in (
        lambda: rs.AccountGet(account_id=other.id),
        lambda: rs.AccountGet(account_id=reseller.parent_id),
        lambda: rs.AccountCreate(type="customer_personal", name="x", parent_id=other.id),
        lambda: rs.UserList(account_id=other.id),
        lambda: rs.AccountList(parent_id=other.id),
    ):
        assert soap_code(soap_fault(call)) == "Client.NotFound"
    # a reseller cannot raise its own credit limit
    assert (
        soap_code(
            soap_fault(
                rs.AccountSetCreditLimit, account_id=reseller.id, credit_limit=Decimal("99999")
            )
        )
        == "Client.Forbidden"
    )
    # the provider sees everything
    assert admin.AccountGet(account_id=cust.id).name == "Bob Buyer"
    assert admin.AccountList(recursive=True).total == 3


def test_channel_manager_reseller_story_xmlrpc(api):
    admin = api.xmlrpc()
    other = admin.AccountCreate({"type": "customer_business", "name": "Other"})
    reseller = admin.AccountCreate(
        {"type": "reseller", "name": "R", "partner_level": "basic", "credit_limit": "250.50"}
    )
    assert reseller["credit_limit"] == "250.50"  # money is a decimal string on XML-RPC
    assert reseller["created_at"].endswith("Z")
    admin.UserCreate(
        {
            "account_id": reseller["id"],
            "login": "r-sales",
            "password": PW,
            "full_name": "R Sales",
            "roles": ["sales"],
        }
    )
    rs = api.xmlrpc("r-sales", PW)
    cust = rs.AccountCreate({"type": "customer_business", "name": "C1", "idempotency_key": "k1"})
    assert cust["parent_id"] == reseller["id"]
    f = xml_fault(rs.AccountGet, {"account_id": other["id"]})
    assert f.faultCode == 4040 and f.faultString.startswith("Client.NotFound:")
    # sales may not create users (admin only)
    f = xml_fault(
        rs.UserCreate,
        {
            "account_id": cust["id"],
            "login": "zz",
            "password": PW,
            "full_name": "Z",
            "roles": ["admin"],
        },
    )
    assert f.faultCode == 4030 and f.faultString.startswith("Client.Forbidden:")


def test_enterprise_with_departments(api):
    """Story 4: an enterprise with a credit limit; its administrator creates
    departments, each an account of its own."""
    admin = api.soap()
    ent = admin.AccountCreate(type="enterprise", name="BigCorp", credit_limit=Decimal("10000"))
    admin.UserCreate(
        account_id=ent.id, login="bigcorp-it", password=PW, full_name="IT Lead", roles=["admin"]
    )
    es = api.soap("bigcorp-it", PW)
    d1 = es.AccountCreate(type="department", name="Sales dept")
    d2 = es.AccountCreate(type="department", name="R&D dept")
    assert d1.parent_id == ent.id and d2.type == "department"
    assert es.AccountList().total == 2
    # an enterprise cannot make customers or resellers; departments only under enterprises
    f = soap_fault(es.AccountCreate, type="customer_personal", name="x")
    assert soap_code(f) == "Client.Validation"
    f = soap_fault(admin.AccountCreate, type="department", name="x")
    assert soap_code(f) == "Client.Validation"
    assert "parent_id" in f.message
    # departments use their enterprise's currency
    f = soap_fault(es.AccountCreate, type="department", name="x", currency="EUR")
    assert soap_code(f) == "Client.Validation"


def test_partner_level_rules(api):
    admin = api.soap()
    aff = admin.AccountCreate(type="reseller", name="Aff", partner_level="affiliate")
    f = soap_fault(admin.AccountCreate, type="customer_personal", name="x", parent_id=aff.id)
    assert soap_code(f) == "Client.Validation" and "affiliate" in f.message
    f = soap_fault(admin.AccountCreate, type="reseller", name="no level")
    assert soap_code(f) == "Client.Validation" and "partner_level" in f.message
    f = soap_fault(admin.AccountCreate, type="customer_personal", name="x", partner_level="basic")
    assert soap_code(f) == "Client.Validation"
    basic = admin.AccountCreate(type="reseller", name="B", partner_level="basic")
    admin.AccountCreate(type="customer_personal", name="c", parent_id=basic.id)
    f = soap_fault(admin.AccountSetPartnerLevel, account_id=basic.id, partner_level="affiliate")
    assert soap_code(f) == "Client.InvalidState"
    up = admin.AccountSetPartnerLevel(account_id=basic.id, partner_level="advanced")
    assert up.partner_level == "advanced"
    sub = admin.AccountCreate(
        type="reseller", name="Sub", partner_level="basic", parent_id=basic.id
    )
    assert sub.parent_id == basic.id


def test_status_lifecycle(api):
    admin = api.soap()
    res = admin.AccountCreate(type="reseller", name="R", partner_level="basic")
    cust = admin.AccountCreate(type="customer_personal", name="C", parent_id=res.id)
    assert admin.AccountSuspend(account_id=cust.id, reason="unpaid").status == "suspended"
    f = soap_fault(admin.AccountSuspend, account_id=cust.id)
    assert soap_code(f) == "Client.InvalidState"
    assert admin.AccountResume(account_id=cust.id).status == "active"
    # closing needs everything below closed first
    f = soap_fault(admin.AccountClose, account_id=res.id)
    assert soap_code(f) == "Client.InvalidState"
    assert admin.AccountClose(account_id=cust.id).status == "closed"
    assert admin.AccountClose(account_id=res.id).status == "closed"
    f = soap_fault(admin.AccountResume, account_id=res.id)
    assert soap_code(f) == "Client.InvalidState"
    f = soap_fault(admin.AccountCreate, type="customer_personal", name="x", parent_id=res.id)
    assert soap_code(f) == "Client.InvalidState"
    f = soap_fault(admin.AccountSuspend, account_id=admin.WhoAmI().account_id)
    assert soap_code(f) == "Client.Forbidden"


def test_closed_account_users_cannot_log_in(api):
    admin = api.soap()
    c = admin.AccountCreate(type="customer_personal", name="C")
    admin.UserCreate(
        account_id=c.id, login="c-user", password=PW, full_name="C", roles=["readonly"]
    )
    assert api.soap("c-user", PW).WhoAmI().login == "c-user"
    admin.AccountClose(account_id=c.id)
    f = soap_fault(api.soap("c-user", PW).WhoAmI)
    assert soap_code(f) == "Client.AuthFailed"


def test_account_update_list_filters_and_paging(api):
    admin = api.xmlrpc()
    ids = [
        admin.AccountCreate({"type": "customer_personal", "name": f"Person {i}"})["id"]
        for i in range(5)
    ]
    admin.AccountCreate({"type": "customer_business", "name": "Widgets GmbH"})
    page = admin.AccountList({"type": "customer_personal", "offset": 1, "limit": 2})
    assert page["total"] == 5 and [a["id"] for a in page["items"]] == ids[1:3]
    assert admin.AccountList({"name_contains": "WIDGET"})["total"] == 1
    upd = admin.AccountUpdate(
        {"account_id": ids[0], "name": "Renamed", "tax_id": "DE123", "country": "de"}
    )
    assert (upd["name"], upd["tax_id"], upd["country"]) == ("Renamed", "DE123", "DE")
    upd = admin.AccountUpdate({"account_id": ids[0], "tax_id": ""})
    assert upd["tax_id"] is None
    f = xml_fault(admin.AccountList, {"limit": 100000})
    assert f.faultCode == 4001 and "limit" in f.faultString
    admin.AccountSuspend({"account_id": ids[1]})
    assert admin.AccountList({"status": "suspended"})["total"] == 1


def test_validation_faults_name_the_field(api):
    admin = api.xmlrpc()
    cases = [
        ({"type": "customer_personal"}, "name"),
        ({"type": "martian", "name": "x"}, "type"),
        ({"type": "customer_personal", "name": "x", "credit_limit": "12.345"}, "credit_limit"),
        ({"type": "customer_personal", "name": "x", "credit_limit": 1.5}, "credit_limit"),
        ({"type": "customer_personal", "name": "x", "credit_limit": "-1"}, "credit_limit"),
        ({"type": "customer_personal", "name": "x", "currency": "XXX"}, "currency"),
        ({"type": "customer_personal", "name": "x", "country": "Germany"}, "country"),
        ({"type": "customer_personal", "name": "x", "bogus": 1}, "bogus"),
        (
            {
                "type": "customer_personal",
                "name": "x",
                "contacts": [{"kind": "billing", "name": "n", "email": "not-an-email"}],
            },
            "contacts[0].email",
        ),
    ]
    for args, field in cases:
        f = xml_fault(admin.AccountCreate, args)
        assert f.faultCode == 4001, (args, f.faultString)
        assert f.faultString.startswith(f"Client.Validation: {field}"), (args, f.faultString)
    # nothing was half-written
    assert admin.AccountList({})["total"] == 0


def test_soap_validation_fault_is_typed(api):
    client = api.soap_client()
    with pytest.raises(zeep.exceptions.Fault) as e:
        client.service.AccountCreate(
            type="customer_personal", name="x", credit_limit=Decimal("1.001")
        )
    fault = e.value
    assert soap_code(fault) == "Client.Validation"
    detail = fault.detail.find("{urn:pba-server:v1}PbaFault")
    assert detail is not None
    assert detail.findtext("{urn:pba-server:v1}code") == "Client.Validation"
    assert detail.findtext("{urn:pba-server:v1}number") == "4001"
    assert detail.findtext("{urn:pba-server:v1}field") == "credit_limit"
    assert detail.findtext("{urn:pba-server:v1}correlation_id")


def test_contacts(api):
    admin = api.soap()
    acc = admin.AccountCreate(type="customer_business", name="C")
    c = admin.ContactAdd(
        account_id=acc.id,
        contact={"kind": "technical", "name": "Tech", "email": "t@c.example", "country": "fr"},
    )
    assert c.country == "FR"
    admin.ContactAdd(
        account_id=acc.id, contact={"kind": "billing", "name": "Bill", "email": "b@c.example"}
    )
    assert [x.kind for x in page_items(admin.ContactList(account_id=acc.id))] == [
        "technical",
        "billing",
    ]
    assert [x.kind for x in page_items(admin.ContactList(account_id=acc.id, kind="billing"))] == [
        "billing"
    ]
    u = admin.ContactUpdate(contact_id=c.id, phone="+33 1 23", email="t2@c.example")
    assert (u.phone, u.email, u.name) == ("+33 1 23", "t2@c.example", "Tech")
    assert admin.ContactRemove(contact_id=c.id) is True
    assert len(admin.AccountGet(account_id=acc.id).contacts) == 1
    assert soap_code(soap_fault(admin.ContactRemove, contact_id=c.id)) == "Client.NotFound"


def test_users_roles_and_passwords(api):
    admin = api.soap()
    acc = admin.AccountCreate(type="customer_business", name="C")
    u = admin.UserCreate(
        account_id=acc.id,
        login="c-billing",
        password=PW,
        full_name="B",
        roles=["billing", "readonly"],
        email="b@c.example",
    )
    assert sorted(u.roles) == ["billing", "readonly"]
    assert (
        soap_code(
            soap_fault(
                admin.UserCreate,
                account_id=acc.id,
                login="c-billing",
                password=PW,
                full_name="dup",
                roles=["admin"],
            )
        )
        == "Client.Conflict"
    )
    assert (
        soap_code(
            soap_fault(
                admin.UserCreate,
                account_id=acc.id,
                login="short-pw",
                password="123",
                full_name="x",
                roles=["admin"],
            )
        )
        == "Client.Validation"
    )
    # the WSDL asks for at least one role; the server checks it too
    f = xml_fault(
        api.xmlrpc().UserCreate,
        {"account_id": acc.id, "login": "no-roles", "password": PW, "full_name": "x", "roles": []},
    )
    assert f.faultString.startswith("Client.Validation: roles")
    assert admin.UserList(account_id=acc.id).total == 1
    assert admin.UserUpdate(user_id=u.id, full_name="Betty").full_name == "Betty"
    assert admin.UserSetRoles(user_id=u.id, roles=["sales"]).roles == ["sales"]
    me = admin.WhoAmI()
    assert (
        soap_code(soap_fault(admin.UserSetRoles, user_id=me.user_id, roles=["readonly"]))
        == "Client.Forbidden"
    )
    # a user may change its own password; the old one stops working
    us = api.soap("c-billing", PW)
    assert us.UserSetPassword(user_id=u.id, password="brand-new-pass") is True
    assert soap_code(soap_fault(api.soap("c-billing", PW).WhoAmI)) == "Client.AuthFailed"
    assert api.soap("c-billing", "brand-new-pass").WhoAmI().login == "c-billing"
    # but not someone else's, and a sales user cannot create accounts' users
    other = admin.UserCreate(
        account_id=acc.id, login="c-two", password=PW, full_name="Two", roles=["readonly"]
    )
    us2 = api.soap("c-billing", "brand-new-pass")
    assert (
        soap_code(soap_fault(us2.UserSetPassword, user_id=other.id, password="x" * 12))
        == "Client.Forbidden"
    )
    assert admin.UserDisable(user_id=other.id).status == "disabled"
    assert soap_code(soap_fault(api.soap("c-two", PW).WhoAmI)) == "Client.AuthFailed"
    assert admin.UserEnable(user_id=other.id).status == "active"
    assert api.soap("c-two", PW).WhoAmI().login == "c-two"


def test_readonly_role_cannot_mutate(api):
    admin = api.soap()
    admin.UserCreate(
        account_id=admin.WhoAmI().account_id,
        login="viewer",
        password=PW,
        full_name="V",
        roles=["readonly"],
    )
    viewer = api.xmlrpc("viewer", PW)
    assert viewer.AccountList({})["total"] == 0
    f = xml_fault(viewer.AccountCreate, {"type": "customer_personal", "name": "x"})
    assert f.faultCode == 4030


def test_idempotency(api):
    admin = api.soap()
    a = admin.AccountCreate(type="customer_personal", name="Once", idempotency_key="order-77")
    b = admin.AccountCreate(type="customer_personal", name="Once", idempotency_key="order-77")
    assert a.id == b.id
    assert admin.AccountList().total == 1
    f = soap_fault(
        admin.AccountCreate, type="customer_personal", name="Other", idempotency_key="order-77"
    )
    assert soap_code(f) == "Client.Conflict"
    # the same key over XML-RPC is the same key (per calling user)
    x = api.xmlrpc().AccountCreate(
        {"type": "customer_personal", "name": "Once", "idempotency_key": "order-77"}
    )
    assert x["id"] == a.id
    # another user's keys are its own
    admin.UserCreate(
        account_id=a.id, login="once-user", password=PW, full_name="O", roles=["admin"]
    )
    c = api.soap("once-user", PW).ContactAdd(
        account_id=a.id,
        contact={"kind": "billing", "name": "n", "email": "n@x.example"},
        idempotency_key="order-77",
    )
    assert c.account_id == a.id


def test_audit_log(api):
    admin = api.soap()
    res = admin.AccountCreate(type="reseller", name="R", partner_level="basic")
    admin.AccountSetCreditLimit(account_id=res.id, credit_limit=Decimal("100"))
    cust = admin.AccountCreate(type="customer_personal", name="C", parent_id=res.id)
    entries = admin.AuditLogList(target_type="account", target_id=str(res.id)).items
    assert [e.operation for e in entries] == ["AccountSetCreditLimit", "AccountCreate"]
    assert entries[0].user_login == "admin"
    assert '"credit_limit"' in entries[0].changes and '"100.00"' in entries[0].changes
    # a reseller's admin sees its subtree's entries only
    r_admin = admin.UserCreate(
        account_id=res.id, login="r-admin", password=PW, full_name="R", roles=["admin"]
    )
    rs = api.soap("r-admin", PW)
    rs.AccountUpdate(account_id=cust.id, name="C2")
    seen = rs.AuditLogList().items
    assert {(e.target_type, e.target_id) for e in seen} == {
        ("account", str(res.id)),
        ("account", str(cust.id)),
        ("user", str(r_admin.id)),
    }
    assert seen[0].operation == "AccountUpdate"
    assert '"from": "C"' in seen[0].changes
    # the provider's own history (its creation at init) is outside the reseller's view
    assert admin.AuditLogList(target_id=str(res.parent_id)).total == 1
    assert rs.AuditLogList(target_id=str(res.parent_id)).total == 0
    # failed calls write no audit entry
    before = admin.AuditLogList().total
    soap_fault(admin.AccountCreate, type="reseller", name="x")
    assert admin.AuditLogList().total == before


def test_soap_fault_shape_and_schema_errors_name_the_field(api, server):
    """A fault holds faultcode, faultstring and the typed detail, nothing else; an
    enumeration refused by the schema names the field path like XML-RPC does."""
    import requests
    from lxml import etree

    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:t="urn:pba-server:v1"><s:Body><t:AccountCreate><t:type>customer_personal</t:type>'
        "<t:name>x</t:name><t:contacts><t:kind>billing</t:kind><t:name>n</t:name>"
        "<t:email>e@x.example</t:email></t:contacts><t:contacts><t:kind>zz</t:kind>"
        "<t:name>n</t:name><t:email>e@x.example</t:email></t:contacts></t:AccountCreate>"
        "</s:Body></s:Envelope>"
    )
    r = requests.post(
        f"{server}/soap",
        data=body,
        timeout=30,
        headers={"Content-Type": "text/xml"},
        auth=("admin", api.env.admin_password),
    )
    assert r.status_code == 500
    fault = etree.fromstring(r.content).find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault")
    assert [c.tag for c in fault] == ["faultcode", "faultstring", "detail"]
    assert fault.findtext("faultstring").startswith("contacts[1].kind: ")
    assert fault.find("detail/{urn:pba-server:v1}PbaFault/{urn:pba-server:v1}field").text == (
        "contacts[1].kind"
    )
