"""Deadlines and the connection cap (issue 14, item 10), against a real
server process configured small: ``request_timeout_seconds=1``,
``max_connections=20``. A body sent at one byte a second used to stay open
131 s, and 1,200 idle connections were all accepted."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ADMIN_PASSWORD, TEST_KEY
from tests.security._common import basic, connect, read_all, read_response, xmlrpc
from tests.serverproc import child_env, running
from tests.support import Api

pytestmark = pytest.mark.slow


def _server(env, tmp_path, **settings: str):
    url = env.app.engine.url.render_as_string(hide_password=False)
    extra = {f"PBA_{k.upper()}": v for k, v in settings.items()}
    return running(
        cwd=tmp_path, env=child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY, **extra)
    )


def test_slow_body_and_slow_headers_are_cut_off_at_the_deadline(env, tmp_path):
    body = xmlrpc("WhoAmI")
    head = (
        f"POST /xmlrpc HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('admin', ADMIN_PASSWORD)}\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _server(env, tmp_path, request_timeout_seconds="1") as srv:
        for label, data in (("body", head + body), ("headers", head)):
            with connect(srv.base, timeout=10) as sock:
                sent = 0
                # one byte every 0.1 s: the idle timeout (60 s) never fires
                if label == "body":
                    sock.sendall(head)
                    sent = len(head)
                reply = b""
                try:
                    while sent < len(data):
                        sock.sendall(data[sent : sent + 1])
                        sent += 1
                        time.sleep(0.1)
                        if label == "headers" and sent > 25:  # the rest never comes
                            break
                except (BrokenPipeError, ConnectionResetError):
                    pass
                reply = read_all(sock)
                assert sent < len(data), f"{label}: the server waited for all of it"
                assert reply.startswith(b"HTTP/1.1 408"), (label, reply[:100])
        assert "HTTP.408" in srv.output
        # a request that arrives in time, then takes its time, is not cut off
        client = Api(srv.base, env)
        try:
            assert client.xmlrpc().WhoAmI({})["login"] == "admin"
        finally:
            client.close()


def test_connections_beyond_the_cap_are_refused_and_freed_ones_reused(env, tmp_path):
    with _server(env, tmp_path, max_connections="20") as srv:
        idle = [connect(srv.base, timeout=10) for _ in range(20)]
        try:
            time.sleep(0.3)  # all accepted by the server
            with connect(srv.base, timeout=10) as extra:
                assert read_all(extra) == b""  # closed at once, nothing served
            idle.pop().close()
            time.sleep(0.3)
            with connect(srv.base, timeout=10) as again:
                body = xmlrpc("WhoAmI")
                again.sendall(
                    (
                        f"POST /xmlrpc HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                        f"Authorization: {basic('admin', ADMIN_PASSWORD)}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    ).encode()
                    + body
                )
                reply = read_response(again)
                assert reply.startswith(b"HTTP/1.1 200") and b"admin" in reply
        finally:
            for s in idle:
                s.close()
