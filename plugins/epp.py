"""A domain registrar speaking EPP: RFC 5730 (protocol) over TLS as RFC 5734
says (4-byte length-prefixed frames, the server's greeting, login/logout),
the domain mapping of RFC 5731 (check, create, renew, transfer, info,
update) and the contact mapping of RFC 5733 (create).

Settings: ``host``, ``port`` (700), ``username`` (our clID), ``password``
(secret), ``tls_verify`` (default true), ``ca_file`` (a CA bundle to verify
the registry's certificate with; empty: the system's), ``timeout`` (seconds,
default 30) and ``contact_prefix`` (default ``pba``). ``host``, ``port`` and
``ca_file`` are operator settings (only the provider's administrators set
them); the connection is made with the SDK's ``self.net.connect`` under the
server's outgoing-address policy.

Each call opens a session (connect, greeting, login), runs its commands and
logs out. Our idempotency key is every command's ``clTRID``. A connection
that drops or times out mid-command raises :class:`RegistrarUnavailable`
(retryable); the next call connects again.

A repeated transfer request finds the transfer pending (2300) or the domain
already ours (2106 with us as sponsor): pending or done, never an error.

A repeated registration (the answer to the first was lost) must not register
twice, nor fail: the contacts' ids are derived from the key (so a repeat
creates the same ones; ``2302`` on a contact we derived is ours), and a
``2302`` (object exists) on the domain create is answered by a
``domain:info``: if we sponsor the domain and its registrant is the contact
derived from this key, the first call did register it and the result is
returned as done; otherwise it is someone else's: :class:`ObjectExists`.

Result codes: 1000/1001 ok (1001: pending, e.g. a transfer); 2302 ->
ObjectExists; 2200/2201/2202 -> AuthorizationError; 2303 -> ObjectNotFound;
2400, 2500, 2501, 2502 and socket errors or timeouts -> RegistrarUnavailable;
anything else -> RegistrarError. All are final except RegistrarUnavailable.
"""

from __future__ import annotations

import hashlib
import ssl
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from lxml import etree

from pba_server.sdk import SDK_VERSION, ConfigurationError, PluginInfo, SettingField
from pba_server.sdk.net import ConnectionFailed
from pba_server.sdk.registrar import (
    AuthorizationError,
    CheckResult,
    Contact,
    DomainInfo,
    DomainRegistrar,
    DomainResult,
    ObjectExists,
    ObjectNotFound,
    RegistrarError,
    RegistrarUnavailable,
)

