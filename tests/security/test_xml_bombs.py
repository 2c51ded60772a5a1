"""The anonymous attribute bomb (issue 14, item 4): one 4 MiB request with
358,751 attributes on one element used to cost 508 MB and 1.6 s, parsed and
schema-validated before anyone was authenticated. Now the body is bounded
before any parse, and credentials in headers are checked before the body is
read as XML."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xmlrpc.client import Fault, loads

import pytest
import requests

from pba_server.api import xmlsafe
from pba_server.core.errors import MalformedRequest, RequestTooComplex
from tests.conftest import ADMIN_PASSWORD, TEST_KEY
from tests.security._common import (
    basic,
    soap,
    soap_bomb,
    timed_post,
    xmlrpc,
    xmlrpc_bomb,
)
from tests.serverproc import child_env, running
from tests.support import Api

ADMIN = basic("admin", ADMIN_PASSWORD)


def _post(server, path, body, auth=None):
    headers = {"Content-Type": "text/xml"}
    if auth:
        headers["Authorization"] = auth
    return requests.post(f"{server}{path}", data=body, headers=headers, timeout=30)


def _soap_code(resp) -> str:
    assert resp.status_code == 500, resp.status_code
    from lxml import etree

    return etree.fromstring(resp.content).findtext(".//faultcode").rsplit(":", 1)[-1]


def _xmlrpc_fault(resp) -> Fault:
    assert resp.status_code == 200, resp.status_code
    with pytest.raises(Fault) as e:
        loads(resp.content)
    return e.value


# ---------------------------------------------------------------- the limits, on the wire


@pytest.mark.parametrize("auth", [None, ADMIN], ids=["anonymous", "basic"])
def test_attribute_bomb_is_refused_as_too_complex(server, api, auth):
    assert len(soap_bomb()) <= 4 * 1024 * 1024
    assert _soap_code(_post(server, "/soap", soap_bomb(), auth)) == "Client.RequestTooComplex"
    fault = _xmlrpc_fault(_post(server, "/xmlrpc", xmlrpc_bomb(), auth))
    assert fault.faultCode == 4005 and "attributes" in fault.faultString
    assert api.soap().WhoAmI().login == "admin"


def test_wrong_basic_credentials_are_refused_before_the_body_is_parsed(server, api, monkeypatch):
    """A wrong Authorization header is answered AuthFailed without the body
    (here the heaviest the limits admit) ever reaching a parser, and a good
    WS-Security token in it does not rescue the header."""
    from pba_server.api import xmlsafe as module

    parsed = []
    for name in ("parse", "soap_header", "xmlrpc_method_name"):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _n=name: (parsed.append(_n), _real(*a))[1]
        )
    wrong = basic("admin", "wrong-password")
    heavy = "<a>b</a>" * 45_000
    assert _soap_code(_post(server, "/soap", soap(f"<tns:WhoAmI>{heavy}</tns:WhoAmI>"), wrong)) == (
        "Client.AuthFailed"
    )
    assert _xmlrpc_fault(_post(server, "/xmlrpc", xmlrpc("WhoAmI", heavy), wrong)).faultCode == 4010
    token = (
        '<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/'
        'oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken>'
        f"<wsse:Username>admin</wsse:Username><wsse:Password>{ADMIN_PASSWORD}</wsse:Password>"
        "</wsse:UsernameToken></wsse:Security>"
    )
    body = soap("<tns:WhoAmI/>", token)
    assert _soap_code(_post(server, "/soap", body, wrong)) == "Client.AuthFailed"
    assert parsed == []
    assert _post(server, "/soap", body).status_code == 200  # the token alone is fine
    assert parsed[0] == "soap_header"  # read up to the Body, then the whole


@pytest.mark.parametrize(
    ("label", "element"),
    [
        ("attributes in all", "<x " + " ".join(f'a{i}="1"' for i in range(40)) + "/>"),
        (
            "namespace declarations",
            "<x " + " ".join(f'xmlns:n{i}="urn:n{i}"' for i in range(30)) + "/>",
        ),
    ],
)
def test_many_small_elements_over_the_totals(server, api, label, element):
    """Under the per-element limit on every element, over the document's total."""
    n = {"attributes in all": 600, "namespace declarations": 10}[label]
    body = soap(f"<tns:WhoAmI>{element * n}</tns:WhoAmI>")
    resp = _post(server, "/soap", body, ADMIN)
    assert _soap_code(resp) == "Client.RequestTooComplex"
    assert label.split(" in ")[0].split()[-1] in resp.text
    rpc = _xmlrpc_fault(_post(server, "/xmlrpc", xmlrpc("WhoAmI", element * n), ADMIN))
    assert rpc.faultCode == 4005


def test_one_huge_text_node(server, api):
    body = soap(
        f"<tns:AccountList><tns:name_contains>{'a' * (1024 * 1024 + 1)}"
        "</tns:name_contains></tns:AccountList>"
    )
    resp = _post(server, "/soap", body, ADMIN)
    assert _soap_code(resp) == "Client.RequestTooComplex"
    assert "longer than" in resp.text


