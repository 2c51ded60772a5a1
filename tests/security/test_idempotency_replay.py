"""An idempotent replay is the caller's own: another user's key, even in the
same account, neither answers with nor reveals the other user's request."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
import zeep.exceptions

from tests.catalog_support import plain

PW = "a-long-password-1"


def _users(api: Any) -> dict[str, int]:
    admin = api.xmlrpc()
    me = admin.WhoAmI({})["account_id"]
    ids = {}
    for role in ("billing", "readonly"):
        ids[role] = admin.UserCreate(
            {
                "account_id": me,
                "login": f"u-{role}",
                "password": PW,
                "full_name": role,
                "roles": [role],
            }
        )["id"]
    return ids


def test_readonly_replaying_the_admins_api_key_create_gets_nothing(api):
    ids = _users(api)
    request = {"name": "ci", "user_id": ids["billing"], "idempotency_key": "key-1"}
    made = api.xmlrpc().ApiKeyCreate(request)
    assert made["user_id"] == ids["billing"] and made["secret"]
    viewer = api.xmlrpc("u-readonly", PW)
    with pytest.raises(xmlrpc.client.Fault) as e:
        viewer.ApiKeyCreate(request)
    assert e.value.faultCode == 4030
    assert made["secret"] not in e.value.faultString and made["key_id"] not in e.value.faultString
    assert "another user's API keys" in e.value.faultString
    # over SOAP too
    with pytest.raises(zeep.exceptions.Fault) as f:
        api.soap("u-readonly", PW).ApiKeyCreate(**request)
    assert str(f.value.code).endswith("Client.Forbidden")
    assert made["secret"] not in str(f.value.message)
    # the billing user's keys are still the one the admin made
    keys = api.xmlrpc().ApiKeyList({"user_id": ids["billing"]})["items"]
    assert [k["key_id"] for k in keys] == [made["key_id"]]
    # the admin's own replay still answers its first result
    assert api.xmlrpc().ApiKeyCreate(request) == made


def test_another_users_key_is_a_new_key_for_the_caller(api):
    ids = _users(api)
    made = api.xmlrpc().ApiKeyCreate(
        {"name": "ci", "user_id": ids["billing"], "idempotency_key": "key-2"}
    )
    viewer = api.xmlrpc("u-readonly", PW)
    # other parameters with the admin's key: no "key in use" conflict that
    # would tell the admin used it, just the caller's own new key
    mine = viewer.ApiKeyCreate({"name": "mine", "idempotency_key": "key-2"})
    assert mine["user_id"] == ids["readonly"] and mine["key_id"] != made["key_id"]
    assert viewer.ApiKeyCreate({"name": "mine", "idempotency_key": "key-2"}) == mine
    # and its own key with other parameters is its own conflict
    with pytest.raises(xmlrpc.client.Fault) as e:
        viewer.ApiKeyCreate({"name": "other", "idempotency_key": "key-2"})
    assert e.value.faultCode == 4090


def test_a_replay_rechecks_the_callers_role(api):
    ids = _users(api)
    admin = api.soap()
    acc = admin.AccountCreate(type="customer_personal", name="Cust").id
    bill = api.soap("u-billing", PW)
    request = {
        "account_id": acc,
        "lines": [{"description": "x", "unit_price": "5.00"}],
        "idempotency_key": "inv-1",
    }
    first = plain(bill.InvoiceCreate(**request))
    assert plain(bill.InvoiceCreate(**request)) == first
    admin.UserSetRoles(user_id=ids["billing"], roles=["readonly"])
    with pytest.raises(zeep.exceptions.Fault) as e:
        bill.InvoiceCreate(**request)
    assert str(e.value.code).endswith("Client.Forbidden")
    assert str(first["id"]) not in str(e.value.message)