EPP_NS = "urn:ietf:params:xml:ns:epp-1.0"
DOMAIN_NS = "urn:ietf:params:xml:ns:domain-1.0"
CONTACT_NS = "urn:ietf:params:xml:ns:contact-1.0"
HOST_NS = "urn:ietf:params:xml:ns:host-1.0"
MAX_FRAME = 4 * 1024 * 1024
NS = {"epp": EPP_NS, "domain": DOMAIN_NS, "contact": CONTACT_NS}
UNAVAILABLE = {"2400", "2500", "2501", "2502"}
AUTHORIZATION = {"2200", "2201", "2202"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


class EppResponse:
    def __init__(self, root: Any) -> None:
        self.root = root
        result = root.find("epp:response/epp:result", NS)
        if result is None:
            raise RegistrarUnavailable("EPP: a frame without a result")
        self.code = str(result.get("code", ""))
        self.message = (result.findtext("epp:msg", default="", namespaces=NS) or "").strip()
        reason = result.findtext("epp:extValue/epp:reason", default="", namespaces=NS)
        if reason:
            self.message = f"{self.message}: {reason.strip()}"

    def find(self, path: str) -> Any:
        return self.root.find(f"epp:response/epp:resData/{path}", NS)

    def text(self, path: str) -> str:
        el = self.find(path)
        return (el.text or "").strip() if el is not None else ""

    @property
    def ok(self) -> bool:
        return self.code in ("1000", "1001")


def raise_for(resp: EppResponse) -> None:
    """Map an EPP result code to the SDK's exceptions."""
    if resp.ok:
        return
    text = f"EPP {resp.code}: {resp.message or 'command failed'}"
    if resp.code == "2302":
        raise ObjectExists(text, resp.code)
    if resp.code in AUTHORIZATION:
        raise AuthorizationError(text, resp.code)
    if resp.code == "2303":
        raise ObjectNotFound(text, resp.code)
    if resp.code in UNAVAILABLE:
        raise RegistrarUnavailable(text, resp.code)
    raise RegistrarError(text, resp.code)


def _date(value: str) -> date | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return date.fromisoformat(value[:10])


# ---------------------------------------------------------------- framing


class EppConnection:
    """One EPP session over TLS (RFC 5734 framing)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.greeting: Any = None

    def send(self, root: Any) -> None:
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        self.sock.sendall(struct.pack(">I", len(data) + 4) + data)

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("the registry closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> Any:
        (length,) = struct.unpack(">I", self._read(4))
        if not 5 <= length <= MAX_FRAME:
            raise ConnectionError(f"bad EPP frame length {length}")
        return etree.fromstring(self._read(length - 4), _PARSER)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def epp_root() -> tuple[Any, Any]:
    root = etree.Element(_q(EPP_NS, "epp"), nsmap={None: EPP_NS})
    return root, etree.SubElement(root, _q(EPP_NS, "command"))


def _sub(parent: Any, ns: str, tag: str, text: str | None = None, **attrs: str) -> Any:
    el = etree.SubElement(parent, _q(ns, tag), **attrs)
    if text is not None:
        el.text = text
    return el


def _obj(command: Any, verb: str, ns: str, **attrs: str) -> Any:
    """<verb><obj:verb xmlns:obj=...>: the object element of a command."""
    outer = _sub(command, EPP_NS, verb, **attrs)
    prefix = {DOMAIN_NS: "domain", CONTACT_NS: "contact"}[ns]
    return etree.SubElement(outer, _q(ns, verb), nsmap={prefix: ns})


# ---------------------------------------------------------------- the plugin


class EppRegistrar(DomainRegistrar):
    info = PluginInfo(
        name="epp",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="domain_registrar",
        description="A registry or registrar over EPP (RFC 5730-5734)",
        settings=(
            SettingField("host", description="the EPP server's host name", kind="host"),
            SettingField("port", type="int", required=False, default="700", kind="port"),
            SettingField("username", description="our client id (clID)"),
            SettingField("password", secret=True),
            SettingField("tls_verify", type="bool", required=False, default="true"),
            SettingField(
                "ca_file", required=False, default="", description="CA bundle (PEM)", kind="path"
            ),
            SettingField("timeout", type="int", required=False, default="30"),
            SettingField("contact_prefix", required=False, default="pba"),
        ),
        capabilities=frozenset(
            {"check", "register", "renew", "transfer", "info", "set_nameservers", "set_contacts"}
        ),
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        self.host = (settings.get("host") or "").strip()
        if not self.host:
            raise ConfigurationError("host is required")
        try:
            self.port = int(settings.get("port") or 700)
            self.timeout = float(settings.get("timeout") or 30)
        except ValueError:
            raise ConfigurationError("port and timeout must be numbers") from None
        if not 0 < self.port < 65536 or self.timeout <= 0:
            raise ConfigurationError("port must be 1-65535 and timeout positive")
        self.username = settings.get("username") or ""
        self.password = settings.get("password") or ""
        if not 3 <= len(self.username) <= 16 or not 6 <= len(self.password) <= 16:
            raise ConfigurationError(
                "username must be 3-16 and password 6-16 characters (RFC 5730)"
            )
        self.verify = str(settings.get("tls_verify", "true")).lower() in ("1", "true", "yes", "on")
        self.ca_file = settings.get("ca_file") or ""
        self.prefix = (settings.get("contact_prefix") or "pba")[:5]
        self._conn: EppConnection | None = None
        self._seq = 0

    # -- sessions
    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> EppConnection:
        # the SDK's connect: the server's outgoing-address policy, one generic error
        raw = self.net.connect(self.host, self.port, self.timeout)
        try:
            sock = self._tls().wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        conn = EppConnection(sock)
        try:
            conn.greeting = conn.receive()
            if conn.greeting.find("epp:greeting", NS) is None:
                raise ConnectionError("no EPP greeting")
            root, cmd = epp_root()
            login = _sub(cmd, EPP_NS, "login")
            _sub(login, EPP_NS, "clID", self.username)
            _sub(login, EPP_NS, "pw", self.password)
            options = _sub(login, EPP_NS, "options")
            _sub(options, EPP_NS, "version", "1.0")
            _sub(options, EPP_NS, "lang", "en")
            svcs = _sub(login, EPP_NS, "svcs")
            for uri in (DOMAIN_NS, CONTACT_NS):
                _sub(svcs, EPP_NS, "objURI", uri)
            _sub(cmd, EPP_NS, "clTRID", self._trid("login"))
            conn.send(root)
            resp = EppResponse(conn.receive())
        except BaseException:
            conn.close()
            raise
        if not resp.ok:
            conn.close()
            if resp.code in ("2200", "2501"):
                raise RegistrarUnavailable(
                    f"EPP login refused {resp.code}: {resp.message}", resp.code
                )
            raise_for(resp)
        return conn

    def _trid(self, key: str) -> str:
        self._seq += 1
        base = key if key else f"pba-{self._seq}"
        return base[:64]

    def _logout(self, conn: EppConnection) -> None:
        try:
            root, cmd = epp_root()
            _sub(cmd, EPP_NS, "logout")
            _sub(cmd, EPP_NS, "clTRID", self._trid("logout"))
            conn.send(root)
            conn.receive()
        except (OSError, ConnectionError, etree.XMLSyntaxError, struct.error):
            pass
        finally:
            conn.close()

    @contextmanager
    def _session(self) -> Iterator[Callable[[Any, str], EppResponse]]:
        """A logged-in session; yields ``run(root, cltrid) -> response``.
        Network trouble anywhere is RegistrarUnavailable; the connection is
        dropped, so the next call connects again."""
        try:
            conn = self._conn or self._connect()
        except ConnectionFailed as exc:  # not reached: the detail is in the operator's log
            raise RegistrarUnavailable(f"EPP: {exc}") from None
        except (OSError, ConnectionError, etree.XMLSyntaxError, struct.error) as exc:
            raise RegistrarUnavailable(f"EPP {self.host}:{self.port}: {exc}") from None
        self._conn = conn

        def run(root: Any, cltrid: str) -> EppResponse:
            command = root.find("epp:command", NS)
            _sub(command, EPP_NS, "clTRID", cltrid[:64])
            try:
                conn.send(root)
                resp = EppResponse(conn.receive())
            except (OSError, ConnectionError, etree.XMLSyntaxError, struct.error) as exc:
                conn.close()
                self._conn = None
                raise RegistrarUnavailable(
                    f"EPP connection lost mid-command: {type(exc).__name__}: {exc}"
                ) from None
            if resp.code in ("2500", "2501", "2502"):  # the server ends the session
                conn.close()
                self._conn = None
            return resp

        try:
            yield run
        finally:
            if self._conn is not None:
                self._conn = None
                self._logout(conn)

    # -- helpers
    def contact_id(self, key: str, role: str) -> str:
        digest = hashlib.sha256(f"{key}|{role}".encode()).hexdigest()
        return (self.prefix + digest)[:16]

    def _create_contact(
        self, run: Callable[[Any, str], EppResponse], key: str, role: str, c: Contact
    ) -> str:
        cid = self.contact_id(key, role)
        root, cmd = epp_root()
        obj = _obj(cmd, "create", CONTACT_NS)
        _sub(obj, CONTACT_NS, "id", cid)
        postal = _sub(obj, CONTACT_NS, "postalInfo", type="int")
        _sub(postal, CONTACT_NS, "name", c.name)
        if c.organization:
            _sub(postal, CONTACT_NS, "org", c.organization)
        addr = _sub(postal, CONTACT_NS, "addr")
        if c.street:
            _sub(addr, CONTACT_NS, "street", c.street)
        _sub(addr, CONTACT_NS, "city", c.city or "-")
        if c.state:
            _sub(addr, CONTACT_NS, "sp", c.state)
        if c.postal_code:
            _sub(addr, CONTACT_NS, "pc", c.postal_code)
        _sub(addr, CONTACT_NS, "cc", (c.country or "XX").upper())
        if c.phone:
            _sub(obj, CONTACT_NS, "voice", c.phone)
        _sub(obj, CONTACT_NS, "email", c.email)
        auth = _sub(obj, CONTACT_NS, "authInfo")
        _sub(auth, CONTACT_NS, "pw", hashlib.sha256(f"auth|{cid}|{key}".encode()).hexdigest()[:16])
        resp = run(root, f"{key}-c-{role}"[:64])
        if resp.code == "2302":  # derived from our key: a repeat made it already
            return cid
        raise_for(resp)
        return cid

    def _info(self, run: Callable[[Any, str], EppResponse], name: str, key: str) -> EppResponse:
        root, cmd = epp_root()
        obj = _obj(cmd, "info", DOMAIN_NS)
        _sub(obj, DOMAIN_NS, "name", name, hosts="all")
        resp = run(root, key)
        raise_for(resp)
        return resp

    def _to_info(self, name: str, resp: EppResponse) -> DomainInfo:
        data = resp.find("domain:infData")
        statuses = (
            tuple(s.get("s", "") for s in data.findall("domain:status", NS))
            if data is not None
            else ()
        )
        expires = _date(resp.text("domain:infData/domain:exDate"))
        hosts = tuple(
            (h.text or "").strip().lower()
            for h in (data.findall("domain:ns/domain:hostObj", NS) if data is not None else [])
        )
        if any(s == "pendingTransfer" for s in statuses):
            status = "transferring"
        elif any(s == "pendingCreate" for s in statuses):
            status = "pending"
        elif expires is not None and expires < self.today():
            status = "expired"
        else:
            status = "active"
        return DomainInfo(
            name=name,
            status=status,  # type: ignore[arg-type]
            expires_on=expires,
            nameservers=hosts,
            registry_id=resp.text("domain:infData/domain:roid") or None,
            registry_status=statuses,
        )

    # -- the kind
    def check(self, names: list[str]) -> list[CheckResult]:
        out: dict[str, CheckResult] = {}
        with self._session() as run:
            for start in range(0, len(names), 20):  # registries cap a check's size
                root, cmd = epp_root()
                obj = _obj(cmd, "check", DOMAIN_NS)
                for n in names[start : start + 20]:
                    _sub(obj, DOMAIN_NS, "name", n)
                resp = run(
                    root,
                    self._trid(
                        f"check-{self._seq}-{hashlib.sha256(repr(names).encode()).hexdigest()[:8]}"
                    ),
                )
                raise_for(resp)
                data = resp.find("domain:chkData")
                for cd in data.findall("domain:cd", NS) if data is not None else []:
                    name_el = cd.find("domain:name", NS)
                    n = (name_el.text or "").strip().lower()
                    avail = name_el.get("avail") in ("1", "true")
                    reason = (cd.findtext("domain:reason", default="", namespaces=NS) or "").strip()
                    out[n] = CheckResult(n, avail, "" if avail else (reason or "taken"))
        return [out.get(n.lower(), CheckResult(n, False, "no answer")) for n in names]

    def register(
        self,
        *,
        key: str,
        name: str,
        years: int,
        contacts: dict[str, Contact],
        nameservers: list[str],
    ) -> DomainResult:
        if "registrant" not in contacts:
            raise RegistrarError("a registrant contact is required")
        with self._session() as run:
            ids = {role: self._create_contact(run, key, role, c) for role, c in contacts.items()}
            root, cmd = epp_root()
            obj = _obj(cmd, "create", DOMAIN_NS)
            _sub(obj, DOMAIN_NS, "name", name)
            _sub(obj, DOMAIN_NS, "period", str(years), unit="y")
            if nameservers:
                ns = _sub(obj, DOMAIN_NS, "ns")
                for h in nameservers:
                    _sub(ns, DOMAIN_NS, "hostObj", h)
            _sub(obj, DOMAIN_NS, "registrant", ids["registrant"])
            for role in ("admin", "tech", "billing"):
                if role in ids:
                    _sub(obj, DOMAIN_NS, "contact", ids[role], type=role)
            auth = _sub(obj, DOMAIN_NS, "authInfo")
            _sub(auth, DOMAIN_NS, "pw", hashlib.sha256(f"domain|{key}".encode()).hexdigest()[:16])
            resp = run(root, key)
            if resp.code == "2302":
                # ours from a first attempt whose answer was lost?
                try:
                    info = self._info(run, name, f"{key}-i")
                except (AuthorizationError, ObjectNotFound):
                    raise ObjectExists(f"EPP 2302: {name} exists", "2302") from None
                registrant = info.text("domain:infData/domain:registrant")
                sponsor = info.text("domain:infData/domain:clID")
                if registrant == ids["registrant"] and sponsor == self.username:
                    i = self._to_info(name, info)
                    return DomainResult(name, "active", i.expires_on, i.registry_id)
                raise ObjectExists(f"EPP 2302: {name} exists", "2302")
            raise_for(resp)
            expires = _date(resp.text("domain:creData/domain:exDate"))
            status = "pending" if resp.code == "1001" else "active"
            info = self._info(run, name, f"{key}-i")
            roid = info.text("domain:infData/domain:roid") or None
            return DomainResult(name, status, expires, roid)  # type: ignore[arg-type]

    def renew(self, *, key: str, name: str, years: int, current_expiry: date) -> DomainResult:
        with self._session() as run:
            root, cmd = epp_root()
            obj = _obj(cmd, "renew", DOMAIN_NS)
            _sub(obj, DOMAIN_NS, "name", name)
            _sub(obj, DOMAIN_NS, "curExpDate", current_expiry.isoformat())
            _sub(obj, DOMAIN_NS, "period", str(years), unit="y")
            resp = run(root, key)
            raise_for(resp)
            expires = _date(resp.text("domain:renData/domain:exDate"))
            return DomainResult(name, "active", expires, None)

    def transfer(self, *, key: str, name: str, auth_code: str, years: int) -> DomainResult:
        with self._session() as run:
            root, cmd = epp_root()
            obj = _obj(cmd, "transfer", DOMAIN_NS, op="request")
            _sub(obj, DOMAIN_NS, "name", name)
            _sub(obj, DOMAIN_NS, "period", str(years), unit="y")
            auth = _sub(obj, DOMAIN_NS, "authInfo")
            _sub(auth, DOMAIN_NS, "pw", auth_code)
            resp = run(root, key)
            if resp.code in ("2300", "2106"):
                # pending already, or not eligible: a repeat after a lost
                # answer finds the transfer pending, or the domain ours
                info = self._info(run, name, f"{key}-i")
                i = self._to_info(name, info)
                if info.text("domain:infData/domain:clID") == self.username:
                    return DomainResult(name, "active", i.expires_on, i.registry_id)
                if resp.code == "2300":
                    return DomainResult(name, "pending", i.expires_on, i.registry_id)
            raise_for(resp)
            tr_status = resp.text("domain:trnData/domain:trStatus")
            expires = _date(resp.text("domain:trnData/domain:exDate"))
            done = resp.code == "1000" and tr_status in ("serverApproved", "clientApproved")
            return DomainResult(name, "active" if done else "pending", expires, None)

    def domain_info(self, name: str) -> DomainInfo:
        with self._session() as run:
            return self._to_info(name, self._info(run, name, self._trid(f"info-{name}")))

    def _update(
        self,
        run: Callable[[Any, str], EppResponse],
        key: str,
        name: str,
        add: list[tuple[str, str, str | None]],
        rem: list[tuple[str, str, str | None]],
        registrant: str | None = None,
    ) -> None:
        """add/rem: (kind, value, contact type): kind ``ns`` or ``contact``."""
        root, cmd = epp_root()
        obj = _obj(cmd, "update", DOMAIN_NS)
        _sub(obj, DOMAIN_NS, "name", name)
        for verb, items in (("add", add), ("rem", rem)):
            if not items:
                continue
            el = _sub(obj, DOMAIN_NS, verb)
            hosts = [v for k, v, _ in items if k == "ns"]
            if hosts:
                ns = _sub(el, DOMAIN_NS, "ns")
                for h in hosts:
                    _sub(ns, DOMAIN_NS, "hostObj", h)
            for k, v, t in items:
                if k == "contact":
                    _sub(el, DOMAIN_NS, "contact", v, type=t or "admin")
        if registrant:
            chg = _sub(obj, DOMAIN_NS, "chg")
            _sub(chg, DOMAIN_NS, "registrant", registrant)
        resp = run(root, key)
        raise_for(resp)

    def set_nameservers(self, *, key: str, name: str, nameservers: list[str]) -> DomainInfo:
        with self._session() as run:
            current = self._to_info(name, self._info(run, name, f"{key}-i"))
            want = [h.lower() for h in nameservers]
            add = [("ns", h, None) for h in want if h not in current.nameservers]
            rem = [("ns", h, None) for h in current.nameservers if h not in want]
            if add or rem:
                self._update(run, key, name, add, rem)
            return self._to_info(name, self._info(run, name, f"{key}-j"))

    def set_contacts(self, *, key: str, name: str, contacts: dict[str, Contact]) -> DomainInfo:
        with self._session() as run:
            info = self._info(run, name, f"{key}-i")
            data = info.find("domain:infData")
            current: dict[str, list[str]] = {}
            for el in data.findall("domain:contact", NS) if data is not None else []:
                current.setdefault(el.get("type", ""), []).append((el.text or "").strip())
            ids = {role: self._create_contact(run, key, role, c) for role, c in contacts.items()}
            add, rem = [], []
            for role in ("admin", "tech", "billing"):
                if role in ids:
                    add.append(("contact", ids[role], role))
                    rem.extend(
                        ("contact", old, role) for old in current.get(role, []) if old != ids[role]
                    )
            add = [a for a in add if a[1] not in current.get(a[2] or "", [])]
            self._update(run, key, name, add, rem, ids.get("registrant"))
            return self._to_info(name, self._info(run, name, f"{key}-j"))


PLUGIN = EppRegistrar
