"""SOAP 1.1 adapter: spyne's protocol layer, generated from the operation table.

We do not use ``spyne.server.twisted`` (broken on current Twisted, spyne issues
#600/#699). The Twisted resource in :mod:`pba_server.api.http` hands the
request body to :meth:`SoapHandler.handle` on a worker thread; that drives
spyne's protocol steps (parse, validate, deserialize, call, serialize) itself.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, get_args
from xml.sax.saxutils import escape as xml_escape

from lxml import etree
from spyne import (
    Application,
    Boolean,
    ComplexModel,
    Date,
    DateTime,
    Fault,
    Long,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne import (
    Decimal as SpyneDecimal,
)
from spyne.interface.wsdl import Wsdl11
from spyne.protocol.soap import Soap11
from spyne.server.http import HttpBase, HttpMethodContext

from pba_server.api import xmlsafe
from pba_server.api.admission import Slot
from pba_server.api.dispatch import CallMeta, Credentials, Dispatcher
from pba_server.core.auth import Principal
from pba_server.core.errors import (
    AuthFailed,
    InternalError,
    MalformedRequest,
    PbaError,
    UnknownOperation,
    ValidationError,
)
from pba_server.core.operations import Operation
from pba_server.core.schema import fields_of, is_literal, list_item, min_len, unwrap_optional

log = logging.getLogger("pba.soap")

TNS = "urn:pba-server:v1"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_WSDL_PLACEHOLDER = "http://pba-server.invalid/soap-address-placeholder"


class PbaFault(Fault):
    """Every fault we send: faultcode is the stable code, detail a typed PbaFault."""

    __namespace__ = TNS
    __type_name__ = "PbaFault"
    _type_info = [
        ("code", Unicode(min_occurs=1, nillable=False)),
        ("number", Long(min_occurs=1, nillable=False)),
        ("message", Unicode(min_occurs=1, nillable=False)),
        ("field", Unicode),
        ("correlation_id", Unicode),
    ]


def fault_for(err: PbaError, correlation_id: str) -> PbaFault:
    detail = etree.Element("detail")
    el = etree.SubElement(detail, f"{{{TNS}}}PbaFault", nsmap={"tns": TNS})
    for name, value in (
        ("code", err.code),
        ("number", str(err.number)),
        ("message", err.message),
        ("field", err.field),
        ("correlation_id", correlation_id),
    ):
        if value is not None:
            etree.SubElement(el, f"{{{TNS}}}{name}").text = value
    fault = PbaFault(faultcode=err.code, faultstring=err.message)
    fault.detail = el
    fault.pba_error = err  # type: ignore[attr-defined]
    return fault


def fault_document(err: PbaError, correlation_id: str) -> bytes:
    """A whole SOAP 1.1 fault envelope, built without spyne (its last resort)."""
    env = etree.Element(f"{{{NS_SOAP_ENV}}}Envelope", nsmap={"soap11env": NS_SOAP_ENV})
    fault = etree.SubElement(
        etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Body"), f"{{{NS_SOAP_ENV}}}Fault"
    )
    etree.SubElement(fault, "faultcode").text = f"soap11env:{err.code}"
    etree.SubElement(fault, "faultstring").text = err.message
    detail = fault_for(err, correlation_id).detail
    etree.SubElement(fault, "detail").append(detail)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


# ---------------------------------------------------------------- type mapping


class TypeMapper:
    """Python annotations -> spyne models, and values both ways."""

    def __init__(self) -> None:
        self._models: dict[type, type[ComplexModel]] = {}
        self._names: dict[str, type] = {}

    def spyne_type(self, tp: Any, *, required: bool, param: bool = False) -> Any:
        inner, optional = unwrap_optional(tp)
        item = list_item(inner)
        if item is not None:
            # repeated elements, not a wrapper type: clients get a plain list;
            # minOccurs is the table's MinLen (the table checks it too)
            return self._base(unwrap_optional(item)[0]).customize(
                min_occurs=min(min_len(tp), 1) if param and required and not optional else 0,
                max_occurs="unbounded",
                nillable=False,
            )
        base = self._base(inner)
        if required and not optional:
            return base.customize(min_occurs=1, nillable=False)
        return base

    def _base(self, tp: Any) -> Any:
        if tp is str:
            return Unicode
        if tp is bool:
            return Boolean
        if tp is int:
            return Long
        if tp is Decimal:
            return SpyneDecimal
        if tp is datetime:
            return DateTime(timezone=True)
        if tp is date:
            return Date
        if is_literal(tp):
            return Unicode(values=list(get_args(tp)))
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.model(tp)
        raise TypeError(f"no SOAP mapping for {tp!r}")

    def model(self, cls: type) -> type[ComplexModel]:
        if cls in self._models:
            return self._models[cls]
        if cls.__name__ in self._names:
            raise TypeError(f"two wire types named {cls.__name__}")
        self._names[cls.__name__] = cls
        fields = [(n, self.spyne_type(t, required=r)) for n, t, r in fields_of(cls)]
        model = type(
            cls.__name__,
            (ComplexModel,),
            {
                "__namespace__": TNS,
                "__type_name__": cls.__name__,
                "_type_info": fields,
                "__module__": __name__,
            },
        )
        self._models[cls] = model
        return model

    def to_plain(self, value: Any) -> Any:
        """spyne input objects -> dicts/lists for the dispatcher to coerce."""
        if isinstance(value, ComplexModel):
            return {
                k: self.to_plain(getattr(value, k, None))
                for k in type(value).get_flat_type_info(type(value))
            }
        if isinstance(value, (list, tuple)):
            return [self.to_plain(v) for v in value]
        return value

    def to_spyne(self, tp: Any, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return Decimal(format(value, "f"))  # never 1E+2 on the wire
        if isinstance(value, list):
            item = list_item(unwrap_optional(tp)[0])
            return [self.to_spyne(item, v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # spyne serializes by the declared model, reading members with
            # getattr: a plain attribute bag does, at a fraction of the cost of
            # constructing a ComplexModel instance (which initializes every member).
            out = _Members()
            out.__dict__.update(
                {n: self.to_spyne(t, getattr(value, n)) for n, t, _r in fields_of(type(value))}
            )
            return out
        return value


class _Members:
    """Values of one response object, for spyne's serializer."""


