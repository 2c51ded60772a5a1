"""A SOAP client (zeep) for an upstream pba-server: what the ``upstream_pba``
processing module and the ``upstream_pba_registrar`` plugin use to resell
another pba-server's plans and domains with our reseller account there.

One :class:`Upstream` per plugin object; its zeep client is built on first
use, over the upstream's WSDL parsed once per process (``url?wsdl``) and bound
to the configured ``url`` (not the address the upstream writes into its WSDL).

Every failure is an :class:`UpstreamFault` with the upstream's fault code
(``Client.Validation``...) or ``Server.Unavailable`` for connection errors,
timeouts and answers that are not SOAP, and ``retryable`` saying whether the
same call may succeed later without anyone changing the request:
``Server.*``, connection trouble, and the faults fixed by reconfiguring or
paying at the upstream (``Client.AuthFailed``, ``Client.TooManyAttempts``,
``Client.CreditLimitExceeded``) are retryable, and so is
``Client.InvalidState`` while another order of the subscription is in
progress there; every other ``Client.*`` fault is final.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests
import zeep
import zeep.exceptions
import zeep.helpers
import zeep.transports
import zeep.wsdl
from lxml import etree

from pba_server.sdk.net import ConnectionFailed, Net

# zeep has no type hints: its entry points are called through Any
Document: Any = zeep.wsdl.Document
Transport: Any = zeep.transports.Transport
Client: Any = zeep.Client
serialize_object: Any = zeep.helpers.serialize_object

NAMESPACE = "urn:pba-server:v1"
BINDING = f"{{{NAMESPACE}}}PbaServer"
RETRYABLE_CLIENT_FAULTS = frozenset(
    {"Client.AuthFailed", "Client.TooManyAttempts", "Client.CreditLimitExceeded"}
)

_documents: dict[tuple[str, bool], Any] = {}
_documents_lock = threading.Lock()


class UpstreamFault(Exception):
    """A call to the upstream failed. ``code`` is its fault code (or
    ``Server.Unavailable`` when it could not be reached)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        if self.code == "Client.InvalidState" and "in progress" in self.message:
            return True  # another order of that subscription is running there
        return self.code.startswith("Server.") or self.code in RETRYABLE_CLIENT_FAULTS


def is_true(value: str | None, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def forget_documents() -> None:
    """Drop the cached WSDL documents (tests; an upgraded upstream)."""
    with _documents_lock:
        _documents.clear()


def plain(value: Any) -> Any:
    """A zeep answer as plain dicts and lists."""
    return serialize_object(value, dict)


class Upstream:
    """The upstream pba-server, called as our reseller's user there."""

    def __init__(
        self,
        url: str,
        login: str,
        password: str,
        *,
        timeout: float = 30,
        verify: bool = True,
        sessions: Callable[[], requests.Session] | None = None,
    ) -> None:
        """``sessions`` makes the HTTP sessions: the plugin's
        ``self.net.http_session`` (the outgoing-address policy); the SDK's by
        default."""
        self.sessions = sessions or Net().http_session
        self.url = url.rstrip("/")
        if self.url.endswith("?wsdl"):
            self.url = self.url[: -len("?wsdl")]
        self.login = login
        self.password = password
        self.timeout = timeout
        self.verify = verify
        self._service: Any = None
        self._session: requests.Session | None = None
        self._me: dict[str, Any] | None = None

    # -- the zeep client, built once per object
    def _document(self) -> Any:
        key = (self.url, self.verify)
        with _documents_lock:
            doc = _documents.get(key)
        if doc is not None:
            return doc
        loader = self.sessions()
        loader.verify = self.verify
        try:
            doc = Document(
                f"{self.url}?wsdl",
                Transport(session=loader, timeout=self.timeout),
                settings=zeep.Settings(strict=True),
            )
        finally:
            loader.close()
        with _documents_lock:
            _documents.setdefault(key, doc)
        return doc

    def _connect(self) -> Any:
        if self._service is None:
            session = self.sessions()
            session.auth = (self.login, self.password)
            session.verify = self.verify
            transport = Transport(
                session=session, timeout=self.timeout, operation_timeout=self.timeout
            )
            client = Client(self._document(), transport=transport)
            self._session = session
            self._service = client.create_service(BINDING, self.url)
        return self._service

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._service = None

    def call(self, operation: str, **params: Any) -> Any:
        """Call ``operation``; the answer as plain dicts/lists (None stays None)."""
        try:
            answer = getattr(self._connect(), operation)(**params)
        except zeep.exceptions.Fault as exc:
            code = (exc.code or "").split(":")[-1] or "Server.Internal"
            raise UpstreamFault(code, str(exc.message or "")[:1000]) from None
        except ConnectionFailed as exc:  # the same message for every reason; detail logged
            raise UpstreamFault("Server.Unavailable", str(exc)) from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise UpstreamFault(
                "Server.Unavailable", f"{self.url}: {type(exc).__name__}: {exc}"[:1000]
            ) from None
        except zeep.exceptions.TransportError as exc:
            raise UpstreamFault(
                "Server.Unavailable", f"{self.url}: HTTP {exc.status_code}"
            ) from None
        except (zeep.exceptions.Error, etree.XMLSyntaxError) as exc:
            # the answer is not what the WSDL says: an upstream of another
            # version, or a proxy's error page; the outcome is unknown
            raise UpstreamFault(
                "Server.Unavailable", f"{self.url}: unreadable answer: {exc}"[:1000]
            ) from None
        return plain(answer)

    def me(self) -> dict[str, Any]:
        """WhoAmI: our reseller's user and account at the upstream."""
        if self._me is None:
            self._me = dict(self.call("WhoAmI"))
        return self._me

    def account_id(self, configured: str | None = None) -> int:
        """The upstream account to order for: ``configured`` if set, else our own."""
        if configured:
            try:
                return int(configured)
            except ValueError:
                raise UpstreamFault(
                    "Client.Validation", f"upstream_account_id {configured!r} is not a number"
                ) from None
        return int(self.me()["account_id"])
