"""The Twisted side: one site with /soap, /xmlrpc and /health.

The reactor thread only moves bytes. Each request body is capped while it is
received (a 50 MB upload is cut off after the headers when it says its
length, or at the cap when chunked), then parsing, dispatch and serializing
run on a bounded thread pool. Every request is logged in one line.

Each request must arrive whole (headers and body) within
``request_timeout_seconds`` of its first byte, or it is answered 408 and the
connection closed: the idle timeout alone let a body sent at one byte a
second hold a connection for minutes. At most ``max_connections``
connections are open per process (plain and TLS together); beyond that a new
connection is closed at once.
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
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import http, pages, resource, server
from twisted.web.error import UnsupportedMethod

from pba_server.api import xmlsafe
from pba_server.api.admission import ParseGate, Slot
from pba_server.api.dispatch import CallMeta, Credentials
from pba_server.api.soap import SoapHandler, fault_document
from pba_server.api.xmlrpc import XmlRpcHandler
from pba_server.core.clock import SystemClock
from pba_server.core.errors import PbaError

access_log = logging.getLogger("pba.access")
log = logging.getLogger("pba.http")

_CID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSAFE_RE = re.compile(r"[^\x21-\x7e]")  # keeps the log line one line of key=value fields
_TOO_LARGE = b"request body too large"
_TIMED_OUT = b"request not received in time"


class LimitedRequest(server.Request):
    """A request whose body may not exceed the site's ``max_request_bytes``,
    and whose XML is scanned as it arrives (:class:`xmlsafe.ChunkScan`): a
    body over the XML limits is answered with its fault at once, and the rest
    of it is read and dropped, never stored, parsed or dispatched."""

    _received = 0
    _rejected = False
    _scan: xmlsafe.ChunkScan | None = None
    _refused: bytes | None = None

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
        if self._refused is not None:
            return  # already answered: the rest is dropped as it comes
        if self._scan is None:
            self._scan = xmlsafe.ChunkScan()
        err = self._scan.feed(data)
        if err is not None:
            self._refuse(err)
            return
        super().handleContentChunk(data)

    def _refuse(self, err: PbaError) -> None:
        """Answer now, in the endpoint's own fault format; close once the
        body has been received (closing on unread data would reset the
        connection before the client reads the answer)."""
        path = bytes(getattr(self.channel, "_path", b"")).split(b"?", 1)[0]
        peer = getattr(self.getClientAddress(), "host", "-")
        given = self.getHeader(b"x-correlation-id")
        cid = given.decode("ascii", "replace") if given else ""
        if not _CID_RE.match(cid):
            cid = uuid.uuid4().hex
        if path == b"/soap":
            status, reason, body = 500, b"Internal Server Error", fault_document(err, cid)
        elif path == b"/xmlrpc":
            status, reason = 200, b"OK"
            body = xmlrpc.client.dumps(
                xmlrpc.client.Fault(err.number, f"{err.code}: {err.message}"),
                methodresponse=True,
            ).encode("utf-8")
        else:
            status, reason, body = 400, b"Bad Request", err.message.encode()
        self._refused = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/xml; charset=utf-8\r\nConnection: close\r\n"
            b"X-Correlation-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason, cid.encode(), len(body), body)
        )
        self.channel.transport.write(self._refused)
        meta = CallMeta(correlation_id=cid, source_address=peer, protocol="http")
        meta.operation = "?"
        meta.extra["code"] = err.code
        _log_line(meta, getattr(self, "pba_started", time.perf_counter()), status)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if self._refused is not None:
            self._rejected = True  # answered: no resource, no access line of the site's
            self.channel.transport.loseConnection()
            return
        super().requestReceived(command, path, version)

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
REQUEST_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 1000
PARSES_PER_ADDRESS = 2
ABORT_AFTER_S = 2.0
PARSES_TOTAL = 8


class PbaChannel(http.HTTPChannel):
    """HTTP/1.1 with an absolute deadline on receiving each request: armed at
    its first byte (or when the connection opens), disarmed once the body is
    complete. Handling the request is not timed."""

    _deadline: Any = None
    site: PbaSite

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._deadline is None and not self._handlingRequest:
            self._arm()
        super().dataReceived(data)

    def allContentReceived(self) -> None:  # noqa: N802
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self._disarm()
        self.site.connection_closed()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._deadline = self.callLater(self.site.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TIMED_OUT), _TIMED_OUT)
        )
        peer = getattr(transport.getPeer(), "host", "-")
        meta = CallMeta(correlation_id="-", source_address=peer, protocol="http")
        meta.operation = f"deadline>{self.site.request_timeout:g}s"
        meta.extra["code"] = "HTTP.408"
        _log_line(meta, time.perf_counter(), 408)
        # closed once the answer is out; a client that does not read it
        # either is cut off shortly after, without waiting for it
        transport.loseConnection()
        self._abortingCall = self.callLater(ABORT_AFTER_S, self.forceAbortClient)


class PbaSite(server.Site):
    requestFactory = LimitedRequest  # noqa: N815 - Twisted's name
    protocol = PbaChannel  # type: ignore[assignment] # plain HTTP/1.1, no HTTP/2 negotiation

    def __init__(
        self,
        root: resource.Resource,
        max_request_bytes: int,
        idle_timeout: float = IDLE_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(root, timeout=idle_timeout)
        self.max_request_bytes = max_request_bytes
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.open_connections = 0
        self.displayTracebacks = False
        # requests being answered (counted on the reactor thread): a stopping
        # server waits for them before it closes its connections
        self.in_flight = 0

    def full(self) -> bool:
        return self.open_connections >= self.max_connections

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        if self.full():
            return None  # the reactor closes the connection at once
        channel = super().buildProtocol(addr)
        self.open_connections += 1
        return channel

    def connection_closed(self) -> None:
        self.open_connections -= 1

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


def log_field(value: str) -> str:
    """One key=value field: control characters, spaces, backslashes and
    non-ASCII written as escapes, so a value can neither end the line nor
    fake another field."""
    if _UNSAFE_RE.search(value) is None and "\\" not in value:
        return value
    return value.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


def _log_line(meta: CallMeta, started: float, status: int) -> None:
    access_log.info(
        "%s user=%s op=%s proto=%s dur_ms=%.1f result=%s http=%d cid=%s addr=%s pid=%d%s",
        SystemClock().now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        log_field(meta.user),
        log_field(meta.operation),
        log_field(meta.protocol),
        (time.perf_counter() - started) * 1000,
        log_field(meta.extra.get("code", "OK")),
        status,
        log_field(meta.correlation_id),
        log_field(meta.source_address),
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
        work: Callable[[Slot | None], tuple[int, bytes]],
        content_type: bytes,
        gate: ParseGate | None = None,
        refuse: Callable[[PbaError], tuple[int, bytes]] | None = None,
    ) -> Any:
        """``work(slot)`` on the pool; with ``gate``, only once the gate admits
        it (waiting on the reactor, no thread held); ``refuse`` answers a
        request the gate turns away."""
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

        d: Deferred[Any]
        if gate is None:
            d = deferToThreadPool(self.reactor, self.pool, work, None)
        else:

            def admitted(slot: Slot) -> Any:
                def given_back(result: Any) -> Any:
                    slot.release()  # if the work did not (it gives it back early)
                    return result

                return deferToThreadPool(self.reactor, self.pool, work, slot).addBoth(given_back)

            def turned_away(f: Failure) -> tuple[int, bytes]:
                f.trap(PbaError)
                assert refuse is not None
                return refuse(f.value)

            d = gate.acquire(meta.source_address).addCallbacks(admitted, turned_away)
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
        gate: ParseGate | None = None,
    ) -> None:
        super().__init__(pool, reactor)
        self.handler = handler
        self.public_url = public_url
        self.gate = gate or ParseGate(PARSES_PER_ADDRESS, PARSES_TOTAL, self.reactor)

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        if b"wsdl" not in request.args and not request.uri.lower().endswith(b"?wsdl"):
            request.setResponseCode(405)
            request.setHeader(b"content-type", b"text/plain")
            return b"POST SOAP requests here; GET ?wsdl for the WSDL\n"
        url = self.public_url
        if not url:
            # the address this connection was accepted on, never the Host
            # header: a client must not choose where others are told to send
            # their credentials
            local = request.getHost()
            host = getattr(local, "host", "127.0.0.1")
            if ":" in host:
                host = f"[{host}]"
            scheme = "https" if request.isSecure() else "http"
            url = f"{scheme}://{host}:{getattr(local, 'port', 80)}/soap"
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        return self.handler.wsdl(url)

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        meta = _meta(request, "soap")
        meta.operation = "?"  # until the Body names a known one
        creds = _credentials(request)
        body = request.content.read() if request.content else b""
        ctype = (request.getHeader(b"content-type") or b"text/xml").decode("latin-1")
        action = request.getHeader(b"soapaction")
        soap_action = action.decode("latin-1") if action is not None else None

        def refuse(err: PbaError) -> tuple[int, bytes]:
            meta.extra["code"] = err.code
            return 500, fault_document(err, meta.correlation_id)

        return self._run(
            request,
            meta,
            lambda slot: self.handler.respond(
                lambda: body, ctype, creds, meta, slot=slot, soap_action=soap_action
            ),
            b"text/xml; charset=utf-8",
            None if creds.login is not None else self.gate,
            refuse,
        )


class XmlRpcResource(_ThreadedResource):
    def __init__(
        self,
        handler: XmlRpcHandler,
        pool: ThreadPool,
        reactor: Any = None,
        gate: ParseGate | None = None,
    ) -> None:
        super().__init__(pool, reactor)
        self.handler = handler
        self.gate = gate or ParseGate(PARSES_PER_ADDRESS, PARSES_TOTAL, self.reactor)

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        request.setResponseCode(405)
        request.setHeader(b"content-type", b"text/plain")
        return b"POST XML-RPC requests here\n"

    def render_POST(self, request: server.Request) -> Any:  # noqa: N802
        meta = _meta(request, "xmlrpc")
        meta.operation = "?"  # until the methodName is a known one
        creds = _credentials(request)
        body = request.content.read() if request.content else b""
        return self._run(
            request,
            meta,
            lambda slot: (200, self.handler.respond(lambda: body, creds, meta, slot=slot)),
            b"text/xml; charset=utf-8",
            None if creds.login is not None else self.gate,
            lambda err: (200, self.handler.fault(err, meta)),
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

        def work(_slot: Slot | None) -> tuple[int, bytes]:
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
    gate: ParseGate | None = None,
) -> resource.Resource:
    """``gate`` bounds requests parsed before they are authenticated, on both
    endpoints together."""
    root = _Root()
    gate = gate or ParseGate(PARSES_PER_ADDRESS, PARSES_TOTAL, reactor)
    root.putChild(b"soap", SoapResource(soap, pool, reactor, public_url, gate))
    root.putChild(b"xmlrpc", XmlRpcResource(xmlrpc, pool, reactor, gate))
    root.putChild(b"health", HealthResource(health, pool, reactor))
    return root