# ---------------------------------------------------------------- WSDL

_XSD = "{http://www.w3.org/2001/XMLSchema}"
_SCHEMA_ORDER = {f"{_XSD}import": 0, f"{_XSD}simpleType": 1, f"{_XSD}complexType": 2}


def stable_wsdl(doc: bytes) -> bytes:
    """The same WSDL on every run, without spyne's leftovers.

    spyne emits schema types in an order that changes from one process to the
    next (it walks sets), so they are sorted here: the committed
    wsdl/pba.wsdl is then compared byte for byte. spyne also leaves an unused
    ``*ParentType`` copy of every customized enumeration, which Java's
    wsimport would turn into a useless enum class; those are dropped.
    """
    root = etree.fromstring(doc)
    used = {
        value.rpartition(":")[2]
        for el in root.iter()
        for attr in ("type", "base", "element")
        if (value := el.get(attr))
    }
    for schema in root.iter(f"{_XSD}schema"):
        children = list(schema)
        for child in children:
            schema.remove(child)
        kept = [
            c
            for c in children
            if not (
                c.tag == f"{_XSD}simpleType"
                and (c.get("name") or "").endswith("ParentType")
                and c.get("name") not in used
            )
        ]
        kept.sort(key=lambda c: (_SCHEMA_ORDER.get(str(c.tag), 3), c.get("name") or ""))
        schema.extend(kept)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# ---------------------------------------------------------------- protocol


