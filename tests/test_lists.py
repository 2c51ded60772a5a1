"""Every ``*List`` answers the documented page (docs/api.md): it takes
``offset`` and ``limit`` (1..1000) and answers ``{items, total, offset,
limit}``. ``EventList`` alone pages by cursor (``after`` -> ``next_cursor``,
README: Events)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pba_server.bootstrap import load_operations
from pba_server.core.operations import Operation
from pba_server.core.schema import fields_of, list_item
from tests.catalog_support import Caller, service_ctx
from tests.prov_support import plan
from tests.support import page_items

CURSOR_LISTS = {"EventList"}
# fields a page carries after the four (README: Billing, numbering)
EXTRA = {"InvoiceList": ["next_cursor"]}
PAGE = ["items", "total", "offset", "limit"]


def _lists() -> dict[str, Operation]:
    return {name: op for name, op in load_operations().items() if name.endswith("List")}


def test_there_are_lists_to_check():
    # a guard against the table failing to load and the loops below passing empty
    assert len(_lists()) >= 30
    assert set(_lists()) >= CURSOR_LISTS


def test_every_list_takes_offset_and_limit_and_answers_a_page():
    wrong = []
    for name, op in _lists().items():
        params = {p.name: p for p in op.params}
        if name in CURSOR_LISTS:
            assert {"after", "limit"} <= set(params), name
            assert [f for f, _, _ in fields_of(op.result)] == ["items", "next_cursor"], name
            continue
        offset, limit = params.get("offset"), params.get("limit")
        if (
            offset is None
            or limit is None
            or [p.name for p in op.params[-2:]] != ["offset", "limit"]
            or (offset.type, offset.required, offset.default) != (int, False, 0)
            or (limit.type, limit.required, limit.default) != (int, False, 100)
        ):
            wrong.append(f"{name}: parameters {[p.name for p in op.params]}")
            continue
        result = op.result
        if not (dataclasses.is_dataclass(result) and isinstance(result, type)):
            wrong.append(f"{name}: answers {result}")
            continue
        shape = [(f, t) for f, t, _ in fields_of(result)]
        item = list_item(shape[0][1]) if shape else None
        if (
            [f for f, _ in shape] != PAGE + EXTRA.get(name, [])
            or not dataclasses.is_dataclass(item)
            or [t for _, t in shape[1:4]] != [int, int, int]
            or not result.__name__.endswith("Page")
        ):
            wrong.append(f"{name}: answers {result.__name__} {shape}")
    assert wrong == []


@pytest.fixture(params=["soap", "xmlrpc"])
def call(request: pytest.FixtureRequest, api: Any) -> Caller:
    return Caller(api, request.param)


def _required_args(call: Caller, env: Any) -> dict[str, dict[str, Any]]:
    """Arguments for the lists that need some: a thing of the right kind."""
    me = call("WhoAmI")["account_id"]
    basic = call("AccountCreate", type="reseller", name="Basic R", partner_level="basic")
    advanced = call("AccountCreate", type="reseller", name="Adv R", partner_level="advanced")
    version = plan(env)
    with service_ctx(env) as ctx:
        from pba_server.catalog.models import PlanVersion

        plan_id = ctx.session.get_one(PlanVersion, version).plan_id
    return {
        "ContactList": {"account_id": me},
        "PaymentMethodList": {"account_id": me},
        "PlanMigrationList": {"plan_id": plan_id},
        "ResellerPriceList": {"reseller_id": basic["id"]},
        "WholesalePriceList": {"reseller_id": advanced["id"]},
    }


def test_every_list_answers_a_page_over_both_protocols(call: Caller, env: Any):
    args = _required_args(call, env)
    for name, op in _lists().items():
        if name in CURSOR_LISTS:
            page = call(name, limit=1)
            assert set(page) == {"items", "next_cursor"}, name
            continue
        kw = args.get(name, {})
        assert {p.name for p in op.params if p.required} <= set(kw), name
        page = call(name, limit=1, **kw)
        assert list(page) == PAGE + EXTRA.get(name, []), (name, page)
        items = page_items(page)
        assert (page["offset"], page["limit"]) == (0, 1), name
        assert len(items) <= 1 and page["total"] >= len(items), name
        # past the end: no items, the same total
        beyond = call(name, offset=page["total"], **kw)
        assert page_items(beyond) == [] and beyond["total"] == page["total"], name


def test_pages_of_a_catalog_list_add_up(call: Caller):
    every = page_items(call("EventTypeList", limit=1000))
    assert len(every) > 10
    seen: list[str] = []
    for offset in range(0, len(every), 7):
        page = call("EventTypeList", offset=offset, limit=7)
        assert page["total"] == len(every) and page["offset"] == offset and page["limit"] == 7
        seen.extend(t["name"] for t in page_items(page))
    assert seen == [t["name"] for t in every]


def test_pages_of_a_database_list_add_up(call: Caller):
    acc = call(
        "AccountCreate",
        type="customer_business",
        name="Many Contacts Ltd",
        contacts=[
            {"kind": "billing", "name": f"Person {i}", "email": f"p{i}@many.example"}
            for i in range(5)
        ],
    )
    first = call("ContactList", account_id=acc["id"], limit=2)
    second = call("ContactList", account_id=acc["id"], offset=2, limit=2)
    last = call("ContactList", account_id=acc["id"], offset=4, limit=2)
    assert [p["total"] for p in (first, second, last)] == [5, 5, 5]
    names = [c["name"] for p in (first, second, last) for c in page_items(p)]
    assert names == [f"Person {i}" for i in range(5)]


@pytest.mark.parametrize("op", ["TaskList", "ServiceList", "OperationList", "CurrencyList"])
def test_a_bad_page_is_refused_naming_the_field(call: Caller, op: str):
    for kw, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        code, message = call.fault(op, **kw)
        assert code == "Client.Validation", (op, kw)
        assert message.startswith(f"{field}:"), (op, kw, message)
