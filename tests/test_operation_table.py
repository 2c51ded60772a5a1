"""One operation table, two protocols: both expose exactly the same operations
with the same parameters, and declare the same faults."""

from __future__ import annotations

import pytest
from lxml import etree

from pba_server.bootstrap import load_operations
from pba_server.cli import wsdl_text
from pba_server.core.context import CallContext
from pba_server.core.operations import operation

XS = "{http://www.w3.org/2001/XMLSchema}"
WSDL = "{http://schemas.xmlsoap.org/wsdl/}"


def test_wsdl_operations_and_parameters_match_the_table():
    ops = load_operations()
    doc = etree.fromstring(wsdl_text())
    port_ops = {o.get("name"): o for pt in doc.iter(f"{WSDL}portType") for o in pt}
    assert set(port_ops) == set(ops)
    types = {t.get("name"): t for t in doc.iter(f"{XS}complexType")}
    for name, op in ops.items():
        elements = types[name].findall(f"{XS}sequence/{XS}element")
        assert [e.get("name") for e in elements] == [p.name for p in op.params], name
        for e, p in zip(elements, op.params, strict=True):
            optional = e.get("minOccurs") == "0"
            assert optional == (not p.required), (name, p.name)
        faults = port_ops[name].findall(f"{WSDL}fault")
        assert [f.get("name") for f in faults] == ["PbaFault"], name
        assert op.doc, f"{name} has no documentation"


def test_xmlrpc_lists_the_same_operations(api):
    listed = set(api.xmlrpc().system.listMethods())
    assert set(load_operations()) <= listed
    assert listed - set(load_operations()) == {
        "system.listMethods",
        "system.methodHelp",
        "system.methodSignature",
    }


def test_creating_operations_take_an_idempotency_key():
    for name, op in load_operations().items():
        if name.endswith("Create") or name.endswith("Add"):
            assert op.idempotent, name
            assert op.params[-1].name == "idempotency_key"


def test_every_mutating_operation_takes_an_idempotency_key():
    ops = load_operations()
    for name, op in ops.items():
        keys = [p for p in op.params if p.name == "idempotency_key"]
        if op.mutating:
            assert len(keys) == 1, name
        else:
            assert not keys, name
    # the dispatcher replays the first answer of all but those that answer a
    # repeat themselves (a charge reports where it is now)
    assert {n for n, op in ops.items() if op.mutating and not op.idempotent} == {
        "PaymentCharge",
        "PaymentRefund",
    }


def test_the_table_refuses_a_key_on_a_read_and_a_key_that_is_not_text():
    def read(ctx: CallContext, *, idempotency_key: str) -> int:
        return 1

    def write(ctx: CallContext, *, idempotency_key: int) -> int:
        return 1

    with pytest.raises(ValueError, match="changes nothing"):
        operation("ZzRead", roles=frozenset())(read)
    with pytest.raises(TypeError, match="must be a str"):
        operation("ZzWrite", roles=frozenset(), mutating=True)(write)
