from __future__ import annotations

import xmlrpc.client
from decimal import Decimal

import pytest
import zeep.exceptions


def test_whoami_over_both_protocols(api):
    s = api.soap().WhoAmI()
    assert s.login == "admin"
    assert s.account_type == "provider"
    assert s.roles == ["admin"]
    x = api.xmlrpc().WhoAmI({})
    assert x["login"] == "admin" and x["account_id"] == s.account_id


def test_account_create_and_get_soap(api):
    svc = api.soap()
    acc = svc.AccountCreate(
        type="reseller",
        name="Acme Hosting",
        partner_level="basic",
        credit_limit=Decimal("1500.50"),
        country="de",
    )
    assert acc.type == "reseller"
    assert acc.credit_limit == Decimal("1500.50")
    assert acc.country == "DE"
    got = svc.AccountGet(account_id=acc.id)
    assert got.name == "Acme Hosting"
    assert got.created_at.tzinfo is not None


def test_fault_codes_match(api):
    with pytest.raises(zeep.exceptions.Fault) as e:
        api.soap().AccountGet(account_id=999999)
    assert e.value.code.endswith("Client.NotFound")
    with pytest.raises(xmlrpc.client.Fault) as x:
        api.xmlrpc().AccountGet({"account_id": 999999})
    assert x.value.faultCode == 4040
    assert x.value.faultString.startswith("Client.NotFound:")
