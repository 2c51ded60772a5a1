"""Roles hold: every mutating operation, called by every role over the real
endpoints, answers the role fault exactly when the operation table says the
role may not call it; and the attacks of issue 14.3 leave no trace."""

from __future__ import annotations

import dataclasses
import typing
import xmlrpc.client
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zeep.exceptions
from sqlalchemy import func, select

from pba_server.accounts import keys, tree, users
from pba_server.api.roles_doc import with_roles_table
from pba_server.billing.models import Invoice, LedgerEntry
from pba_server.bootstrap import load_operations
from pba_server.core.db import UnitOfWork
from pba_server.core.operations import ROLES, Operation
from pba_server.core.schema import fields_of, is_literal, list_item, min_len, unwrap_optional
from pba_server.orders.models import Order
from tests.catalog_support import service_ctx
from tests.support import page_items

ROOT = Path(__file__).resolve().parents[2]
PW = "a-long-password-1"
ROLE_FAULT = 4030
MISSING = 999_999  # no object has this id: allowed calls stop at "not found"


def _dummy(tp: Any) -> Any:
    """A value of type ``tp`` that passes the dispatcher's argument checks."""
    at_least = min_len(tp)
    tp, _optional = unwrap_optional(tp)
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if tp is str:
        return "x"
    if tp is bool:
        return False
    if tp is int:
        return MISSING
    if tp is Decimal:
        return "1.00"
    if tp is datetime:
        return "2026-01-01T00:00:00Z"
    if tp is date:
        return "2026-01-01"
    if is_literal(tp):
        return typing.get_args(tp)[0]
    if list_item(tp) is not None:
        return [_dummy(list_item(tp)) for _ in range(at_least)]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return {name: _dummy(t) for name, t, required in fields_of(tp) if required}
    raise TypeError(f"no dummy for {tp!r}")


def dummy_args(op: Operation) -> dict[str, Any]:
    return {p.name: _dummy(p.type) for p in op.params if p.required}


def _is_role_fault(fault: xmlrpc.client.Fault, name: str) -> bool:
    return fault.faultCode == ROLE_FAULT and f"{name} needs one of the roles" in fault.faultString


def _staff(env: Any) -> dict[tuple[str, str], tuple[int, str, str]]:
    """A user of every role at the provider and at a reseller, each with an API
    key (cheap to check, so the whole matrix runs in seconds): (where, role) ->
    (user id, key id, secret)."""
    out: dict[tuple[str, str], tuple[int, str, str]] = {}
    with service_ctx(env) as ctx:
        res = tree.account_create(
            ctx, type="reseller", name="Res", partner_level="advanced", country="DE"
        )
        for where, acc in (("provider", ctx.principal.account_id), ("reseller", res.id)):
            for role in ROLES:
                u = users.user_create(
                    ctx,
                    account_id=acc,
                    login=f"{where}-{role}",
                    password=PW,
                    full_name=f"{where} {role}",
                    roles=[role],  # type: ignore[list-item]
                )
                k = keys.api_key_create(ctx, name="matrix", user_id=u.id)
                out[(where, role)] = (u.id, k.key_id, k.secret)
    return out


def _counts(env: Any) -> tuple[int, int, int]:
    with UnitOfWork(env.app.engine) as uow:
        s = uow.session
        return (
            s.scalar(select(func.count()).select_from(Invoice)) or 0,
            s.scalar(select(func.count()).select_from(LedgerEntry)) or 0,
            s.scalar(select(func.count()).select_from(Order)) or 0,
        )


def test_mutating_operations_never_admit_readonly_unless_self_service():
    ops = load_operations()
    assert all(
        not op.mutating or "readonly" not in op.roles or op.self_service for op in ops.values()
    )
    assert {n for n, op in ops.items() if op.self_service} == {
        "ApiKeyCreate",
        "ApiKeyRevoke",
        "UserSetPassword",
    }


def test_the_roles_table_in_docs_is_the_generated_one():
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert doc == with_roles_table(doc, load_operations()), "run: pba-server export-roles"
    for name in load_operations():
        assert f"| `{name}` |" in doc, name


def test_every_mutating_operation_as_every_role_over_xmlrpc(env, api):
    staff = _staff(env)
    proxies = {who: api.xmlrpc(key, secret) for who, (_uid, key, secret) in staff.items()}
    wrong: list[str] = []
    for name, op in load_operations().items():
        if not op.mutating:
            continue
        args = dummy_args(op)
        for (where, role), proxy in proxies.items():
            allowed = role == "admin" or role in op.roles
            try:
                getattr(proxy, name)(args)
                refused = False
            except xmlrpc.client.Fault as f:
                refused = _is_role_fault(f, name)
            if refused == allowed:
                wrong.append(f"{name} as {where} {role}: {'refused' if refused else 'allowed'}")
    assert wrong == []


SOAP_SAMPLE = {
    "OrderCancel": {"order_id": MISSING},
    "SubscriptionCancel": {"subscription_id": MISSING},
    "SubscriptionSetAutoRenew": {"subscription_id": MISSING, "auto_renew": False},
    "AccountUpdate": {"account_id": MISSING, "name": "x"},
    "ContactRemove": {"contact_id": MISSING},
    "SubscriptionSuspend": {"subscription_id": MISSING},
    "InvoiceVoid": {"invoice_id": MISSING, "reason": "x"},
}


