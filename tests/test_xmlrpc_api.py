"""What an XML-RPC user needs without the WSDL: ``system.methodHelp`` that
describes nested structs, and calls from clients (PHP's xmlrpc extension)
that encode an empty struct as an empty array."""

from __future__ import annotations

import base64
import dataclasses
import xmlrpc.client

import requests

from pba_server.api.xmlrpc import method_help
from pba_server.bootstrap import load_operations
from pba_server.catalog.types import PlanPeriod
from pba_server.core.operations import Operation, Param
from pba_server.orders.types import OrderLineInput
from pba_server.payments.types import SettingValue
from tests.conftest import ADMIN_PASSWORD

AUTH = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
EMPTY_ARRAY = "<param><value><array><data/></array></value></param>"


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _struct_section(help_text: str, name: str) -> str:
    """The lines describing ``struct name`` in a methodHelp text."""
    _, _, rest = help_text.partition(f"\n  struct {name}:\n")
    assert rest, f"struct {name} is not described:\n{help_text}"
    return rest.split("\n\n  struct ")[0]


def test_method_help_describes_nested_struct_fields(api):
    rpc = api.xmlrpc()
    plan = rpc.system.methodHelp("PlanCreate")
    periods = _struct_section(plan, "PlanPeriod")
    for name in _field_names(PlanPeriod):
        assert f"    {name}: " in periods, name
    assert "    count: int\n" in periods
    assert "    unit: one of day|month|year\n" in periods
    assert "    renewal_fee: decimal string (optional)" in periods
    # the struct's own doc comes along
    assert "The setup fee is charged once" in periods
    # the result struct is described too
    assert "    periods: array of struct PlanPeriod (optional)" in _struct_section(plan, "PlanInfo")

    # two levels down: OrderPlace -> OrderLineInput -> ResourceQuantity
    order = rpc.system.methodHelp("OrderPlace")
    lines = _struct_section(order, "OrderLineInput")
    for name in _field_names(OrderLineInput):
        assert f"    {name}: " in lines, name
    assert "    resources: array of struct ResourceQuantity (optional)" in lines
    _struct_section(order, "ResourceQuantity")

    settings = _struct_section(rpc.system.methodHelp("PluginConfigure"), "SettingValue")
    for name in _field_names(SettingValue):
        assert f"    {name}: str\n" in settings + "\n", name


@dataclasses.dataclass
class _Node:
    """A tree node."""

    name: str
    children: list[_Node]
    parent: _Node | None = None


def _node_op(node: _Node) -> _Node:
    return node


def test_method_help_stops_at_recursive_structs():
    node_op = Operation(
        name="NodeEcho",
        func=_node_op,
        params=(Param("node", _Node, True, None),),
        result=_Node,
        roles=frozenset({"admin"}),
        mutating=False,
        idempotent=False,
        doc="Echo a tree.",
    )
    text = method_help(node_op)
    assert text.count("  struct _Node:") == 1
    section = _struct_section(text, "_Node")
    assert "    A tree node.\n" in section
    assert "    name: str\n" in section
    assert "    children: array of struct _Node\n" in section
    assert "    parent: struct _Node (optional)" in section


def test_method_help_names_each_struct_once_for_every_operation():
    for name, op in load_operations().items():
        headers = [line for line in method_help(op).splitlines() if line.startswith("  struct ")]
        assert len(headers) == len(set(headers)), name


def _post(server: str, method: str, params: str) -> requests.Response:
    body = (
        f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName>'
        f"<params>{params}</params></methodCall>"
    ).encode()
    return requests.post(
        f"{server}/xmlrpc",
        data=body,
        headers={"Content-Type": "text/xml", "Authorization": AUTH},
        timeout=30,
    )


def _result(resp: requests.Response) -> object:
    assert resp.status_code == 200, resp.text
    (value,), _ = xmlrpc.client.loads(resp.content, use_builtin_types=True)
    return value


def _fault(resp: requests.Response) -> xmlrpc.client.Fault:
    assert resp.status_code == 200, resp.text
    try:
        xmlrpc.client.loads(resp.content)
    except xmlrpc.client.Fault as fault:
        return fault
    raise AssertionError(f"not a fault: {resp.text}")


def test_empty_array_is_no_parameters(server, api):
    api.xmlrpc().AccountCreate({"type": "customer_personal", "name": "Bob Buyer"})
    # how PHP's xmlrpc_encode_request('WhoAmI', [[]]) arrives
    who = _result(_post(server, "WhoAmI", EMPTY_ARRAY))
    assert isinstance(who, dict) and who["login"] == "admin"
    # an operation whose parameters are all optional
    accounts = _result(_post(server, "AccountList", EMPTY_ARRAY))
    assert isinstance(accounts, dict)
    assert [a["type"] for a in accounts["items"]] == ["customer_personal"]
    assert accounts["offset"] == 0 and accounts["limit"] == 100


def test_empty_array_is_still_checked_for_required_parameters(server, api):
    fault = _fault(_post(server, "AccountGet", EMPTY_ARRAY))
    assert fault.faultCode == 4001
    assert fault.faultString.startswith("Client.Validation:")
    assert "account_id" in fault.faultString


def test_non_empty_array_is_a_fault(server, api):
    values = "<value><int>1</int></value>"
    for params in (
        f"<param><value><array><data>{values}</data></array></value></param>",
        f"<param>{values}</param>",
        f"{EMPTY_ARRAY}{EMPTY_ARRAY}",
    ):
        fault = _fault(_post(server, "AccountList", params))
        assert fault.faultCode == 4001, params
        assert fault.faultString.startswith(
            "Client.Validation: AccountList takes one struct of named parameters"
        ), fault.faultString
