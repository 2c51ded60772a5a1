"""XML-RPC adapter: the same operations, names and faults as SOAP.

Every operation takes one struct with named parameters (positional lists of
a dozen optional values help nobody): ``AccountGet({"account_id": 7})``.
XML-RPC has no decimal, no time zone and 32-bit integers, so results go out
with money as decimal strings, times as ISO 8601 UTC strings and integers
beyond 32 bits as strings; ``nil`` is allowed. A fault's faultCode is the
error's number and its faultString starts with the stable code.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import xmlrpc.client
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

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
from pba_server.core.schema import fields_of, is_literal, list_item, unwrap_optional

log = logging.getLogger("pba.xmlrpc")

INT32_MAX = 2**31 - 1
# answered without credentials
INTROSPECTION = frozenset({"system.listMethods", "system.methodHelp", "system.methodSignature"})


def to_wire(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -INT32_MAX - 1 <= value <= INT32_MAX else str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot send {type(value).__name__} over XML-RPC")


def _type_name(tp: Any) -> str:
    inner, optional = unwrap_optional(tp)
    if inner is Decimal:
        name = "decimal string"
    elif inner is datetime:
        name = "ISO 8601 UTC date-time string"
    elif is_literal(inner):
        name = "one of " + "|".join(getattr(inner, "__args__", ()))
    elif list_item(inner) is not None:
        name = f"array of {_type_name(list_item(inner))}"
    elif hasattr(inner, "__dataclass_fields__"):
        name = f"struct {inner.__name__}"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} (optional)" if optional else name


def _struct_doc(cls: type) -> str:
    """The class's own docstring; a dataclass without one gets a generated
    ``Name(field: type, ...)`` signature, which says nothing the fields don't."""
    doc = inspect.getdoc(cls) or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return doc


def _structs_in(tp: Any) -> list[type]:
    """The dataclasses ``tp`` names directly (through optional and list)."""
    inner, _ = unwrap_optional(tp)
    item = list_item(inner)
    if item is not None:
        return _structs_in(item)
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        return [inner]
    return []


def _describe_structs(roots: list[Any]) -> list[str]:
    """Every struct reachable from ``roots``, each once, in order of first
    mention: its doc and its fields (name, type, required or optional).
    A struct that (indirectly) contains itself is described once and named
    wherever it recurs."""
    seen: set[type] = set()
    queue: list[type] = [c for tp in roots for c in _structs_in(tp)]
    out: list[str] = []
    while queue:
        cls = queue.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        lines = [f"  struct {cls.__name__}:"]
        doc = _struct_doc(cls)
        if doc:
            lines.extend(f"    {line}".rstrip() for line in doc.splitlines())
            lines.append("")
        for fname, ftype, required in fields_of(cls):
            _, nullable = unwrap_optional(ftype)
            optional = not required or nullable
            lines.append(
                f"    {fname}: {_type_name(unwrap_optional(ftype)[0])}"
                f"{' (optional)' if optional else ''}"
            )
            queue.extend(c for c in _structs_in(ftype) if c not in seen)
        out.append("\n".join(lines))
    return out


def method_help(op: Operation) -> str:
    params = "\n".join(
        f"  {p.name}: {_type_name(unwrap_optional(p.type)[0])}{'' if p.required else ' (optional)'}"
        for p in op.params
    )
    text = (
        f"{op.name}(struct)\n\n{op.doc}\n\nParameters (one struct):\n{params or '  (none)'}\n\n"
        f"Returns: {_type_name(op.result)}"
    )
    structs = _describe_structs([*(p.type for p in op.params), op.result])
    if structs:
        text += "\n\nStructs:\n" + "\n\n".join(structs)
    return text


