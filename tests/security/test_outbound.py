"""Issue 14, items 5 and 11: one outgoing-address policy for webhooks and for
every connection a plugin makes (the SDK's net helper), with IPv4 embedded in
IPv6 judged too, the resolved address checked at connect time, redirects
re-checked, and one generic message for every connection failure."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from pba_server.core import netpolicy
from pba_server.sdk import GatewayError, loader
from pba_server.sdk.net import GENERIC, ConnectionFailed, Net
from pba_server.sdk.registrar import RegistrarUnavailable
from tests.catalog_support import Caller
from tests.conftest import TEST_NETWORKS

METADATA = "169.254.169.254"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def generic(text: str) -> str:
    """The message with its correlation id taken out."""
    return re.sub(r"\(ref [0-9a-f]{12}\)", "(ref)", text)


# ---------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1 (the example)
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:0a00:0001::",  # 6to4 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 (well-known prefix) of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "64:ff9b:1::c0a8:101",  # NAT64 (local-use prefix) of 192.168.1.1
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "::ffff:0:7f00:1",  # IPv4-translated
        "::7f00:1",  # IPv4-compatible (deprecated)
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_ipv4_inside_ipv6_is_judged_by_the_ipv4_address(address):
    assert not netpolicy.is_public(address)
    assert not netpolicy.allowed(address)  # not even with the tests' loopback allowed
    with pytest.raises(netpolicy.RefusedAddress):
        netpolicy.resolve(address, 80)


@pytest.mark.parametrize(
    "address", ["2002:5db8:d822::1", "64:ff9b::808:808", "::ffff:8.8.8.8", "8.8.8.8"]
)
def test_public_ipv4_inside_ipv6_stays_public(address):
    assert netpolicy.is_public(address)


def test_the_operator_allows_named_private_networks_only():
    strict = netpolicy.Policy()
    registry = netpolicy.Policy(allowed_networks=netpolicy.parse_networks("10.20.0.0/16"))
    for address in ("10.20.1.2", "::ffff:10.20.1.2"):
        assert not netpolicy.allowed(address, strict)
        assert netpolicy.allowed(address, registry)
    for address in ("10.21.0.1", METADATA, "127.0.0.1", "2002:0a14:0102::1"):
        assert not netpolicy.allowed(address, registry)
    assert netpolicy.allowed(METADATA, netpolicy.Policy(allow_private=True))
    with pytest.raises(ValueError):
        netpolicy.parse_networks("10.0.0.0/33")


@pytest.mark.parametrize("who", ["provider", "reseller"])
@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_webhook_to_6to4_loopback_is_refused_through_the_api(api, protocol, who):
    """The issue's bypass: [2002:7f00:1::1] passed the webhook check."""
    call = Caller(api, protocol)
    if who == "reseller":
        acc = Caller(api, "soap")("AccountCreate", type="reseller", name="R", partner_level="basic")
        Caller(api, "soap")(
            "UserCreate",
            account_id=acc["id"],
            login="r-admin",
            password="reseller-pass-1",
            full_name="R",
            roles=["admin"],
        )
        call = Caller(api, protocol, "r-admin", "reseller-pass-1")
    for url in (
        "http://[2002:7f00:1::1]:6379/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
    ):
        code, msg = call.fault(
            "EventHandlerCreate", name="probe", event_types=["*"], action="webhook", url=url
        )
        assert code == "Client.Validation" and "non-public" in msg, url


# ---------------------------------------------------------------- the SDK's helper


