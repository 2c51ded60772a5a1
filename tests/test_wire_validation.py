"""One table of malformed inputs, sent through the real SOAP endpoint (a raw
envelope: zeep would refuse most of them itself) and the real XML-RPC
endpoint: both must answer the same fault code naming the same field, and
nothing may be written (every table's row count is the same after).

The operation table is the one validator (pba_server.core.schema.coerce);
where spyne's schema validation refuses first (``1E+2`` is no xs:decimal),
the SOAP fault must say what the table would."""

from __future__ import annotations

import dataclasses
import xmlrpc.client
from datetime import timedelta
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import pytest
import requests
from lxml import etree
from sqlalchemy import func, select

from pba_server.bootstrap import load_operations
from pba_server.core.db import UnitOfWork
from pba_server.core.schema import fields_of, list_item, unwrap_optional
from pba_server.models import metadata
from tests.billing_support import customer
from tests.billrun_support import make_plan, subscribe
from tests.catalog_support import service_ctx

TNS = "urn:pba-server:v1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OPS = load_operations()
NAIVE = "2026-12-02T00:57:10"


def _elements(tp: Any, name: str, value: Any) -> str:
    """``value`` as the element(s) ``name``, children in the declared order."""
    inner = unwrap_optional(tp)[0] if tp is not None else None
    item = list_item(inner) if inner is not None else None
    if isinstance(value, list):
        return "".join(_elements(item, name, v) for v in value)
    if isinstance(value, dict):
        return f"<tns:{name}>{_children(inner, value)}</tns:{name}>"
    text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
    return f"<tns:{name}>{text}</tns:{name}>"


def _children(cls: Any, values: dict[str, Any]) -> str:
    declared = (
        [(n, t) for n, t, _r in fields_of(cls)]
        if dataclasses.is_dataclass(cls) and isinstance(cls, type)
        else []
    )
    return _ordered(declared, values)


def _ordered(declared: list[tuple[str, Any]], values: dict[str, Any]) -> str:
    known = [n for n, _t in declared]
    out = [_elements(t, n, values[n]) for n, t in declared if n in values]
    # unknown names go last, where a schema-aware client would not put them
    out += [_elements(None, n, v) for n, v in values.items() if n not in known]
    return "".join(out)


def soap_envelope(op: str, params: dict[str, Any]) -> bytes:
    known = OPS.get(op)
    declared = [(p.name, p.type) for p in known.params] if known else []
    body = _ordered(declared, params)
    return (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:tns="{TNS}">'
        f"<soapenv:Body><tns:{op}>{body}</tns:{op}></soapenv:Body></soapenv:Envelope>"
    ).encode()


def soap_fault(api: Any, op: str, params: dict[str, Any]) -> tuple[str, str | None]:
    r = requests.post(
        f"{api.base}/soap",
        data=soap_envelope(op, params),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        auth=("admin", api.env.admin_password),
        timeout=30,
    )
    assert r.status_code == 500, r.text[:2000]
    doc = etree.fromstring(r.content)
    code = doc.findtext(f".//{{{SOAP_ENV}}}Fault/faultcode") or ""
    field = doc.findtext(f".//{{{TNS}}}PbaFault/{{{TNS}}}field")
    return code.partition(":")[2], field


