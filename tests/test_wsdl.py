"""The committed WSDL (wsdl/pba.wsdl) is what the server serves, and clients can use it.

When an operation or type changes this test fails; regenerate the file from
the repository root and commit it with the change:

    python -m pba_server.cli export-wsdl        # or: pba-server export-wsdl

Only the soap:address location differs between the file (the default
http://127.0.0.1:8080/soap) and a running server (its own host and port).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import zeep
from lxml import etree

from pba_server import bootstrap, cli
from pba_server.core.schema import fields_of, list_item, unwrap_optional

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "wsdl" / "pba.wsdl"
TNS = "urn:pba-server:v1"
WSDL = "{http://schemas.xmlsoap.org/wsdl/}"
SOAP = "{http://schemas.xmlsoap.org/wsdl/soap/}"
XSD = "{http://www.w3.org/2001/XMLSchema}"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")  # an absolute URI: scheme ':' ...
ADDRESS = re.compile(rb'(<wsdlsoap11:address location=")[^"]*(")')


def normalized(doc: bytes) -> bytes:
    out, n = ADDRESS.subn(rb"\1ADDRESS\2", doc)
    assert n == 1, "expected exactly one soap:address"
    return out


@pytest.fixture(scope="module")
def wsdl() -> etree._Element:
    return etree.fromstring(COMMITTED.read_bytes())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_committed_wsdl_is_what_the_server_serves(server):
    served = requests.get(f"{server}/soap?wsdl", timeout=30)
    assert served.status_code == 200
    assert normalized(served.content) == normalized(COMMITTED.read_bytes()), (
        "wsdl/pba.wsdl is stale: run `python -m pba_server.cli export-wsdl` "
        "from the repository root and commit the result"
    )


def test_export_wsdl_writes_the_committed_file(tmp_path, capsys):
    out = tmp_path / "sub" / "pba.wsdl"
    assert cli.main(["export-wsdl", "--output", str(out)]) == 0
    assert out.read_bytes() == COMMITTED.read_bytes()
    assert b'location="http://127.0.0.1:8080/soap"' in out.read_bytes()


def test_target_namespace_and_document_literal(wsdl):
    assert wsdl.get("targetNamespace") == TNS
    schemas = list(wsdl.iter(f"{XSD}schema"))
    assert [s.get("targetNamespace") for s in schemas] == [TNS]
    (binding,) = wsdl.findall(f"{WSDL}binding")
    assert binding.find(f"{SOAP}binding").get("style") == "document"
    for op in binding.findall(f"{WSDL}operation"):
        assert op.find(f"{SOAP}operation").get("style") in (None, "document")
        uses = [el.get("use") for el in op.iter(f"{SOAP}body", f"{SOAP}fault")]
        assert uses and set(uses) == {"literal"}, op.get("name")
    # wrapped: each message is one part naming an element, not a type
    for message in wsdl.findall(f"{WSDL}message"):
        (part,) = message.findall(f"{WSDL}part")
        assert part.get("element") and not part.get("type")


def test_every_namespace_is_a_uri(wsdl):
    """A non-URI namespace (spyne's Mandatory.* leaks 'spyne.model...') breaks wsimport."""
    found = set()
    for el in wsdl.iter():
        found.update(el.nsmap.values())
        for attr in ("targetNamespace", "namespace"):
            if el.get(attr) is not None:
                found.add(el.get(attr))
    bad = sorted(ns for ns in found if not URI.match(ns or ""))
    assert not bad, bad


def _complex_type(wsdl, name: str) -> etree._Element:
    (ct,) = [c for c in wsdl.iter(f"{XSD}complexType") if c.get("name") == name]
    return ct


def _element(ct: etree._Element, name: str) -> etree._Element:
    (el,) = [e for e in ct.iter(f"{XSD}element") if e.get("name") == name]
    return el


def _dataclasses_of(tp, seen: set) -> None:
    inner = unwrap_optional(tp)[0]
    item = list_item(inner)
    if item is not None:
        _dataclasses_of(item, seen)
    elif hasattr(inner, "__dataclass_fields__") and inner not in seen:
        seen.add(inner)
        for _n, t, _r in fields_of(inner):
            _dataclasses_of(t, seen)


def test_required_parameters_and_fields_are_not_optional(wsdl):
    ops = bootstrap.load_operations()
    checked = 0
    types: set = set()
    for op in ops.values():
        ct = _complex_type(wsdl, op.name)
        for p in op.params:
            el = _element(ct, p.name)
            optional = not p.required or unwrap_optional(p.type)[1]
            if not optional:  # a required list parameter needs one item, too
                assert el.get("minOccurs") in (None, "1"), f"{op.name}.{p.name}"
                assert el.get("nillable") in (None, "false"), f"{op.name}.{p.name}"
                checked += 1
            else:
                assert el.get("minOccurs") == "0", f"{op.name}.{p.name} should be optional"
        for p in op.params:
            _dataclasses_of(p.type, types)
        _dataclasses_of(op.result, types)
    for cls in types:
        ct = _complex_type(wsdl, cls.__name__)
        for name, tp, required in fields_of(cls):
            if required and not unwrap_optional(tp)[1] and list_item(tp) is None:
                assert _element(ct, name).get("minOccurs") in (None, "1"), f"{cls.__name__}.{name}"
                checked += 1
    assert checked > 20


def test_every_operation_declares_the_typed_pba_fault(wsdl):
    ops = bootstrap.load_operations()
    (port_type,) = wsdl.findall(f"{WSDL}portType")
    declared = {op.get("name"): op for op in port_type.findall(f"{WSDL}operation")}
    assert set(declared) == set(ops)
    for name, op in declared.items():
        faults = op.findall(f"{WSDL}fault")
        assert [f.get("name") for f in faults] == ["PbaFault"], name
        assert faults[0].get("message") == "tns:PbaFault"
    (binding,) = wsdl.findall(f"{WSDL}binding")
    for op in binding.findall(f"{WSDL}operation"):
        assert [f.get("name") for f in op.findall(f"{WSDL}fault")] == ["PbaFault"]
    (message,) = [m for m in wsdl.findall(f"{WSDL}message") if m.get("name") == "PbaFault"]
    assert message.find(f"{WSDL}part").get("element") == "tns:PbaFault"
    detail = _complex_type(wsdl, "PbaFault")
    for field in ("code", "number", "message"):
        assert _element(detail, field).get("minOccurs") is None
    assert {e.get("name") for e in detail.iter(f"{XSD}element")} >= {"field", "correlation_id"}


def test_zeep_loads_the_committed_wsdl():
    client = zeep.Client(str(COMMITTED), settings=zeep.Settings(strict=True))
    service = client.bind("PbaService", "PbaServer")
    ops = bootstrap.load_operations()
    for name in ops:
        assert getattr(service, name)
    binding = client.wsdl.services["PbaService"].ports["PbaServer"].binding
    assert set(binding._operations) == set(ops)
    fault = client.get_element("{urn:pba-server:v1}PbaFault")
    assert fault(code="Client.NotFound", number=4040, message="x").code == "Client.NotFound"