class HardenedSoap11(Soap11):
    """Soap11 parsing through our hardened parser; WS-Security header read here."""

    list_paths: dict[str, frozenset[str]] = {}
    # per operation: dotted path (no indexes) -> the element names declared there
    children: dict[str, dict[str, frozenset[str]]] = {}

    # Decimals and date-times reach the operation table as the text that was
    # sent: the table's grammar (no "+1", " 1", naive times) decides, as for
    # XML-RPC. The schema has refused what is not xs:decimal / xs:dateTime.
    def decimal_from_unicode(self, cls: Any, string: str) -> Any:
        return string

    def datetime_from_unicode(self, cls: Any, string: str) -> Any:
        return string

    def datetime_from_unicode_iso(self, cls: Any, string: str) -> Any:
        return string

    def decimal_from_bytes(self, cls: Any, string: bytes | str) -> Any:
        return string.decode() if isinstance(string, bytes) else string

    def datetime_from_bytes(self, cls: Any, string: bytes | str) -> Any:
        return string.decode() if isinstance(string, bytes) else string

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        body = b"".join(ctx.in_string)
        try:
            root = xmlsafe.parse(body)
        except MalformedRequest as err:
            raise fault_for(err, ctx.transport.req.meta.correlation_id) from None
        # No id table: SOAP-encoding href resolution is an amplification vector.
        ctx.in_document = (root, {})
        ctx.transport.req.creds_wss = read_wss(root)

    def decompose_incoming_envelope(self, ctx: Any, message: Any = Soap11.REQUEST) -> None:
        # spyne dereferences a missing or empty Body (AttributeError, not a Fault)
        root = ctx.in_document[0]
        req: _Req = ctx.transport.req
        body = root.find(f"{{{NS_SOAP_ENV}}}Body")
        if root.tag == f"{{{NS_SOAP_ENV}}}Envelope" and (body is None or len(body) != 1):
            # a second operation would be dropped silently by spyne
            raise fault_for(
                MalformedRequest("the SOAP Body must hold exactly one operation element"),
                req.meta.correlation_id,
            )
        if body is not None:
            op_name = etree.QName(body[0])
            if op_name.namespace != TNS or op_name.localname not in self.children:
                raise fault_for(
                    UnknownOperation(f"no operation named {_printable(op_name.localname)!r}"),
                    req.meta.correlation_id,
                )
        if body is not None and req.soap_action:
            named = etree.QName(body[0]).localname
            if req.soap_action != named:
                raise fault_for(
                    MalformedRequest(
                        f"the SOAPAction header names {_printable(req.soap_action)!r} "
                        f"but the Body holds {_printable(named)!r}"
                    ),
                    req.meta.correlation_id,
                )
        try:
            super().decompose_incoming_envelope(ctx, message)
        except _SchemaError as err:
            raise fault_for(
                ValidationError(err.field, err.reason), ctx.transport.req.meta.correlation_id
            ) from None

    def set_validator(self, validator: Any) -> None:
        super().set_validator(validator)
        if self.validator is self.SCHEMA_VALIDATION:
            self.validate_document = self._validate_lxml

    def _validate_lxml(self, payload: etree._Element) -> None:
        """spyne's lxml validation, with the fault naming the field at fault."""
        schema = self.validation_schema
        if schema.validate(payload):
            return
        errors = list(schema.error_log)
        first = errors[0] if errors else None
        if first is None:
            raise _SchemaError(None, "the request does not match the WSDL")
        op = etree.QName(payload).localname
        lists = self.list_paths.get(op, frozenset())
        node = _error_node(payload, first.path)
        field = (
            _field_path(first.path, lists)
            if node is None
            else _culprit(payload, node, first.message, lists, self.children.get(op, {}))
        )
        raise _SchemaError(field, _schema_reason(first.message))