@pytest.fixture
def redirector() -> Iterator[Any]:
    """GET /go?to=URL answers 302 to URL; GET /ok answers 200."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path.startswith("/go?to="):
                self.send_response(302)
                self.send_header("Location", unquote(self.path[len("/go?to=") :]))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.hits = hits  # type: ignore[attr-defined]
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def test_every_plugin_object_gets_the_net_helper():
    cls = loader.plugins()["manual"].cls
    obj = loader.instantiate(cls, {}, clock=cls.clock)
    assert isinstance(obj.net, Net)


def test_connect_refuses_forbidden_addresses_with_one_message(caplog):
    caplog.set_level(logging.WARNING, logger="pba.plugins.net")
    messages = []
    for host, port in ((METADATA, 80), ("2002:7f00:1::1", 22), ("127.0.0.1", closed_port())):
        with pytest.raises(ConnectionFailed) as exc:
            Net().connect(host, port, 2)
        messages.append(generic(str(exc.value)))
        # the detail is in the operator's log, under the id the tenant sees
        (record,) = [r for r in caplog.records if exc.value.reference in r.getMessage()]
        assert host in record.getMessage()
    assert messages == [f"{GENERIC} (ref)"] * 3  # open, closed or forbidden: one answer
    assert "non-public" in caplog.text and "refused" in caplog.text.lower()


def test_connect_checks_the_address_resolved_when_connecting(monkeypatch):
    """A name that resolved to an allowed address yesterday and to the
    metadata service now is refused now (DNS rebinding)."""
    real = socket.getaddrinfo
    answer = {"ip": "127.0.0.1"}

    def resolver(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "panel.rebind.test":
            return real(answer["ip"], *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        Net().connect("panel.rebind.test", port, 2).close()
        answer["ip"] = METADATA
        with pytest.raises(ConnectionFailed):
            Net().connect("panel.rebind.test", port, 2)
    finally:
        listener.close()


def test_http_session_rechecks_every_redirect(redirector):
    with Net().http_session() as session:
        assert session.get(f"{redirector.base}/go?to={redirector.base}/ok", timeout=5).text == "ok"
        for target in (
            f"http://{METADATA}/latest/meta-data/iam",
            "http://[2002:7f00:1::1]:6379/",
            "http://10.0.0.1/",
        ):
            with pytest.raises(ConnectionFailed) as exc:
                session.get(f"{redirector.base}/go?to={target}", timeout=5)
            assert generic(str(exc.value)) == f"{GENERIC} (ref)"
    assert redirector.hits.count("/ok") == 1


def test_http_session_ignores_proxies_from_the_environment(redirector, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://{METADATA}:3128")
    with Net().http_session() as session:
        assert session.get(f"{redirector.base}/ok", timeout=5).text == "ok"


def test_policy_refusal_under_the_strict_default(redirector):
    """Without the tests' loopback exception (production's default), even the
    loopback redirector is refused."""
    netpolicy.configure()
    try:
        with Net().http_session() as session, pytest.raises(ConnectionFailed):
            session.get(f"{redirector.base}/ok", timeout=5)
    finally:
        netpolicy.configure(allowed_networks=TEST_NETWORKS)
    assert redirector.hits == []


# ---------------------------------------------------------------- plugins use it


def test_stripe_connection_errors_are_one_generic_message():
    cls = loader.plugins()["stripe"].cls
    seen = set()
    for base in (
        f"http://{METADATA}",
        f"http://127.0.0.1:{closed_port()}",
        "http://[::ffff:a00:1]",
    ):
        gw = cls({"api_key": "sk_test_x", "api_base": base, "timeout": "2"})
        with pytest.raises(GatewayError) as exc:
            gw.charge(key="k", amount=Decimal("1"), currency="USD", token="pm_x", description="")
        seen.add(generic(str(exc.value)))
    assert seen == {f"cannot reach Stripe: {GENERIC} (ref)"}


def test_epp_connection_errors_are_one_generic_message():
    cls = loader.plugins()["epp"].cls
    seen = set()
    for host, port in ((METADATA, 700), ("127.0.0.1", closed_port()), ("64:ff9b::a00:1", 700)):
        registrar = cls(
            {"host": host, "port": str(port), "username": "abc", "password": "secret-pw1"}
        )
        with pytest.raises(RegistrarUnavailable) as exc:
            registrar.check(["a.example"])
        seen.add(generic(str(exc.value)))
    assert seen == {f"EPP: {GENERIC} (ref)"}


def test_upstream_connection_errors_are_one_generic_message():
    from pba_server.sdk.upstream import Upstream, UpstreamFault

    seen = set()
    for url in (f"http://{METADATA}/soap", f"http://127.0.0.1:{closed_port()}/soap"):
        with pytest.raises(UpstreamFault) as exc:
            Upstream(url, "a", "b", timeout=2).call("WhoAmI")
        assert exc.value.retryable
        seen.add(generic(str(exc.value)))
    assert seen == {f"Server.Unavailable: {GENERIC} (ref)"}
