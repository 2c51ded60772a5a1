"""The Twisted side: one site with /soap, /xmlrpc and /health.

The reactor thread only moves bytes. Each request body is capped while it is
received (a 50 MB upload is cut off after the headers when it says its
length, or at the cap when chunked), then parsing, dispatch and serializing
run on a bounded thread pool. Every request is logged in one line.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import pages, resource, server
from twisted.web.error import UnsupportedMethod

from pba_server.api.dispatch import CallMeta, Credentials
from pba_server.api.soap import SoapHandler
from pba_server.api.xmlrpc import XmlRpcHandler
from pba_server.core.clock import SystemClock

access_log = logging.getLogger("pba.access")
log = logging.getLogger("pba.http")

_CID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSAFE_RE = re.compile(r"[^\x21-\x7e]")  # keeps the log line one line of key=value fields
_TOO_LARGE = b"request body too large"


class LimitedRequest(server.Request):
    """A request whose body may not exceed the site's ``max_request_bytes``."""

    _received = 0
    _rejected = False

    def _limit(self) -> int:
        return int(getattr(self.channel.site, "max_request_bytes", 1 << 20))

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        if length is not None and length > self._limit():
            self._reject()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._reject()
            return
        super().handleContentChunk(data)

    def _reject(self) -> None:
        self._rejected = True
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
        )
        peer = getattr(self.getClientAddress(), "host", "-")
        meta = CallMeta(correlation_id="-", source_address=peer, protocol="http")
        meta.operation = f"body>{self._limit()}"
        meta.extra["code"] = "Client.RequestTooLarge"
        _log_line(meta, time.perf_counter(), 413)
        transport.loseConnection()


# Twisted's default keeps an idle connection 12 hours: anyone could hold
# file descriptors open by connecting and saying nothing. The clock stops
# while a request is being handled, so slow calls are not cut off.
IDLE_TIMEOUT_S = 60.0


class PbaSite(server.Site):
    requestFactory = LimitedRequest  # noqa: N815 - Twisted's name

    def __init__(
        self,
        root: resource.Resource,
        max_request_bytes: int,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        super().__init__(root, timeout=idle_timeout)
        self.max_request_bytes = max_request_bytes
        self.displayTracebacks = False
        # requests being answered (counted on the reactor thread): a stopping
        # server waits for them before it closes its connections
        self.in_flight = 0

    def getResourceFor(self, request: Any) -> Any:  # noqa: N802 - Twisted's name
        request.pba_started = time.perf_counter()
        self.in_flight += 1
        request.notifyFinish().addBoth(self._answered)
        return super().getResourceFor(request)

    def _answered(self, _result: Any) -> None:
        self.in_flight -= 1  # answered, or the client went away: either way done

    def log(self, request: Any) -> None:
        """One line for a request that did not write its own (GET ?wsdl, 404, 405)."""
        if request.responseHeaders.hasHeader(b"x-correlation-id") or getattr(
            request, "_rejected", False
        ):
            return  # an API call, /health or a 413: already logged
        meta = _meta(request, "http")
        method = request.method.decode("ascii", "replace")
        path = request.uri[:200].decode("ascii", "replace")
        meta.operation = _UNSAFE_RE.sub("_", f"{method}:{path}")
        status = int(request.code)
        if status >= 400:
            meta.extra["code"] = f"HTTP.{status}"
        _log_line(meta, getattr(request, "pba_started", time.perf_counter()), status)


def _credentials(request: server.Request) -> Credentials:
    header = request.getHeader(b"authorization")
    if header and header[:6].lower() == b"basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials()
        login, sep, password = decoded.partition(":")
        if sep:
            return Credentials(login=login, password=password)
    return Credentials()


def _meta(request: server.Request, protocol: str) -> CallMeta:
    given = request.getHeader(b"x-correlation-id")
    cid = given.decode("ascii", "replace") if given else ""
    if not _CID_RE.match(cid):
        cid = uuid.uuid4().hex
    peer = request.getClientAddress()
    return CallMeta(
        correlation_id=cid, source_address=getattr(peer, "host", "-"), protocol=protocol
    )


def _log_line(meta: CallMeta, started: float, status: int) -> None:
    access_log.info(
        "%s user=%s op=%s proto=%s dur_ms=%.1f result=%s http=%d cid=%s addr=%s pid=%d%s",
        SystemClock().now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        meta.user,
        meta.operation,
        meta.protocol,
        (time.perf_counter() - started) * 1000,
        meta.extra.get("code", "OK"),
        status,
        meta.correlation_id,
        meta.source_address,
        os.getpid(),  # which worker process served it (serve --workers N)
        " replay=1" if meta.extra.get("idempotent_replay") else "",
    )


class _Root(resource.Resource):
    """Unknown paths get a plain 404 (Twisted's NoResource is deprecated and
    warns on every use)."""

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802
        return pages.notFound()

    def render(self, request: server.Request) -> bytes:
        body: bytes = pages.notFound().render(request)
        return body


class _ThreadedResource(resource.Resource):
    isLeaf = True  # noqa: N815 - Twisted's name

    def render(self, request: server.Request) -> Any:
        try:
            return super().render(request)
        except UnsupportedMethod as exc:
            if request.method == b"HEAD":
                raise  # Twisted answers HEAD from render_GET
            # Twisted's own 405 page is a deprecated class that warns on each use
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(exc.allowedMethods))
            request.setHeader(b"content-type", b"text/plain")
            return b"method not allowed\n"

    def __init__(self, pool: ThreadPool, reactor: Any = None) -> None:
        super().__init__()
        self.pool = pool
        self.reactor: IReactorThreads = reactor or _reactor

    def _run(
        self,
        request: server.Request,
        meta: CallMeta,
        work: Callable[[], tuple[int, bytes]],
        content_type: bytes,
    ) -> Any:
        started = time.perf_counter()
        finished = [False]
        request.notifyFinish().addErrback(lambda _f: finished.__setitem__(0, True))

        def done(result: tuple[int, bytes]) -> None:
            status, body = result
            _log_line(meta, started, status)
            if finished[0]:
                return  # client went away
            request.setResponseCode(status)
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"x-correlation-id", meta.correlation_id.encode())
            request.setHeader(b"content-length", str(len(body)).encode())
            request.write(body)
            request.finish()

        def failed(f: Failure) -> None:
            log.error("request failed [cid=%s]: %s", meta.correlation_id, f.getTraceback())
            meta.extra["code"] = "Server.Internal"
            done((500, b"internal error, correlation id " + meta.correlation_id.encode()))

        def last_resort(f: Failure) -> None:
            log.error("response failed [cid=%s]: %s", meta.correlation_id, f.getTraceback())
            if not finished[0]:
                request.channel.transport.loseConnection()

        d = deferToThreadPool(self.reactor, self.pool, work)
        d.addCallbacks(done, failed)
        d.addErrback(last_resort)
        return server.NOT_DONE_YET


