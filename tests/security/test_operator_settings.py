"""Issue 14, items 1 and 2: tenants never name a program, a file, a host or a
URL. Each attack is made through the real SOAP and XML-RPC endpoints as a
reseller's and as a customer's administrator, and refused with
``Client.OperatorSetting``; the provider's administrators (the operator) may
still configure what they did before."""

from __future__ import annotations

import ast
import re
import stat
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pba_server.sdk import SettingField
from pba_server.sdk.provisioning import Done, ServiceRequest
from tests.catalog_support import Caller
from tests.support import page_items

ROOT = Path(__file__).resolve().parents[2]
PW = "tenant-pass-1"


@dataclass
class Tenant:
    kind: str
    account_id: int
    call: Caller


@pytest.fixture(params=["soap", "xmlrpc"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["reseller", "customer"])
def tenant(request: pytest.FixtureRequest, api: Any, protocol: str) -> Tenant:
    """An administrator of a reseller or of a customer, calling over ``protocol``."""
    admin = Caller(api, "soap")
    if request.param == "reseller":
        acc = admin(
            "AccountCreate", type="reseller", name="Shady Reseller", partner_level="advanced"
        )
    else:
        acc = admin("AccountCreate", type="customer_business", name="Shady Customer Ltd")
    login = f"{request.param}-admin"
    admin(
        "UserCreate",
        account_id=acc["id"],
        login=login,
        password=PW,
        full_name="Tenant Admin",
        roles=["admin"],
    )
    return Tenant(request.param, acc["id"], Caller(api, protocol, login, PW))


def executable(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(f"#!/usr/bin/env python3\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def no_instances(tenant: Tenant) -> None:
    assert page_items(tenant.call("PluginInstanceList")) == []


# ---------------------------------------------------------------- item 1: programs


def test_tenant_cannot_make_the_script_module_run_a_shell(tenant, tmp_path):
    """The attack: a script instance with executable=/bin/sh, then an order
    parameter ``$(id > FILE)`` that sh would run. Refused at the first step,
    by both operations that configure a processing module."""
    # (a customer has no processing modules at all: Forbidden before that)
    module_refusal = "Client.OperatorSetting" if tenant.kind == "reseller" else "Client.Forbidden"
    for op, expected in (
        ("PluginConfigure", "Client.OperatorSetting"),
        ("ProcessingModuleConfigure", module_refusal),
    ):
        code, msg = tenant.call.fault(
            op,
            plugin="script",
            name="pwn",
            settings=[{"name": "executable", "value": "/bin/sh"}],
        )
        assert code == expected, (op, code, msg)
    # not even without the program setting: the plugin itself is the operator's
    code, _ = tenant.call.fault("PluginConfigure", plugin="script", name="pwn2", settings=[])
    assert code == "Client.OperatorSetting"
    no_instances(tenant)


def test_the_operator_still_configures_programs(api, protocol, tmp_path):
    call = Caller(api, protocol)
    prog = executable(tmp_path, "import sys; sys.stdin.read(); print('{}')")
    inst = call(
        "PluginConfigure",
        plugin="script",
        name="platform",
        settings=[{"name": "executable", "value": str(prog)}],
    )
    assert inst["plugin"] == "script" and inst["status"] == "active"
    log = call(
        "PluginConfigure",
        plugin="log_channel",
        name="log",
        settings=[{"name": "path", "value": str(tmp_path / "n.log")}],
    )
    assert log["plugin"] == "log_channel"


def test_script_gets_the_operation_on_stdin_never_through_a_shell(tmp_path):
    """Even a program the operator chose never sees a shell: the order
    parameter arrives as data in the JSON on stdin, and is not run."""
    from plugins.script import ScriptModule

    seen = tmp_path / "stdin.json"
    pwned = tmp_path / "pwned"
    prog = executable(
        tmp_path, f"import sys; open({str(seen)!r}, 'w').write(sys.stdin.read()); print('{{}}')"
    )
    module = ScriptModule({"executable": str(prog)})
    evil = f"$(id > {pwned}); `id > {pwned}`"
    result = module.perform(
        ServiceRequest(
            key="op-1",
            action="create",
            service_id=1,
            subscription_id=1,
            account_id=1,
            account_name="A; id",
            service_type="hosting",
            template="t",
            module_settings={},
            parameters={"hostname": evil},
            limits={"disk": Decimal("1")},
        )
    )
    assert isinstance(result, Done)
    assert evil in seen.read_text()
    assert not pwned.exists()


SHELL_CALLS = re.compile(r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|\bpopen2\b")


def test_no_shell_anywhere_in_the_code_base():
    hits = []
    for folder in ("pba_server", "plugins", "scripts", "migrations"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if SHELL_CALLS.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


# ---------------------------------------------------------------- item 2: files


def test_tenant_cannot_point_a_channel_at_a_server_file(tenant, tmp_path):
    """The attack: a log_channel instance with path=<any file the server can
    write>, then an event handler appending chosen text to it."""
    target = tmp_path / "authorized_keys"
    code, msg = tenant.call.fault(
        "PluginConfigure",
        plugin="log_channel",
        name="log",
        settings=[{"name": "path", "value": str(target)}],
    )
    assert code == "Client.OperatorSetting", msg
    assert not target.exists()
    no_instances(tenant)


def test_tenant_cannot_set_a_path_of_a_plugin_it_may_configure(tenant, tmp_path):
    """sandbox_card may be a tenant's, its state_file (a path) may not."""
    target = tmp_path / "state.json"
    code, msg = tenant.call.fault(
        "PluginConfigure",
        plugin="sandbox_card",
        name="cards",
        settings=[
            {"name": "api_key", "value": "sk_test_tenant"},
            {"name": "state_file", "value": str(target)},
        ],
    )
    assert code == "Client.OperatorSetting" and "state_file" in msg
    assert not target.exists()
    inst = tenant.call(
        "PluginConfigure",
        plugin="sandbox_card",
        name="cards",
        settings=[{"name": "api_key", "value": "sk_test_tenant"}],
    )
    assert inst["account_id"] == tenant.account_id and not inst.get("settings")


# ---------------------------------------------------------------- item 5: endpoints


@pytest.mark.parametrize(
    ("plugin", "settings", "operator_setting"),
    [
        (
            "stripe",
            {"api_key": "sk_test_x", "api_base": "http://169.254.169.254/latest"},
            "api_base",
        ),
        ("upstream_pba", {"url": "http://10.0.0.5:22/soap", "login": "a", "password": "b"}, "url"),
        (
            "upstream_pba_registrar",
            {"url": "http://127.0.0.1:6379/", "login": "a", "password": "b"},
            "url",
        ),
        ("epp", {"host": "169.254.169.254", "username": "a", "password": "b"}, "host"),
        ("epp", {"host": "registry.example", "port": "22", "username": "a"}, "host"),
    ],
)
def test_tenant_cannot_set_an_endpoint(tenant, plugin, settings, operator_setting):
    """The port scanner: endpoints a tenant chose, answers telling open ports
    from closed ones. A tenant sets no endpoint at all."""
    code, msg = tenant.call.fault(
        "PluginConfigure",
        plugin=plugin,
        name="probe",
        settings=[{"name": k, "value": v} for k, v in settings.items()],
    )
    assert code == "Client.OperatorSetting" and operator_setting in msg
    no_instances(tenant)


def test_tenant_gateway_with_its_own_key_uses_the_default_endpoint(tenant):
    """A tenant may still have its own Stripe instance with its own secret key;
    the endpoint is the default (the operator's)."""
    inst = tenant.call(
        "PluginConfigure",
        plugin="stripe",
        name="my stripe",
        settings=[{"name": "api_key", "value": "sk_test_tenant_key"}],
    )
    assert inst["account_id"] == tenant.account_id
    assert not inst.get("settings")  # no api_base stored: the default applies
    assert inst["secret_settings_set"] == ["api_key"]
    # a required endpoint without a default: the tenant cannot have that plugin
    code, msg = tenant.call.fault(
        "PluginConfigure",
        plugin="upstream_pba",
        name="up",
        settings=[{"name": "login", "value": "a"}, {"name": "password", "value": "b"}],
    )
    assert code == "Client.OperatorSetting" and "'url'" in msg


def test_plugin_list_tells_which_settings_are_the_operators(api, protocol):
    call = Caller(api, protocol)
    plugins = {p["name"]: p for p in page_items(call("PluginList"))}
    assert plugins["script"]["operator_only"] and plugins["log_channel"]["operator_only"]
    assert not plugins["stripe"]["operator_only"]
    kinds = {s["name"]: s["kind"] for s in plugins["stripe"]["settings"]}
    assert kinds == {"api_key": "secret", "api_base": "url", "timeout": "plain"}
    epp = {s["name"]: s["kind"] for s in plugins["epp"]["settings"]}
    assert epp["host"] == "host" and epp["port"] == "port" and epp["ca_file"] == "path"
    assert {s["name"]: s["kind"] for s in plugins["script"]["settings"]}["executable"] == (
        "program"
    )


# ---------------------------------------------------------------- the SDK's declaration


ENDPOINT_NAMES = re.compile(r"(^|_)(url|uri|host|port|path|file|dir|executable|command|base)$")


def test_every_plugin_declares_the_kind_of_its_endpoint_settings():
    """A setting whose name says it is a URL, host, port, path or program is
    declared with that kind, so PluginConfigure keeps it from tenants."""
    from pba_server.sdk import loader

    undeclared = []
    for p in loader.plugins().values():
        if p.info is None:
            continue
        for f in p.info.settings:
            if ENDPOINT_NAMES.search(f.name) and not f.operator_only:
                undeclared.append(f"{p.name}.{f.name}")
    assert undeclared == []


def test_setting_kinds():
    assert SettingField("k", secret=True).kind == "secret"
    assert SettingField("k", kind="secret").secret
    assert SettingField("u", kind="url").operator_only
    assert not SettingField("t").operator_only
    with pytest.raises(ValueError):
        SettingField("u", kind="url", secret=True)


def test_plugins_reach_the_network_only_through_the_sdk():
    """plugins/*.py import no socket, HTTP or URL library: their connections
    go through self.net (the address policy)."""
    forbidden = ("socket", "requests", "urllib", "urllib3", "http", "httpx", "aiohttp")
    forbidden += ("ftplib", "smtplib", "telnetlib", "asyncio", "subprocess_tee")
    bad = []
    for path in sorted((ROOT / "plugins").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in forbidden:
                    bad.append(f"{path.name}: import {name}")
    assert bad == []
