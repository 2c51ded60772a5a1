"""A small EPP server for the tests: TLS on loopback with a self-signed
certificate made here, RFC 5734 framing, and an in-memory registry that
answers domain check/create/renew/transfer/info/update (RFC 5731) and
contact create (RFC 5733) with the RFCs' result codes.

Knobs: ``drop`` -- ``{"create": "after"}`` drops the connection after doing
the next domain create without answering (``"before"``: without doing it);
``transfer_pending`` -- transfers answer 1001 pending (else 1000
serverApproved); ``commands`` -- every command seen (verb, object, clTRID).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socketserver
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

EPP = "urn:ietf:params:xml:ns:epp-1.0"
DOMAIN = "urn:ietf:params:xml:ns:domain-1.0"
CONTACT = "urn:ietf:params:xml:ns:contact-1.0"
NS = {"epp": EPP, "domain": DOMAIN, "contact": CONTACT}


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "epp-cert.pem", folder / "epp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Registry:
    users: dict[str, str] = field(default_factory=lambda: {"registrar1": "secret-pw1"})
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, str] = field(default_factory=dict)  # id -> sponsor
    drop: dict[str, str] = field(default_factory=dict)
    transfer_pending: bool = False
    commands: list[tuple[str, str, str]] = field(default_factory=list)
    seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_foreign(self, name: str, auth: str, sponsor: str = "other") -> None:
        self.domains[name] = {
            "roid": f"D{len(self.domains) + 100}-TEST",
            "clID": sponsor,
            "registrant": "foreign1",
            "contacts": [],
            "ns": [],
            "exDate": dt.date.today().replace(year=dt.date.today().year + 1),
            "auth": auth,
            "status": ["ok"],
        }


def _add_years(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return d.replace(year=d.year + years, day=28)


def _frame(root: Any) -> bytes:
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return struct.pack(">I", len(data) + 4) + data


def _el(parent: Any, ns: str, tag: str, text: str | None = None, **attrs: str) -> Any:
    e = etree.SubElement(parent, f"{{{ns}}}{tag}", **attrs)
    if text is not None:
        e.text = text
    return e


MESSAGES = {
    "1000": "Command completed successfully",
    "1001": "Command completed successfully; action pending",
    "1500": "Command completed successfully; ending session",
    "2002": "Command use error",
    "2004": "Parameter value range error",
    "2005": "Parameter value syntax error",
    "2200": "Authentication error",
    "2201": "Authorization error",
    "2300": "Object pending transfer",
    "2302": "Object exists",
    "2303": "Object does not exist",
    "2306": "Parameter value policy error",
}


class Handler(socketserver.BaseRequestHandler):
    server: EppServer

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.request.recv(n - len(out))
            if not chunk:
                raise ConnectionError
            out += chunk
        return out

    def response(self, code: str, trid: str, res: Any = None) -> Any:
        root = etree.Element(f"{{{EPP}}}epp", nsmap={None: EPP})
        r = _el(root, EPP, "response")
        result = _el(r, EPP, "result", code=code)
        _el(result, EPP, "msg", MESSAGES.get(code, "error"))
        if res is not None:
            _el(r, EPP, "resData").append(res)
        tr = _el(r, EPP, "trID")
        _el(tr, EPP, "clTRID", trid)
        self.server.registry.seq += 1
        _el(tr, EPP, "svTRID", f"SV-{self.server.registry.seq}")
        return root

    def handle(self) -> None:
        greeting = etree.Element(f"{{{EPP}}}epp", nsmap={None: EPP})
        g = _el(greeting, EPP, "greeting")
        _el(g, EPP, "svID", "Test EPP server")
        _el(g, EPP, "svDate", dt.datetime.now(dt.UTC).isoformat())
        menu = _el(g, EPP, "svcMenu")
        _el(menu, EPP, "version", "1.0")
        _el(menu, EPP, "lang", "en")
        _el(menu, EPP, "objURI", DOMAIN)
        _el(menu, EPP, "objURI", CONTACT)
        self.request.sendall(_frame(greeting))
        self.client_id: str | None = None
        try:
            while True:
                (length,) = struct.unpack(">I", self._read(4))
                root = etree.fromstring(self._read(length - 4))
                answer = self.dispatch(root)
                if answer is None:  # dropped on purpose
                    return
                self.request.sendall(_frame(answer))
                code = answer.find("epp:response/epp:result", NS).get("code")
                if code == "1500":
                    return
        except (ConnectionError, OSError, struct.error):
            return

    def dispatch(self, root: Any) -> Any:
        cmd = root.find("epp:command", NS)
        if cmd is None:
            return self.response("2002", "")
        trid = cmd.findtext("epp:clTRID", default="", namespaces=NS)
        verb_el = next(c for c in cmd if etree.QName(c).localname != "clTRID")
        verb = etree.QName(verb_el).localname
        reg = self.server.registry
        if verb == "login":
            user = verb_el.findtext("epp:clID", namespaces=NS)
            pw = verb_el.findtext("epp:pw", namespaces=NS)
            reg.commands.append(("login", "", trid))
            if reg.users.get(user or "") != pw:
                return self.response("2200", trid)
            self.client_id = user
            return self.response("1000", trid)
        if verb == "logout":
            reg.commands.append(("logout", "", trid))
            return self.response("1500", trid)
        if self.client_id is None:
            return self.response("2002", trid)
        obj = verb_el[0]
        kind = etree.QName(obj).namespace
        reg.commands.append((verb, "contact" if kind == CONTACT else "domain", trid))
        with reg.lock:
            if kind == CONTACT:
                return self.contact(verb, obj, trid)
            mode = reg.drop.get(verb)
            if mode == "before":
                reg.drop.pop(verb)
                return None
            answer = getattr(self, f"domain_{verb}")(obj, trid)
            if mode == "after":
                reg.drop.pop(verb)
                return None
            return answer

    # -- contacts
    def contact(self, verb: str, obj: Any, trid: str) -> Any:
        reg = self.server.registry
        cid = obj.findtext("contact:id", namespaces=NS) or ""
        if verb != "create":
            return self.response("2002", trid)
        if not 3 <= len(cid) <= 16 or obj.findtext("contact:email", namespaces=NS) is None:
            return self.response("2005", trid)
        if cid in reg.contacts:
            return self.response("2302", trid)
        reg.contacts[cid] = self.client_id or ""
        res = etree.Element(f"{{{CONTACT}}}creData", nsmap={"contact": CONTACT})
        _el(res, CONTACT, "id", cid)
        _el(res, CONTACT, "crDate", dt.datetime.now(dt.UTC).isoformat())
        return self.response("1000", trid, res)

    # -- domains
    def _name(self, obj: Any) -> str:
        return (obj.findtext("domain:name", namespaces=NS) or "").strip().lower()

    def _years(self, obj: Any) -> int:
        p = obj.find("domain:period", NS)
        return int(p.text) if p is not None else 1

    def domain_check(self, obj: Any, trid: str) -> Any:
        res = etree.Element(f"{{{DOMAIN}}}chkData", nsmap={"domain": DOMAIN})
        for n in obj.findall("domain:name", NS):
            name = (n.text or "").strip().lower()
            cd = _el(res, DOMAIN, "cd")
            taken = name in self.server.registry.domains
            _el(cd, DOMAIN, "name", name, avail="0" if taken else "1")
            if taken:
                _el(cd, DOMAIN, "reason", "In use")
        return self.response("1000", trid, res)

    def domain_create(self, obj: Any, trid: str) -> Any:
        reg = self.server.registry
        name = self._name(obj)
        if name in reg.domains:
            return self.response("2302", trid)
        registrant = obj.findtext("domain:registrant", namespaces=NS) or ""
        if registrant not in reg.contacts:
            return self.response("2303", trid)
        years = self._years(obj)
        if not 1 <= years <= 10:
            return self.response("2004", trid)
        ex = _add_years(dt.date.today(), years)
        reg.domains[name] = {
            "roid": f"D{len(reg.domains) + 1}-TEST",
            "clID": self.client_id,
            "registrant": registrant,
            "contacts": [(c.get("type"), c.text) for c in obj.findall("domain:contact", NS)],
            "ns": [h.text.lower() for h in obj.findall("domain:ns/domain:hostObj", NS)],
            "exDate": ex,
            "auth": obj.findtext("domain:authInfo/domain:pw", namespaces=NS) or "",
            "status": ["ok"],
        }
        res = etree.Element(f"{{{DOMAIN}}}creData", nsmap={"domain": DOMAIN})
        _el(res, DOMAIN, "name", name)
        _el(res, DOMAIN, "crDate", dt.datetime.now(dt.UTC).isoformat())
        _el(res, DOMAIN, "exDate", f"{ex.isoformat()}T00:00:00.0Z")
        return self.response("1000", trid, res)

    def _ours(self, name: str, trid: str) -> tuple[dict[str, Any] | None, Any]:
        d = self.server.registry.domains.get(name)
        if d is None:
            return None, self.response("2303", trid)
        if d["clID"] != self.client_id:
            return None, self.response("2201", trid)
        return d, None

    def domain_renew(self, obj: Any, trid: str) -> Any:
        name = self._name(obj)
        d, err = self._ours(name, trid)
        if d is None:
            return err
        cur = obj.findtext("domain:curExpDate", namespaces=NS)
        if cur != d["exDate"].isoformat():
            return self.response("2306", trid)
        d["exDate"] = _add_years(d["exDate"], self._years(obj))
        res = etree.Element(f"{{{DOMAIN}}}renData", nsmap={"domain": DOMAIN})
        _el(res, DOMAIN, "name", name)
        _el(res, DOMAIN, "exDate", f"{d['exDate'].isoformat()}T00:00:00.0Z")
        return self.response("1000", trid, res)

    def domain_transfer(self, obj: Any, trid: str) -> Any:
        reg = self.server.registry
        name = self._name(obj)
        d = reg.domains.get(name)
        if d is None:
            return self.response("2303", trid)
        if "pendingTransfer" in d["status"]:
            return self.response("2300", trid)
        if d["clID"] == self.client_id:
            return self.response("2106", trid)
        if (obj.findtext("domain:authInfo/domain:pw", namespaces=NS) or "") != d["auth"]:
            return self.response("2201", trid)
        res = etree.Element(f"{{{DOMAIN}}}trnData", nsmap={"domain": DOMAIN})
        _el(res, DOMAIN, "name", name)
        if reg.transfer_pending:
            d["status"] = ["pendingTransfer"]
            d["gaining"] = self.client_id
            _el(res, DOMAIN, "trStatus", "pending")
            code = "1001"
        else:
            d["clID"] = self.client_id
            d["exDate"] = _add_years(d["exDate"], self._years(obj))
            _el(res, DOMAIN, "trStatus", "serverApproved")
            code = "1000"
        _el(res, DOMAIN, "reID", self.client_id or "")
        _el(res, DOMAIN, "exDate", f"{d['exDate'].isoformat()}T00:00:00.0Z")
        return self.response(code, trid, res)

    def domain_info(self, obj: Any, trid: str) -> Any:
        name = self._name(obj)
        d = self.server.registry.domains.get(name)
        if d is None:
            return self.response("2303", trid)
        sponsor = d["clID"] == self.client_id or d.get("gaining") == self.client_id
        res = etree.Element(f"{{{DOMAIN}}}infData", nsmap={"domain": DOMAIN})
        _el(res, DOMAIN, "name", name)
        _el(res, DOMAIN, "roid", d["roid"])
        for s in d["status"]:
            _el(res, DOMAIN, "status", s=s)
        if sponsor:
            _el(res, DOMAIN, "registrant", d["registrant"])
            for t, c in d["contacts"]:
                _el(res, DOMAIN, "contact", c, type=t)
            if d["ns"]:
                ns = _el(res, DOMAIN, "ns")
                for h in d["ns"]:
                    _el(ns, DOMAIN, "hostObj", h)
        _el(res, DOMAIN, "clID", d["clID"])
        _el(res, DOMAIN, "exDate", f"{d['exDate'].isoformat()}T00:00:00.0Z")
        return self.response("1000", trid, res)

    def domain_update(self, obj: Any, trid: str) -> Any:
        name = self._name(obj)
        d, err = self._ours(name, trid)
        if d is None:
            return err
        for h in obj.findall("domain:rem/domain:ns/domain:hostObj", NS):
            if h.text.lower() in d["ns"]:
                d["ns"].remove(h.text.lower())
        for h in obj.findall("domain:add/domain:ns/domain:hostObj", NS):
            if h.text.lower() in d["ns"]:
                return self.response("2302", trid)
            d["ns"].append(h.text.lower())
        for c in obj.findall("domain:rem/domain:contact", NS):
            d["contacts"] = [x for x in d["contacts"] if x != (c.get("type"), c.text)]
        for c in obj.findall("domain:add/domain:contact", NS):
            d["contacts"].append((c.get("type"), c.text))
        reg = obj.findtext("domain:chg/domain:registrant", namespaces=NS)
        if reg:
            d["registrant"] = reg
        return self.response("1000", trid)


class _TLSServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EppServer(_TLSServer):
    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.registry = Registry()
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.settimeout(10)
        return self.tls.wrap_socket(sock, server_side=True), addr

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