def xmlrpc_fault(api: Any, op: str, params: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises(xmlrpc.client.Fault) as e:
        getattr(api.xmlrpc(), op)(params)
    code, _, message = e.value.faultString.partition(": ")
    return code, message


def counts(env: Any) -> dict[str, int]:
    with UnitOfWork(env.app.engine) as uow:
        return {
            t.name: uow.session.scalar(select(func.count()).select_from(t)) or 0
            for t in metadata.sorted_tables
        }


@pytest.fixture
def world(env: Any) -> dict[str, Any]:
    """A customer with a subscription to a plan with a metered resource."""
    cat = make_plan(env)
    with service_ctx(env) as ctx:
        provider = ctx.principal.account_id
    cust = customer(env, "Wire", country=None)
    start = env.clock.now().date() - timedelta(days=3)
    sub = subscribe(env, cat, cust, provider, start)
    now = env.clock.now().replace(microsecond=0) - timedelta(hours=1)
    return {
        "account": cust,
        "plan": cat.plan_id,
        "sub": sub,
        "disk": cat.disk,
        "when": now.isoformat().replace("+00:00", "Z"),
    }


def _payment(w: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "account_id": w["account"],
        "amount": "100.00",
        "method": "bank_transfer",
        "reference": "wire-1",
        "received_on": "2026-12-01",
    } | over


def _usage(w: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "subscription_id": w["sub"],
        "resource_id": w["disk"],
        "quantity": "5",
        "timestamp": w["when"],
        "record_id": "wire-u1",
    } | over


def _batch(w: dict[str, Any], *records: dict[str, Any]) -> dict[str, Any]:
    return {"records": list(records)}


def _account(**over: Any) -> dict[str, Any]:
    return {"type": "customer_business", "name": "Wire Co", "currency": "EUR"} | over


def _user(w: dict[str, Any], **over: Any) -> dict[str, Any]:
    base = {
        "account_id": w["account"],
        "login": "wire-user",
        "password": "Correct-Horse-9-Battery",
        "full_name": "Wire User",
    }
    return base | over


def _rec(w: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {k: v for k, v in (_usage(w) | over).items() if v is not None}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


V = "Client.Validation"
# (id, operation, params from the world, fault code, field)
CASES: list[tuple[str, str, Any, str, str | None]] = [
    ("amount-exponent", "PaymentRecord", lambda w: _payment(w, amount="1E+2"), V, "amount"),
    ("amount-exponent-lower", "PaymentRecord", lambda w: _payment(w, amount="1e2"), V, "amount"),
    ("amount-nan", "PaymentRecord", lambda w: _payment(w, amount="NaN"), V, "amount"),
    ("amount-infinity", "PaymentRecord", lambda w: _payment(w, amount="Infinity"), V, "amount"),
    ("amount-plus", "PaymentRecord", lambda w: _payment(w, amount="+100"), V, "amount"),
    ("amount-space", "PaymentRecord", lambda w: _payment(w, amount=" 100"), V, "amount"),
    ("amount-trailing-dot", "PaymentRecord", lambda w: _payment(w, amount="100."), V, "amount"),
    ("amount-leading-dot", "PaymentRecord", lambda w: _payment(w, amount=".5"), V, "amount"),
    ("amount-comma", "PaymentRecord", lambda w: _payment(w, amount="1,5"), V, "amount"),
    ("amount-text", "PaymentRecord", lambda w: _payment(w, amount="lots"), V, "amount"),
    ("amount-huge", "PaymentRecord", lambda w: _payment(w, amount="1" + "0" * 20), V, "amount"),
    ("bool-wrong", "PaymentRecord", lambda w: _payment(w, allocate="maybe"), V, "allocate"),
    (
        "date-wrong",
        "PaymentRecord",
        lambda w: _payment(w, received_on="2026-13-01"),
        V,
        "received_on",
    ),
    ("enum-wrong", "PaymentRecord", lambda w: _payment(w, method="barter"), V, "method"),
    ("quantity-exponent", "UsageReport", lambda w: _usage(w, quantity="1E+2"), V, "quantity"),
    ("time-naive", "UsageReport", lambda w: _usage(w, timestamp=NAIVE), V, "timestamp"),
    ("time-date-only", "UsageReport", lambda w: _usage(w, timestamp="2026-12-02"), V, "timestamp"),
    (
        "time-bad-offset",
        "UsageReport",
        lambda w: _usage(w, timestamp="2026-12-02T00:57:10+25:00"),
        V,
        "timestamp",
    ),
    ("audit-since-naive", "AuditLogList", lambda w: {"since": NAIVE}, V, "since"),
    ("audit-until-naive", "AuditLogList", lambda w: {"until": NAIVE}, V, "until"),
    ("batch-empty", "UsageReportBatch", lambda w: {"records": []}, V, "records"),
    (
        "batch-item-exponent",
        "UsageReportBatch",
        lambda w: _batch(w, _rec(w), _rec(w, record_id="u2", quantity="1E+2")),
        V,
        "records[1].quantity",
    ),
    (
        "batch-item-naive",
        "UsageReportBatch",
        lambda w: _batch(w, _rec(w, timestamp=NAIVE)),
        V,
        "records[0].timestamp",
    ),
    (
        "batch-item-missing",
        "UsageReportBatch",
        lambda w: _batch(w, _rec(w), _rec(w, record_id="u2", quantity=None)),
        V,
        "records[1].quantity",
    ),
    (
        "batch-item-unknown",
        "UsageReportBatch",
        lambda w: _batch(w, _rec(w) | {"colour": "red"}),
        V,
        "records[0].colour",
    ),
    (
        "order-lines-empty",
        "OrderPlace",
        lambda w: {"account_id": w["account"], "lines": [], "on_account": True},
        V,
        "lines",
    ),
    (
        "order-line-int",
        "OrderPlace",
        lambda w: {
            "account_id": w["account"],
            "lines": [{"plan_id": "one", "period_count": 1, "period_unit": "month"}],
        },
        V,
        "lines[0].plan_id",
    ),
    ("user-no-roles", "UserCreate", lambda w: _user(w), V, "roles"),
    ("user-empty-roles", "UserCreate", lambda w: _user(w, roles=[]), V, "roles"),
    ("account-no-name", "AccountCreate", lambda w: _without(_account(), "name"), V, "name"),
    ("account-no-type", "AccountCreate", lambda w: _without(_account(), "type"), V, "type"),
    ("account-long-name", "AccountCreate", lambda w: _account(name="x" * 70_000), V, "name"),
    ("id-not-int", "AccountGet", lambda w: {"account_id": "seven"}, V, "account_id"),
    ("id-decimal", "AccountGet", lambda w: {"account_id": "1.5"}, V, "account_id"),
    ("id-too-big", "AccountGet", lambda w: {"account_id": str(2**63)}, V, "account_id"),
    ("id-too-small", "AccountGet", lambda w: {"account_id": str(-(2**63) - 1)}, V, "account_id"),
    ("id-missing", "AccountGet", lambda w: {}, V, "account_id"),
    (
        "param-unknown",
        "AccountGet",
        lambda w: {"account_id": w["account"], "colour": "red"},
        V,
        "colour",
    ),
    (
        "op-unknown",
        "AccountFrobnicate",
        lambda w: {"account_id": 1},
        "Client.UnknownOperation",
        None,
    ),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,op,make,code,field", CASES, ids=[c[0] for c in CASES])
def test_both_protocols_refuse_alike(api, env, world, case_id, op, make, code, field):
    params = make(world)
    before = counts(env)
    soap_code, soap_field = soap_fault(api, op, params)
    rpc_code, rpc_message = xmlrpc_fault(api, op, params)
    assert (soap_code, soap_field) == (code, field), case_id
    assert rpc_code == code, rpc_message
    if field is not None:
        # the XML-RPC faultString is "code: field: message"
        assert rpc_message.startswith(f"{field}: "), rpc_message
    assert counts(env) == before, case_id


def test_the_good_inputs_next_to_them_are_accepted(api, env, world):
    """The rows above differ from a good call by their one bad value."""
    rpc = api.xmlrpc()
    assert Decimal(rpc.PaymentRecord(_payment(world))["amount"]) == Decimal("100.00")
    assert rpc.UsageReport(_usage(world))["accepted"] == 1
    offset = world["when"].replace("Z", "+00:00")
    assert rpc.AuditLogList({"since": offset})["total"] >= 1
    soap = api.soap()
    got = soap.UsageReport(**_usage(world, record_id="wire-u2", quantity="2.5"))
    assert got.accepted == 1