class SoapResource(_ThreadedResource):
    def __init__(
        self,
        handler: SoapHandler,
        pool: ThreadPool,
        reactor: Any = None,
        public_url: str | None = None,
    ) -> None:
        super().__init__(pool, reactor)
        self.handler = handler
        self.public_url = public_url

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        if b"wsdl" not in request.args and not request.uri.lower().endswith(b"?wsdl"):
            request.setResponseCode(405)
            request.setHeader(b"content-type", b"text/plain")
            return b"POST SOAP requests here; GET ?wsdl for the WSDL\n"
        url = self.public_url
        if not url:
            host = (request.getHeader(b"host") or b"127.0.0.1").decode("ascii", "replace")
            scheme = "https" if request.isSecure() else "http"
            url = f"{scheme}://{host}/soap"
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        return self.handler.wsdl(url)

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        meta = _meta(request, "soap")
        creds = _credentials(request)
        body = request.content.read() if request.content else b""
        ctype = (request.getHeader(b"content-type") or b"text/xml").decode("latin-1")
        return self._run(
            request,
            meta,
            lambda: self.handler.respond(body, ctype, creds, meta),
            b"text/xml; charset=utf-8",
        )


class XmlRpcResource(_ThreadedResource):
    def __init__(self, handler: XmlRpcHandler, pool: ThreadPool, reactor: Any = None) -> None:
        super().__init__(pool, reactor)
        self.handler = handler

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        request.setResponseCode(405)
        request.setHeader(b"content-type", b"text/plain")
        return b"POST XML-RPC requests here\n"

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        meta = _meta(request, "xmlrpc")
        creds = _credentials(request)
        body = request.content.read() if request.content else b""
        return self._run(
            request,
            meta,
            lambda: (200, self.handler.handle(body, creds, meta)),
            b"text/xml; charset=utf-8",
        )


class HealthResource(_ThreadedResource):
    def __init__(
        self,
        check: Callable[[], tuple[bool, dict[str, Any]]],
        pool: ThreadPool,
        reactor: Any = None,
    ) -> None:
        super().__init__(pool, reactor)
        self.check = check

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802
        meta = _meta(request, "http")
        meta.operation = "health"

        def work() -> tuple[int, bytes]:
            ok, info = self.check()
            if not ok:
                meta.extra["code"] = "Server.Unavailable"
            return (200 if ok else 503), json.dumps(info).encode()

        return self._run(request, meta, work, b"application/json")


def build_root(
    soap: SoapHandler,
    xmlrpc: XmlRpcHandler,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    pool: ThreadPool,
    reactor: Any = None,
    public_url: str | None = None,
) -> resource.Resource:
    root = _Root()
    root.putChild(b"soap", SoapResource(soap, pool, reactor, public_url))
    root.putChild(b"xmlrpc", XmlRpcResource(xmlrpc, pool, reactor))
    root.putChild(b"health", HealthResource(health, pool, reactor))
    return root