def _soap_action(header: str | None) -> str:
    """The operation a SOAPAction header names ("" when absent or empty)."""
    value = (header or "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if len(value) > 256:
        raise MalformedRequest("the SOAPAction header is too long")
    return value


def _printable(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text[:80])


class _SchemaError(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


_XPATH_STEP = re.compile(r"^(?:[\w.-]+:)?([\w.-]+)(?:\[(\d+)\])?$")


def _field_path(xpath: str | None, lists: frozenset[str]) -> str | None:
    """``/tns:PlanCreate/tns:periods[2]/tns:unit`` -> ``periods[1].unit`` (0-based;
    ``lists`` names the list fields, so a lone item still reads ``periods[0]``)."""
    if not xpath:
        return None
    parts: list[str] = []
    plain: list[str] = []
    for step in xpath.strip("/").split("/")[1:]:  # the first step is the operation
        m = _XPATH_STEP.match(step)
        if not m:
            return None
        name, index = m.groups()
        plain.append(name)
        if index is None and ".".join(plain) in lists:
            index = "1"
        parts.append(f"{name}[{int(index) - 1}]" if index else name)
    return ".".join(parts) or None


def _error_node(payload: etree._Element, xpath: str | None) -> etree._Element | None:
    """The element libxml2's error path points at, inside ``payload``."""
    if not xpath:
        return None
    namespaces = {
        prefix: uri
        for el in (*payload.iterancestors(), *payload.iter())
        if isinstance(el.tag, str)
        for prefix, uri in el.nsmap.items()
        if prefix
    }
    # libxml2 validates the operation element as a document of its own: the
    # path starts at it
    steps = xpath.strip("/").split("/")
    try:
        found = payload.xpath("/".join([".", *steps[1:]]), namespaces=namespaces)
    except etree.XPathError:
        return None
    if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], etree._Element):
        return None
    node = found[0]
    if node is not payload and payload not in node.iterancestors():
        return None
    return node


_EXPECTED = re.compile(r"Expected is (?:one of )?\( ([^)]*) \)")


def _steps(payload: etree._Element, node: etree._Element, lists: frozenset[str]) -> list[str]:
    """The path of ``node`` below the operation element, as the table names it
    (``lines[1].plan_id``: 0-based indexes on list fields)."""
    chain = [node, *node.iterancestors()]
    chain = chain[: chain.index(payload)]
    parts: list[str] = []
    plain: list[str] = []
    for el in reversed(chain):
        name = etree.QName(el).localname
        plain.append(name)
        if ".".join(plain) in lists:
            index = sum(1 for s in el.itersiblings(preceding=True) if s.tag == el.tag)
            name = f"{name}[{index}]"
        parts.append(name)
    return parts


def _culprit(
    payload: etree._Element,
    node: etree._Element,
    message: str,
    lists: frozenset[str],
    children: dict[str, frozenset[str]],
) -> str | None:
    """The field a schema error is about: the element that is wrong, or the
    one that is missing (libxml2 reports the element after a missing one, or
    the parent missing children: ``Expected is ( name )`` names it)."""
    parts = _steps(payload, node, lists)
    expected = _EXPECTED.search(message)
    missing: str | None = None
    if expected:
        names = [n.strip().rpartition("}")[2] for n in expected[1].split(",") if n.strip()]
        # in a sequence the optional elements come first: the last is required
        missing = names[-1] if names else None
    if "Missing child element" in message and missing:
        return ".".join([*parts, missing])
    if "This element is not expected" in message and missing and node is not payload:
        parent = node.getparent()
        plain = ".".join(p.partition("[")[0] for p in parts[:-1])
        name = etree.QName(node).localname
        declared = children.get(plain, frozenset())
        repeated = parent is not None and any(
            s.tag == node.tag for s in node.itersiblings(preceding=True)
        )
        if name in declared and not repeated:
            # a known element out of its place: one before it is missing
            return ".".join([*parts[:-1], missing])
    return ".".join(parts) or None


