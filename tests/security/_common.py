"""Bodies and raw HTTP for the transport tests."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
# 358,751 attributes on one element fit in the 4 MiB cap (issue 14, item 4)
BOMB_ATTRIBUTES = 358_751


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def soap(body: str, header: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{NS_SOAP}" xmlns:tns="urn:pba-server:v1">'
        f"<soapenv:Header>{header}</soapenv:Header>"
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


def xmlrpc(method: str, params: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?>\n<methodCall><methodName>{method}</methodName>'
        f"<params>{params}</params></methodCall>"
    ).encode()


def attributes(n: int) -> str:
    return " ".join(f'a{i}=""' for i in range(n))


def soap_bomb(n: int = BOMB_ATTRIBUTES) -> bytes:
    return soap(f"<tns:WhoAmI {attributes(n)}/>")


def xmlrpc_bomb(n: int = BOMB_ATTRIBUTES) -> bytes:
    # after the methodName, where a streaming pass for the name would stop
    body = xmlrpc("WhoAmI")
    return body.replace(b"<params>", f"<params {attributes(n)}>".encode())


def request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: text/xml; charset=utf-8"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def connect(base: str, timeout: float = 30) -> socket.socket:
    parts = urlsplit(base)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response: its headers and Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _sep, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def timed_post(
    base: str,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    ready: Callable[[], object] | None = None,
):
    """(seconds from the last byte sent to the whole answer, the answer);
    ``ready`` is called once connected, before sending."""
    data = request(path, body, headers)
    with connect(base) as sock:
        if ready is not None:
            ready()
        sock.sendall(data)
        started = time.perf_counter()
        reply = read_response(sock)
        return time.perf_counter() - started, reply