def test_a_sample_over_soap(env, api):
    staff = _staff(env)
    ops = load_operations()
    wrong: list[str] = []
    for role in ROLES:
        _uid, key, secret = staff[("reseller", role)]
        client = api.soap(key, secret)
        for name, args in SOAP_SAMPLE.items():
            allowed = role == "admin" or role in ops[name].roles
            try:
                getattr(client, name)(**args)
                refused = False
            except zeep.exceptions.Fault as f:
                refused = str(f.code).endswith("Client.Forbidden") and "needs one of" in f.message
            if refused == allowed:
                wrong.append(f"{name} as {role}: {'refused' if refused else 'allowed'}")
    assert wrong == []


# ---------------------------------------------------------------- issue 14.3


def _shop(env: Any) -> dict[str, int]:
    """An advanced reseller with its own plans, a customer on one of them, and
    its staff: r-admin, r-sales, r-billing, r-readonly."""
    from pba_server.catalog.models import PlanVersion
    from tests.billing_support import customer
    from tests.orders_support import plan
    from tests.prov_support import subscribe

    with service_ctx(env) as ctx:
        res = tree.account_create(
            ctx, type="reseller", name="Res", partner_level="advanced", country="DE"
        ).id
        for role in ("admin", "sales", "billing", "readonly"):
            users.user_create(
                ctx,
                account_id=res,
                login=f"r-{role}",
                password=PW,
                full_name=role,
                roles=[role],  # type: ignore[list-item]
            )
    small = plan(env, "Hosting S", login="r-admin", resource=True)
    big = plan(env, "Hosting M", recurring="50.00", login="r-admin")
    cust = customer(env, "Cust", login="r-admin", credit_limit="1000")
    with UnitOfWork(env.app.engine) as uow:
        version = uow.session.scalar(
            select(PlanVersion.id).where(PlanVersion.plan_id == small["plan"])
        )
    assert version is not None
    sub = subscribe(env, cust, version)
    return {
        "reseller": res,
        "customer": cust,
        "plan": small["plan"],
        "big_plan": big["plan"],
        "resource": small["resource"],
        "subscription": sub,
    }


def _refused(proxy: Any, name: str, args: dict[str, Any]) -> None:
    with pytest.raises(xmlrpc.client.Fault) as e:
        getattr(proxy, name)(args)
    assert _is_role_fault(e.value, name), e.value.faultString


def test_readonly_cannot_buy_cancel_or_change(env, api):
    shop = _shop(env)
    cust, sub = shop["customer"], shop["subscription"]
    before = _counts(env)
    viewer = api.xmlrpc("r-readonly", PW)
    sale = {"plan_id": shop["plan"], "period_count": 1, "period_unit": "month"}
    attacks: list[tuple[str, dict[str, Any]]] = [
        ("OrderPlace", {"account_id": cust, "lines": [sale], "on_account": True}),
        ("OrderPlace", {"account_id": cust, "lines": [sale], "payment_method_id": MISSING}),
        (
            "OrderPlace",
            {
                "account_id": cust,
                "order_type": "renewal",
                "lines": [{"subscription_id": sub}],
                "on_account": True,
            },
        ),
        (
            "SubscriptionBuyResource",
            {
                "subscription_id": sub,
                "resource_id": shop["resource"],
                "amount": "5",
                "on_account": True,
            },
        ),
        ("SubscriptionCancel", {"subscription_id": sub, "when": "now"}),
        ("SubscriptionSetAutoRenew", {"subscription_id": sub, "auto_renew": False}),
        ("SubscriptionChangePlan", {"subscription_id": sub, "plan_id": shop["big_plan"]}),
        ("SubscriptionRenew", {"subscription_id": sub, "on_account": True}),
    ]
    for name, args in attacks:
        _refused(viewer, name, args)
    order_id = api.xmlrpc("r-sales", PW).OrderPlace(
        {"account_id": cust, "lines": [sale], "on_account": True}
    )["id"]
    _refused(viewer, "OrderCancel", {"order_id": order_id})
    assert viewer.OrderGet({"order_id": order_id})["status"] == "running"
    assert viewer.SubscriptionGet({"subscription_id": sub})["auto_renew"] is True
    invoices, ledger, orders = _counts(env)
    # the same sale placed by sales went through: the attacks were real calls
    assert (invoices, ledger, orders) == (before[0], before[1], before[2] + 1)


def test_billing_cannot_edit_accounts_contacts_domains_or_orders(env, api):
    shop = _shop(env)
    cust = shop["customer"]
    sale = {"plan_id": shop["plan"], "period_count": 1, "period_unit": "month"}
    order_id = api.xmlrpc("r-sales", PW).OrderPlace(
        {"account_id": cust, "lines": [sale], "on_account": True}
    )["id"]
    before = _counts(env)
    bill = api.xmlrpc("r-billing", PW)
    contact = {"kind": "technical", "name": "Eve", "email": "eve@evil.example"}
    for name, args in [
        ("AccountUpdate", {"account_id": cust, "name": "Pwned"}),
        ("ContactAdd", {"account_id": cust, "contact": contact}),
        ("ContactUpdate", {"contact_id": MISSING, "email": "eve@evil.example"}),
        ("ContactRemove", {"contact_id": MISSING}),
        (
            "DomainSetContacts",
            {
                "domain_id": MISSING,
                "contacts": [{"role": "admin", "name": "Eve", "email": "e@x.example"}],
            },
        ),
        ("OrderApprove", {"order_id": order_id}),
        ("OrderPlace", {"account_id": cust, "lines": [sale], "on_account": True}),
    ]:
        _refused(bill, name, args)
    assert bill.AccountGet({"account_id": cust})["name"] == "Cust"
    assert page_items(bill.ContactList({"account_id": cust})) == []
    assert _counts(env) == before
    # what billing is for still works
    assert bill.InvoiceList({"account_id": cust})["total"] == 0
