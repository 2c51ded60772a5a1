"""Outgoing connections of plugins: the only way a plugin reaches the network.

Every plugin object has ``self.net`` (a :class:`Net`, handed to it by the
server like its clock, see :func:`pba_server.sdk.loader.instantiate`):

- ``self.net.connect(host, port, timeout)``: a connected TCP socket (wrap it
  in TLS yourself with :mod:`ssl`, ``server_hostname=host``);
- ``self.net.http_session()``: a :class:`requests.Session` for HTTP(S),
  also what you give a library that takes one (``stripe.RequestsClient(
  session=...)``, ``zeep.Transport(session=...)``).

Both apply the server's outgoing-address policy (:mod:`pba_server.core.
netpolicy`, the same as for webhooks) when they connect: the host is resolved,
every address it resolves to must be allowed (not loopback, private,
link-local such as 169.254.169.254, ... unless the operator allowed that
network), and the socket goes to the address that was checked. A redirect is
a new connection and is checked again; proxies from the environment are not
used (they would connect on the plugin's behalf, unchecked).

A connection that is refused by the policy, does not resolve, is refused by
the peer, times out while connecting or fails its TLS handshake raises one
:class:`ConnectionFailed`: the same message whatever the reason, with a
correlation id (``reference``); the detail goes to the operator's log
(logger ``pba.plugins.net``) under that id. So an answer never tells an
open port from a closed or filtered one. Report it to the server as your
kind's "unavailable" error with ``str(exc)`` as the message, never with
more detail.

Plugins must not import :mod:`socket`, :mod:`requests`, :mod:`urllib`,
:mod:`urllib3` or :mod:`http.client` themselves (a test checks
``plugins/*.py``); :data:`Timeout` is here for ``except`` clauses.
"""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.connection

from pba_server.core import netpolicy
from pba_server.sdk import PluginError

log = logging.getLogger("pba.plugins.net")

GENERIC = "could not reach the endpoint"
Timeout = requests.Timeout  # a request that got no answer in time (after connecting)


class ConnectionFailed(PluginError, OSError):
    """The endpoint could not be reached. The message is the same for every
    reason (policy, DNS, refused, timeout, TLS); ``reference`` finds the
    detail in the operator's log."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"{GENERIC} (ref {reference})")
        self.reference = reference

    def __str__(self) -> str:
        return f"{GENERIC} (ref {self.reference})"


def failure(endpoint: str, detail: object) -> ConnectionFailed:
    """Log ``detail`` for the operator under a new id; the tenant's error."""
    reference = uuid.uuid4().hex[:12]
    log.warning("outgoing connection to %s failed (ref %s): %s", endpoint, reference, detail)
    return ConnectionFailed(reference)


def _checked_address(host: str, port: int) -> str:
    """The policy-checked address to connect to (raises RefusedAddress / OSError)."""
    return netpolicy.resolve(host.strip("[]"), port)


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to ``host``:``port`` at an address the policy allows."""
    endpoint = f"{host}:{port}"
    try:
        ip = _checked_address(host, port)
        return socket.create_connection((ip, port), timeout=timeout)
    except netpolicy.RefusedAddress as exc:
        raise failure(endpoint, exc) from None
    except (OSError, UnicodeError) as exc:
        raise failure(endpoint, f"{type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- HTTP


class _CheckedConnectionMixin:
    """urllib3 connections whose socket goes to the checked address; the host
    name stays what TLS verifies (SNI) and what the Host header says."""

    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        conn: Any = self  # an urllib3 HTTPConnection (this mixin's subclasses)
        try:
            ip = _checked_address(self._dns_host, self.port)
        except netpolicy.RefusedAddress as exc:
            raise urllib3.exceptions.NewConnectionError(conn, str(exc)) from None
        except (OSError, UnicodeError) as exc:
            raise urllib3.exceptions.NewConnectionError(
                conn, f"cannot resolve {self.host}: {exc}"
            ) from None
        try:
            return urllib3.util.connection.create_connection(
                (ip, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(
                conn, f"connection to {self.host} ({ip}) timed out"
            ) from exc
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(
                conn, f"cannot connect to {self.host} ({ip}): {exc}"
            ) from exc


class _HTTPConnection(_CheckedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_CheckedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        raise requests.exceptions.InvalidProxyURL("plugins connect without proxies")


class CheckedSession(requests.Session):
    """A requests session under the outgoing-address policy; connection
    failures raise :class:`ConnectionFailed`."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # no proxies (nor .netrc) from the environment
        self.max_redirects = 5
        adapter = _CheckedAdapter(max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, **kwargs)
        except requests.ConnectionError as exc:
            raise failure(urlsplit(request.url or "").netloc, exc) from None
        except requests.exceptions.InvalidProxyURL as exc:
            raise failure(urlsplit(request.url or "").netloc, exc) from None


class Net:
    """What a plugin connects with (``self.net``)."""

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A TCP socket to ``host``:``port``; raises :class:`ConnectionFailed`."""
        return connect(host, port, timeout)

    def http_session(self) -> requests.Session:
        """A new HTTP(S) session; close it when done."""
        return CheckedSession()


__all__ = ["GENERIC", "CheckedSession", "ConnectionFailed", "Net", "Timeout", "connect", "failure"]
