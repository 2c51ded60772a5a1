"""The access log (issue 14, item 9): only known operation names are written
(else ``op=?``), and nothing a client sends can break a line or forge one."""

from __future__ import annotations

import logging
from xmlrpc.client import Fault, loads

import pytest
import requests

from pba_server.api.http import log_field
from pba_server.core.logsafe import OneLineFormatter
from tests.conftest import ADMIN_PASSWORD
from tests.security._common import basic, soap, xmlrpc

PAN = "4111111111111111"
FORGED = "WhoAmI\n2026-01-01T00:00:00Z user=admin op=AccountClose proto=xmlrpc"


def _access_lines(caplog) -> list[str]:
    formatter = OneLineFormatter("%(message)s")
    return [formatter.format(r) for r in caplog.records if r.name == "pba.access"]


@pytest.mark.parametrize("auth", [basic("admin", ADMIN_PASSWORD), None], ids=["basic", "anon"])
def test_unknown_xmlrpc_method_names_are_not_logged(server, api, caplog, auth):
    caplog.set_level(logging.INFO, logger="pba.access")
    headers = {"Content-Type": "text/xml", **({"Authorization": auth} if auth else {})}
    for name in (PAN, FORGED, "4111-1111-1111-1111"):
        resp = requests.post(f"{server}/xmlrpc", data=xmlrpc(name), headers=headers, timeout=30)
        with pytest.raises(Fault):
            loads(resp.content)
    lines = _access_lines(caplog)
    assert len(lines) == 3
    for line in lines:
        assert "\n" not in line
        assert " op=? " in line
        assert "4111" not in line and "AccountClose" not in line


def test_known_names_are_logged_as_such(api, caplog):
    caplog.set_level(logging.INFO, logger="pba.access")
    api.xmlrpc().WhoAmI({})
    api.soap().WhoAmI()
    lines = _access_lines(caplog)
    assert any(" op=WhoAmI proto=xmlrpc " in line for line in lines), lines
    assert any(" op=WhoAmI proto=soap " in line for line in lines), lines


def test_unknown_soap_operation_is_not_logged(server, api, caplog):
    caplog.set_level(logging.INFO, logger="pba.access")
    resp = requests.post(
        f"{server}/soap",
        data=soap(f"<tns:Card{PAN}/>"),
        headers={"Authorization": basic("admin", ADMIN_PASSWORD), "SOAPAction": '""'},
        timeout=30,
    )
    assert resp.status_code == 500
    (line,) = _access_lines(caplog)
    assert " op=? " in line and PAN not in line


def test_every_field_is_escaped():
    assert log_field("WhoAmI") == "WhoAmI"
    assert log_field("a\nb c\\d\x1b\u00e9") == "a\\nb\\x20c\\\\d\\x1b\\xe9"


def test_records_stay_one_line_whatever_their_message(caplog):
    """Not only the access log: any record (an exception message repeating
    client input, say) is one line; a traceback's lines are indented."""
    formatter = OneLineFormatter("%(message)s")
    record = logging.LogRecord("pba.x", logging.ERROR, __file__, 1, "bad %s", (FORGED,), None)
    assert formatter.format(record).count("\n") == 0
    try:
        raise ValueError(FORGED)
    except ValueError:
        import sys

        record = logging.LogRecord(
            "pba.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    lines = formatter.format(record).splitlines()
    assert lines[0] == "failed"
    assert all(line.startswith("    ") for line in lines[1:])
