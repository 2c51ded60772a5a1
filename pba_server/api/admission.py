"""What a request must pass before its XML is parsed.

Credentials in HTTP headers (Basic: a login and password, or an API key id
and secret) are checked first, so a caller without them never reaches a
parser. A request without header credentials may still carry a WS-Security
token (SOAP) or call an introspection method (XML-RPC): its body is bounded
by :func:`pba_server.api.xmlsafe.prescan`, then read by a streaming pass that
stops where the credentials (or the method name) end. At most
``per_address`` such passes from one address, and ``total`` from all, run at
once (:class:`ParseGate`); the others wait on the reactor, holding no thread
and with their body still unread, and past a short queue they are refused,
so anonymous traffic can never hold every call thread.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from twisted.internet import defer

from pba_server.core.errors import TooManyRequests, Unavailable

# waiting, beyond those admitted: per address, and in all
QUEUE_PER_ADDRESS = 16
QUEUE_TOTAL = 256


class Slot:
    """One admitted pass; :meth:`release` may be called from any thread, and
    more than once (only the first counts)."""

    def __init__(self, gate: ParseGate, address: str) -> None:
        self._gate = gate
        self._address = address
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._gate.reactor.callFromThread(self._gate._release, self._address)


class ParseGate:
    """Used on the reactor thread only (but for :meth:`Slot.release`)."""

    def __init__(self, per_address: int, total: int, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.per_address = max(1, per_address)
        self.total = max(1, total)
        self._running: dict[str, int] = {}
        self._in_progress = 0
        self._waiting: deque[tuple[str, defer.Deferred[Slot]]] = deque()
        self._waiting_by_address: dict[str, int] = {}

    def acquire(self, address: str) -> defer.Deferred[Slot]:
        if self._fits(address) and not self._waiting:
            return defer.succeed(self._grant(address))
        if self._waiting_by_address.get(address, 0) >= QUEUE_PER_ADDRESS:
            return defer.fail(
                TooManyRequests(
                    f"too many unauthenticated requests from this address (over "
                    f"{self.per_address} in progress and {QUEUE_PER_ADDRESS} waiting); "
                    "send credentials in an HTTP Authorization header, or wait"
                )
            )
        if len(self._waiting) >= QUEUE_TOTAL:
            return defer.fail(
                Unavailable("too many unauthenticated requests in progress; try again shortly")
            )
        d: defer.Deferred[Slot] = defer.Deferred()
        self._waiting.append((address, d))
        self._waiting_by_address[address] = self._waiting_by_address.get(address, 0) + 1
        return d

    def in_progress(self) -> int:
        return self._in_progress

    def _fits(self, address: str) -> bool:
        return self._in_progress < self.total and self._running.get(address, 0) < self.per_address

    def _grant(self, address: str) -> Slot:
        self._running[address] = self._running.get(address, 0) + 1
        self._in_progress += 1
        return Slot(self, address)

    def _release(self, address: str) -> None:
        self._in_progress -= 1
        left = self._running[address] - 1
        if left:
            self._running[address] = left
        else:
            del self._running[address]
        # the first waiter that fits (one address at its limit does not stall others)
        for i, (waiting, d) in enumerate(self._waiting):
            if self._fits(waiting):
                del self._waiting[i]
                n = self._waiting_by_address[waiting] - 1
                if n:
                    self._waiting_by_address[waiting] = n
                else:
                    del self._waiting_by_address[waiting]
                d.callback(self._grant(waiting))
                return
