"""Strict SOAP envelopes (issue 14, item 11): the SOAPAction header must not
name another operation than the Body holds, and a Body holds exactly one."""

from __future__ import annotations

import pytest
import requests
from lxml import etree

from tests.conftest import ADMIN_PASSWORD
from tests.security._common import basic, soap

ADMIN = basic("admin", ADMIN_PASSWORD)


def _post(server, body, action=None):
    headers = {"Content-Type": "text/xml; charset=utf-8", "Authorization": ADMIN}
    if action is not None:
        headers["SOAPAction"] = action
    return requests.post(f"{server}/soap", data=body, headers=headers, timeout=30)


def _fault(resp) -> tuple[str, str]:
    assert resp.status_code == 500, resp.text[:300]
    doc = etree.fromstring(resp.content)
    return doc.findtext(".//faultcode").rsplit(":", 1)[-1], doc.findtext(".//faultstring")


@pytest.mark.parametrize("action", [None, "", '""', '"WhoAmI"', "WhoAmI"])
def test_soap_action_absent_empty_or_naming_the_operation(server, api, action):
    resp = _post(server, soap("<tns:WhoAmI/>"), action)
    assert resp.status_code == 200, resp.text
    assert b"admin" in resp.content


def test_soap_action_naming_another_operation_is_refused(server, api):
    """The header says AccountClose, the Body says WhoAmI: neither runs."""
    acc = api.xmlrpc().AccountCreate({"type": "customer_personal", "name": "Keep Me"})
    body = soap(
        f"<tns:AccountClose><tns:account_id>{acc['id']}</tns:account_id></tns:AccountClose>"
    )
    code, message = _fault(_post(server, body, '"WhoAmI"'))
    assert code == "Client.MalformedRequest"
    assert "SOAPAction" in message and "WhoAmI" in message and "AccountClose" in message
    assert api.xmlrpc().AccountGet({"account_id": acc["id"]})["status"] != "closed"
    code, _m = _fault(_post(server, soap("<tns:WhoAmI/>"), '"AccountClose"'))
    assert code == "Client.MalformedRequest"


def test_a_second_operation_in_the_body_is_refused_not_dropped(server, api):
    acc = api.xmlrpc().AccountCreate({"type": "customer_personal", "name": "Keep Me"})
    body = soap(
        "<tns:WhoAmI/>"
        f"<tns:AccountClose><tns:account_id>{acc['id']}</tns:account_id></tns:AccountClose>"
    )
    code, message = _fault(_post(server, body))
    assert code == "Client.MalformedRequest" and "exactly one" in message
    assert api.xmlrpc().AccountGet({"account_id": acc["id"]})["status"] != "closed"


def test_public_url_is_the_wsdl_address_when_set(env, server):
    """Set, public_url is what the WSDL says, whatever the connection or Host."""
    from twisted.internet import reactor, threads

    from pba_server.api.http import build_root

    app = env.app

    def address(public_url):
        root = build_root(app.soap, app.xmlrpc, app.health, None, reactor, public_url)
        soap_resource = root.children[b"soap"]

        class Req:
            args = {b"wsdl": [b""]}
            uri = b"/soap?wsdl"

            def setHeader(self, *_a):
                pass

            def getHost(self):
                from twisted.internet.address import IPv4Address

                return IPv4Address("TCP", "10.1.2.3", 8443)

            def isSecure(self):
                return True

        doc = etree.fromstring(soap_resource.render_GET(Req()))
        ns = {"s": "http://schemas.xmlsoap.org/wsdl/soap/"}
        return doc.find(".//s:address", ns).get("location")

    assert threads.blockingCallFromThread(reactor, address, None) == "https://10.1.2.3:8443/soap"
    assert (
        threads.blockingCallFromThread(reactor, address, "https://api.example.com/soap")
        == "https://api.example.com/soap"
    )