def children_of(params: list[tuple[str, Any]]) -> dict[str, frozenset[str]]:
    """Dotted path (without indexes, "" for the operation) -> element names."""
    out: dict[str, frozenset[str]] = {"": frozenset(n for n, _t in params)}

    def walk(prefix: str, tp: Any, depth: int) -> None:
        inner = unwrap_optional(tp)[0]
        item = list_item(inner)
        if item is not None:
            inner = unwrap_optional(item)[0]
        if dataclasses.is_dataclass(inner) and isinstance(inner, type) and depth < 8:
            fields = fields_of(inner)
            out[prefix] = frozenset(n for n, _t, _r in fields)
            for name, ftype, _r in fields:
                walk(f"{prefix}.{name}", ftype, depth + 1)

    for name, tp in params:
        walk(name, tp, 0)
    return out


def list_paths(params: list[tuple[str, Any]]) -> frozenset[str]:
    """Dotted paths (without indexes) of every list field below these parameters."""
    out: set[str] = set()

    def walk(prefix: str, tp: Any) -> None:
        inner = unwrap_optional(tp)[0]
        item = list_item(inner)
        if item is not None:
            out.add(prefix)
            inner = unwrap_optional(item)[0]
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            for name, ftype, _r in fields_of(inner):
                walk(f"{prefix}.{name}", ftype)

    for name, tp in params:
        walk(name, tp)
    return frozenset(out)


def _schema_reason(message: str) -> str:
    """libxml2's message without the element's namespace noise."""
    reason = re.sub(r"^Element '[^']*': ", "", message)
    reason = re.sub(r"^\[facet '[^']*'\] ", "", reason)
    return re.sub(r"\{urn:pba-server:v1\}", "", reason).strip()


class _FaultSoap11(Soap11):
    """Soap11 output whose faults hold faultcode, faultstring and our typed
    detail only (spyne would append PbaFault's members again, as nil elements
    after the detail, which strict clients reject)."""

    def fault_to_parent(
        self, ctx: Any, cls: Any, inst: Any, parent: Any, ns: Any, *args: Any, **kwargs: Any
    ) -> None:
        fault = etree.SubElement(parent, f"{{{self.ns_soap_env}}}Fault")
        etree.SubElement(fault, "faultcode").text = f"{self.soap_env}:{inst.faultcode}"
        etree.SubElement(fault, "faultstring").text = inst.faultstring
        if isinstance(inst.detail, etree._Element):
            etree.SubElement(fault, "detail").append(copy.deepcopy(inst.detail))


def read_wss(envelope: etree._Element) -> Credentials | None:
    token = envelope.find(
        f"{{{NS_SOAP_ENV}}}Header/{{{NS_WSSE}}}Security/{{{NS_WSSE}}}UsernameToken"
    )
    if token is None:
        return None
    username = token.findtext(f"{{{NS_WSSE}}}Username") or ""
    pw = token.find(f"{{{NS_WSSE}}}Password")
    password = (pw.text or "") if pw is not None else ""
    digest = pw is not None and pw.get("Type", "").endswith("#PasswordDigest")
    return Credentials(
        login=username.strip(),
        password=password,
        digest=digest,
        nonce=token.findtext(f"{{{NS_WSSE}}}Nonce"),
        created=token.findtext(f"{{{NS_WSU}}}Created"),
    )


class _Req:
    """What the transport hands to spyne's context (its ``transport.req``)."""

    def __init__(
        self,
        creds: Credentials,
        meta: CallMeta,
        method: str,
        content_type: str,
        soap_action: str = "",
        principal: Principal | None = None,
        principal_by_wss: bool = False,
    ):
        self.creds_http = creds
        self.creds_wss: Credentials | None = None
        self.meta = meta
        self.method = method
        self.content_type = content_type
        self.soap_action = soap_action
        # who the transport authenticated before the parse: by HTTP Basic, or
        # by the token found in a streaming pass over the Header
        self.principal = principal
        self.principal_by_wss = principal_by_wss


class _Transport(HttpMethodContext.HttpTransportContext):  # type: ignore[misc,name-defined]
    def get_request_method(self) -> str:
        return str(self.req.method)

    def get_request_content_type(self) -> str:
        return str(self.req.content_type)

    def get_peer(self) -> Any:
        return self.req.meta.source_address


