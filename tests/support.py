"""Clients for the real endpoints: zeep for SOAP, xmlrpc.client for XML-RPC."""

from __future__ import annotations

import xmlrpc.client
from typing import Any
from urllib.parse import quote

import requests
import zeep
from zeep.transports import Transport
from zeep.wsdl import Document

_documents: dict[str, Document] = {}


def soap_client(base: str, login: str | None, password: str | None, **kw: Any) -> zeep.Client:
    session = requests.Session()
    if login is not None:
        session.auth = (login, password or "")
    transport = Transport(session=session, timeout=30, operation_timeout=30)
    doc = _documents.get(base)
    if doc is None:
        loader = Transport(session=requests.Session())
        doc = Document(f"{base}/soap?wsdl", loader, settings=zeep.Settings(strict=True))
        loader.session.close()
        _documents[base] = doc
    return zeep.Client(doc, transport=transport, **kw)


def xmlrpc_client(base: str, login: str | None, password: str | None) -> xmlrpc.client.ServerProxy:
    if login is None:
        url = f"{base}/xmlrpc"
    else:
        host = base.removeprefix("http://")
        url = f"http://{quote(login, safe='')}:{quote(password or '', safe='')}@{host}/xmlrpc"
    return xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True)


class Api:
    """Clients made by a test are closed when it ends (warnings are errors)."""

    def __init__(self, base: str, env: Any) -> None:
        self.base = base
        self.env = env
        self._open: list[Any] = []

    def _pw(self, login: str | None, password: str | None) -> str | None:
        if login == "admin" and password is None:
            return str(self.env.admin_password)
        return password

    def soap_client(
        self, login: str | None = "admin", password: str | None = None, **kw: Any
    ) -> zeep.Client:
        client = soap_client(self.base, login, self._pw(login, password), **kw)
        self._open.append(client.transport.session)
        return client

    def soap(self, login: str | None = "admin", password: str | None = None) -> Any:
        return self.soap_client(login, password).service

    def xmlrpc(self, login: str | None = "admin", password: str | None = None) -> Any:
        proxy = xmlrpc_client(self.base, login, self._pw(login, password))
        self._open.append(proxy)
        return proxy

    def close(self) -> None:
        for c in self._open:
            if isinstance(c, xmlrpc.client.ServerProxy):
                c("close")()
            else:
                c.close()


def page_items(page: Any) -> list[Any]:
    """The items of a ``*List`` page (an XML-RPC struct, a zeep object or a
    plain dict), checking it has the page shape on the way."""
    for key in ("total", "offset", "limit"):
        assert page[key] is not None, f"not a page: {page!r}"
    return list(page["items"] or [])