class XmlRpcHandler:
    def __init__(self, dispatcher: Dispatcher, operations: dict[str, Operation]) -> None:
        self.dispatcher = dispatcher
        self.operations = operations

    def respond(
        self,
        read_body: Callable[[], bytes],
        creds: Credentials,
        meta: CallMeta,
        *,
        slot: Slot | None = None,
    ) -> bytes:
        """Admit the request (:mod:`pba_server.api.admission`), then handle it."""
        try:
            principal, body = self._admit(read_body, creds, meta, slot)
        except PbaError as err:
            return self.fault(err, meta)
        except Exception:
            return self._internal(meta)
        return self.handle(body, creds, meta, principal)

    def _admit(
        self, read_body: Callable[[], bytes], creds: Credentials, meta: CallMeta, slot: Slot | None
    ) -> tuple[Principal | None, bytes]:
        if creds.login is not None:
            principal = self.dispatcher.authenticate(creds, meta)
            body = read_body()
            xmlsafe.prescan(body)
            return principal, body
        # Without credentials only introspection answers: the method name is
        # read by a streaming pass that stops there, the parameters never are.
        try:
            body = read_body()
            xmlsafe.prescan(body)
            name = xmlsafe.xmlrpc_method_name(body)
        finally:
            if slot is not None:
                slot.release()
        if name is None:
            raise MalformedRequest("malformed XML-RPC request: no methodCall/methodName")
        if name not in INTROSPECTION:
            self._name_for_log(name, meta)
            raise AuthFailed("credentials required: HTTP Basic")
        return None, body

    def _name_for_log(self, name: str, meta: CallMeta) -> None:
        # only a known name: a card number or a newline sent as one stays out of the log
        meta.operation = name if name in self.operations or name in INTROSPECTION else "?"

    def handle(
        self, body: bytes, creds: Credentials, meta: CallMeta, principal: Principal | None = None
    ) -> bytes:
        try:
            xmlsafe.parse(body)
            try:
                params, name = xmlrpc.client.loads(body, use_builtin_types=True)
            except Exception as exc:  # expat errors, bad values
                raise MalformedRequest(f"malformed XML-RPC request: {exc}") from None
            if not name:
                raise MalformedRequest("no methodName")
            self._name_for_log(name, meta)
            result = self._invoke(name, params, creds, meta, principal)
            return xmlrpc.client.dumps(
                (to_wire(result),), methodresponse=True, allow_none=True
            ).encode("utf-8")
        except PbaError as err:
            return self.fault(err, meta)
        except Exception:
            return self._internal(meta)

    def fault(self, err: PbaError, meta: CallMeta) -> bytes:
        meta.extra["code"] = err.code
        msg = err.message
        if err.code == "Server.Internal" and meta.correlation_id not in msg:
            msg = f"{msg} (correlation id {meta.correlation_id})"
        return xmlrpc.client.dumps(
            xmlrpc.client.Fault(err.number, f"{err.code}: {msg}"),
            methodresponse=True,
            allow_none=True,
        ).encode("utf-8")

    def _internal(self, meta: CallMeta) -> bytes:
        log.exception("XML-RPC request failed [cid=%s]", meta.correlation_id)
        meta.extra["code"] = InternalError.code
        return xmlrpc.client.dumps(
            xmlrpc.client.Fault(
                InternalError.number,
                f"{InternalError.code}: internal error (correlation id {meta.correlation_id})",
            ),
            methodresponse=True,
        ).encode("utf-8")

    def _invoke(
        self,
        name: str,
        params: tuple[Any, ...],
        creds: Credentials,
        meta: CallMeta,
        principal: Principal | None,
    ) -> Any:
        if name == "system.listMethods":
            return sorted([*self.operations, *INTROSPECTION])
        if name == "system.methodHelp":
            op = self._op(params)
            return method_help(op) if op else ""
        if name == "system.methodSignature":
            op = self._op(params)
            return [["struct", "struct"]] if op else "undef"
        if name not in self.operations:
            raise UnknownOperation(f"no operation named {name!r}")
        if len(params) == 0 or params == ([],):
            # PHP's xmlrpc extension encodes an empty associative array, the
            # natural "no parameters", as <array><data/></array>.
            raw: dict[str, Any] = {}
        elif len(params) == 1 and isinstance(params[0], dict):
            raw = params[0]
        else:
            raise ValidationError(
                None,
                f"{name} takes one struct of named parameters "
                "(an empty array is read as an empty struct)",
            )
        return self.dispatcher.call(name, raw, creds, meta, principal)

    def _op(self, params: tuple[Any, ...]) -> Operation | None:
        if len(params) != 1 or not isinstance(params[0], str):
            raise ValidationError(None, "expects one method name")
        return self.operations.get(params[0])