def test_ordinary_requests_pass_the_prescan(server, api):
    """Attributes, namespaces and text as clients send them are untouched."""
    for body in (
        soap("<tns:WhoAmI/>"),
        soap('<tns:WhoAmI xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:a="urn:a"/>'),
    ):
        assert _post(server, "/soap", body, ADMIN).status_code == 200
    xmlsafe.prescan(b"<a>" + b"t" * (1024 * 1024 - 8) + b"</a>")  # just under the text limit
    xmlsafe.prescan(b"<a " + b" ".join(b'a%d="1"' % i for i in range(64)) + b"/>")


@pytest.mark.parametrize(
    "body",
    [
        # whitespace around '=' and between attributes, single quotes
        b"<a " + b"\n\t ".join(b"a%d = '1'" % i for i in range(65)) + b"/>",
        b'<a a0="1"' + b"".join(b'  a%d\t=\r\n"x>y"' % i for i in range(1, 65)) + b"/>",
    ],
)
def test_prescan_counts_every_spelling_of_an_attribute(body):
    from lxml import etree

    assert len(etree.fromstring(body).attrib) == 65  # libxml2 accepts it
    with pytest.raises(RequestTooComplex):
        xmlsafe.prescan(body)


def test_prescan_refuses_dtds_before_any_parse():
    with pytest.raises(MalformedRequest, match="DTD"):
        xmlsafe.prescan(b'<!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>')


# ---------------------------------------------------------------- a real server's memory


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _refusal(base: str, path: str, body: bytes, ready=None) -> tuple[float, bytes]:
    elapsed, reply = timed_post(base, path, body, ready=ready)
    head, _sep, content = reply.partition(b"\r\n\r\n")
    if path == "/soap":
        assert head.startswith(b"HTTP/1.1 500"), head
        assert b"Client.RequestTooComplex" in content, content[:300]
    else:
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"<int>4005</int>" in content, content[:300]
    return elapsed, reply


def _eight_at_once(base: str, path: str, body: bytes, tenant) -> tuple[float, float]:
    """(slowest of 8 simultaneous anonymous bombs, the other tenant's call), in ms."""
    start = threading.Barrier(9)
    tenant_ms: list[float] = []

    def bomb(_i: int) -> float:
        return _refusal(base, path, body, ready=start.wait)[0]

    def other_tenant() -> None:
        start.wait()
        time.sleep(0.005)  # while the bombs arrive
        t = time.perf_counter()
        assert tenant.WhoAmI({})["login"] == "tenant"
        tenant_ms.append((time.perf_counter() - t) * 1000)

    with ThreadPoolExecutor(9) as ex:
        waiting = ex.submit(other_tenant)
        times = list(ex.map(bomb, range(8)))
        waiting.result()
    return round(max(times) * 1000, 1), round(tenant_ms[0], 1)


@pytest.mark.slow
def test_anonymous_bombs_cost_a_real_server_little(env, tmp_path):
    """Issue 14 item 4, against a real server process: the bomb without
    credentials, alone and 8 at once, is refused in under 50 ms each, the
    server's resident memory grows by under 50 MB, and another tenant's call
    meanwhile is answered in under 100 ms."""
    url = env.app.engine.url.render_as_string(hide_password=False)
    child = child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY)
    bombs = {"/soap": soap_bomb(), "/xmlrpc": xmlrpc_bomb()}
    with running(cwd=tmp_path, env=child) as srv:
        client = Api(srv.base, env)
        try:
            admin = client.xmlrpc()
            provider = admin.WhoAmI({})["account_id"]
            acc = admin.AccountCreate({"type": "customer_business", "name": "Other Tenant"})
            assert acc["parent_id"] == provider
            admin.UserCreate(
                {
                    "account_id": acc["id"],
                    "login": "tenant",
                    "password": "tenant-password-1",
                    "full_name": "Other Tenant",
                    "roles": ["readonly"],
                }
            )
            tenant = client.xmlrpc("tenant", "tenant-password-1")
            assert tenant.WhoAmI({})["login"] == "tenant"  # its password is verified once
            for path, body in bombs.items():  # warm up: code paths, buffers
                _refusal(srv.base, path, body)
            before = _rss_kb(srv.proc.pid)

            for path, body in bombs.items():
                elapsed, _r = _refusal(srv.base, path, body)
                assert elapsed < 0.050, f"{path}: refused in {elapsed * 1000:.0f} ms"

            for path, body in bombs.items():
                # Best of three rounds: the machine running the suite is shared,
                # and a neighbour's burst must not fail it. The code before this
                # change took over 1.5 s a bomb (and 330 ms with a scan of the
                # whole body only): no round came near 50 ms.
                rounds = []
                for _round in range(3):
                    time.sleep(0.3)  # the last round's bodies drained
                    rounds.append(_eight_at_once(srv.base, path, body, tenant))
                slowest, _waited = min(rounds)
                assert slowest < 50, f"{path}: 8 at once, slowest refused in {rounds} ms"
                assert min(w for _s, w in rounds) < 100, f"the other tenant waited: {rounds}"

            grew = (_rss_kb(srv.proc.pid) - before) // 1024
            assert grew < 50, f"the server's RSS grew {grew} MB"
            assert tenant.WhoAmI({})["login"] == "tenant"
        finally:
            client.close()