class _MethodContext(HttpMethodContext):  # type: ignore[misc]
    HttpTransportContext = _Transport


class SoapHandler(HttpBase):  # type: ignore[misc]
    transport = "http://schemas.xmlsoap.org/soap/http"

    def __init__(self, dispatcher: Dispatcher, operations: dict[str, Operation]) -> None:
        self.dispatcher = dispatcher
        self.mapper = TypeMapper()
        methods = {op.name: self._method(op) for op in operations.values()}
        service = type("PbaService", (ServiceBase,), {**methods, "__module__": __name__})
        app = Application(
            [service],
            tns=TNS,
            name="PbaServer",
            in_protocol=HardenedSoap11(validator="lxml"),
            out_protocol=_FaultSoap11(),
        )
        super().__init__(app)
        app.in_protocol.list_paths = {
            op.name: list_paths([(p.name, p.type) for p in op.params]) for op in operations.values()
        }
        app.in_protocol.children = {
            op.name: children_of([(p.name, p.type) for p in op.params])
            for op in operations.values()
        }
        self._wsdl_template: bytes | None = None

    def _method(self, op: Operation) -> Any:
        mapper = self.mapper
        dispatcher = self.dispatcher
        names = [p.name for p in op.params]
        # SOAP cannot tell an absent list from an empty one
        lists = {p.name for p in op.params if p.required and list_item(p.type) is not None}
        in_types = [mapper.spyne_type(p.type, required=p.required, param=True) for p in op.params]
        result_tp = op.result
        returns = (
            mapper.spyne_type(result_tp, required=True) if result_tp is not type(None) else None
        )

        def method(ctx: Any, *args: Any) -> Any:
            req: _Req = ctx.transport.req
            raw = {n: mapper.to_plain(v) for n, v in zip(names, args, strict=True) if v is not None}
            raw.update({n: [] for n in lists if n not in raw})
            creds = req.creds_wss or req.creds_http
            # A token in the envelope is what counts, even after a good Basic header.
            principal = req.principal
            if req.creds_wss is not None and not req.principal_by_wss:
                principal = None
            try:
                result = dispatcher.call(op.name, raw, creds, req.meta, principal)
            except PbaError as err:
                req.meta.extra["code"] = err.code
                raise fault_for(err, req.meta.correlation_id) from None
            return mapper.to_spyne(result_tp, result)

        method.__name__ = op.name
        method.__doc__ = op.doc
        return rpc(
            *in_types, _args=names, _returns=returns, _throws=[PbaFault], _operation_name=op.name
        )(method)

    def wsdl(self, url: str) -> bytes:
        """The WSDL with ``url`` as the service address.

        Built once, with a placeholder address: the URL comes from the
        request's Host header, and a document built and cached per URL let
        anyone grow memory and block the reactor (~40 ms a build) by varying it.
        """
        template = self._wsdl_template
        if template is None:
            w = Wsdl11(self.app.interface)
            w.build_interface_document(_WSDL_PLACEHOLDER)
            template = self._wsdl_template = stable_wsdl(w.get_interface_document())
        return template.replace(
            _WSDL_PLACEHOLDER.encode(), xml_escape(url, {'"': "&quot;"}).encode("utf-8")
        )

    def handle(
        self,
        body: bytes,
        content_type: str,
        creds: Credentials,
        meta: CallMeta,
        *,
        soap_action: str = "",
        principal: Principal | None = None,
        principal_by_wss: bool = False,
    ) -> tuple[int, bytes]:
        """Run one SOAP request; returns (HTTP status, response body)."""
        req = _Req(
            creds,
            meta,
            "POST",
            content_type or "text/xml",
            soap_action,
            principal,
            principal_by_wss,
        )
        ctx = _MethodContext(self, req, "text/xml; charset=utf-8")
        ctx.in_string = [body]
        contexts = self.generate_contexts(ctx)
        p_ctx = contexts[0]
        if p_ctx.in_error is None:
            self.get_in_object(p_ctx)
        if p_ctx.in_error is not None:
            p_ctx.out_error = self._client_fault(p_ctx.in_error, meta)
        else:
            self.get_out_object(p_ctx)
        if p_ctx.out_error is not None:
            err = p_ctx.out_error
            if not isinstance(err, PbaFault):
                err = self._client_fault(err, meta)
                p_ctx.out_error = err
            meta.extra.setdefault("code", err.faultcode)
            status = 500  # SOAP 1.1 over HTTP: a fault travels with status 500
        else:
            status = 200
        self.get_out_string(p_ctx)
        out = b"".join(p_ctx.out_string)
        p_ctx.close()
        return status, out

    def respond(
        self,
        read_body: Callable[[], bytes],
        content_type: str,
        creds: Credentials,
        meta: CallMeta,
        *,
        slot: Slot | None = None,
        soap_action: str | None = None,
    ) -> tuple[int, bytes]:
        """Admit the request (:mod:`pba_server.api.admission`), then :meth:`handle`
        it; a SOAP Server.Internal fault (never a traceback) should anything
        escape; the traceback goes to the log with the cid."""
        try:
            try:
                action = _soap_action(soap_action)
                principal, by_wss, body = self._admit(read_body, creds, meta, slot)
            except PbaError as refused:
                meta.extra["code"] = refused.code
                return 500, fault_document(refused, meta.correlation_id)
            return self.handle(
                body,
                content_type,
                creds,
                meta,
                soap_action=action,
                principal=principal,
                principal_by_wss=by_wss,
            )
        except Exception:
            log.exception("SOAP request failed [cid=%s]", meta.correlation_id)
            meta.extra["code"] = InternalError.code
            err = InternalError(f"internal error (correlation id {meta.correlation_id})")
            return 500, fault_document(err, meta.correlation_id)

    def _admit(
        self, read_body: Callable[[], bytes], creds: Credentials, meta: CallMeta, slot: Slot | None
    ) -> tuple[Principal | None, bool, bytes]:
        """(who, whether by a WS-Security token, the body), or a PbaError
        before anything but the Header has been parsed. ``slot``: the
        admission of a request without header credentials, given back once
        its Header is read."""
        if creds.login is not None:
            principal = self.dispatcher.authenticate(creds, meta)
            body = read_body()
            xmlsafe.prescan(body)
            return principal, False, body
        try:
            body = read_body()
            xmlsafe.prescan(body)
            envelope = xmlsafe.soap_header(body, NS_SOAP_ENV)
        finally:
            if slot is not None:
                slot.release()
        if envelope is None or envelope.tag != f"{{{NS_SOAP_ENV}}}Envelope":
            raise MalformedRequest("not a SOAP 1.1 Envelope with a Body")
        token = read_wss(envelope)
        if token is None:
            raise AuthFailed(
                "credentials required: HTTP Basic, or a WS-Security UsernameToken on SOAP"
            )
        return self.dispatcher.authenticate(token, meta), True, body

    def _client_fault(self, err: Any, meta: CallMeta) -> PbaFault:
        if isinstance(err, PbaFault):
            return err
        code = getattr(err, "faultcode", "") or ""
        text = getattr(err, "faultstring", "") or str(err)
        if "ValidationError" in code or "SchemaValidation" in code:
            return fault_for(
                ValidationError(None, f"request does not match the WSDL: {text}"),
                meta.correlation_id,
            )
        if code.startswith("Client"):
            if "ResourceNotFound" in code or "MethodNotFound" in code:
                return fault_for(
                    UnknownOperation(f"unknown operation: {_printable(text)}"), meta.correlation_id
                )
            return fault_for(MalformedRequest(text), meta.correlation_id)
        log.error("unexpected SOAP fault [cid=%s]: %r", meta.correlation_id, err)
        return fault_for(
            InternalError(f"internal error (correlation id {meta.correlation_id})"),
            meta.correlation_id,
        )
