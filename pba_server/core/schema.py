"""Protocol-neutral value typing for operation parameters and results.

Supported annotations: ``str``, ``int``, ``bool``, ``Decimal``, ``datetime``,
``date``, ``Literal[...]`` of strings (an enumeration), ``X | None``,
``list[X]`` and dataclasses of those, each optionally ``Annotated`` with
:class:`MinLen` / :class:`MaxLen` (items of a list, characters of a string)
or, for result fields, :data:`pba_server.core.money.Money`.

:func:`coerce` is the one validator of wire values, whatever the protocol:
the adapters decode their format (XML-RPC structs, spyne objects whose
decimals and date-times are left as the text that was sent) and everything
else is decided here, so SOAP and XML-RPC cannot disagree. It turns them into
exactly these types or raises ``Client.Validation`` naming the field by its
path (``lines[0].plan_id``). Decimals are ``-?digits(.digits)?`` and nothing
else; a date-time string carries an offset or ``Z`` (XML-RPC's zone-less
``dateTime.iso8601`` type is read as UTC, as docs/api.md says).

:func:`quantize_amounts` is the one point where result money is quantized to
its currency's minor unit; :func:`dump` turns results into JSON-able plain
values (Decimal and datetimes as strings).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, get_args, get_origin

from pba_server.core.errors import ValidationError
from pba_server.core.money import MINOR_UNITS, MoneyAmount, quantize, to_decimal

MAX_STRING = 65536
MAX_ITEMS = 10000
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# xs:long's lexical space (whitespace collapsed), so a string sent over
# XML-RPC is read as SOAP's schema reads the element
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
# xs:dateTime with a mandatory zone
_DATETIME_TEXT = re.compile(
    r"(-?[0-9]{4,}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True)
class MinLen:
    """``Annotated[list[X], MinLen(1)]``: at least ``n`` items (characters for
    a string). On SOAP a list's ``minOccurs`` comes from it."""

    n: int


@dataclass(frozen=True)
class MaxLen:
    """At most ``n`` items of a list, characters of a string."""

    n: int


def strip_annotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[X, m...]`` -> (X, (m...)); anything else -> (tp, ())."""
    if get_origin(tp) is Annotated:
        return tp.__origin__, tuple(tp.__metadata__)
    return tp, ()


def constraints(tp: Any) -> tuple[Any, ...]:
    """The ``Annotated`` metadata of ``tp``, outside or inside ``| None``."""
    outer, meta = strip_annotated(tp)
    origin = get_origin(outer)
    if origin in (typing.Union, types.UnionType):
        for a in get_args(outer):
            meta += strip_annotated(a)[1]
    return meta


def min_len(tp: Any) -> int:
    return max([m.n for m in constraints(tp) if isinstance(m, MinLen)], default=0)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False). ``Annotated``
    is peeled off (read it with :func:`constraints`)."""
    tp = strip_annotated(tp)[0]
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != len(get_args(tp)) and len(args) == 1:
            return strip_annotated(args[0])[0], True
        raise TypeError(f"unsupported union {tp}")
    return tp, False


def is_literal(tp: Any) -> bool:
    return get_origin(strip_annotated(tp)[0]) is Literal


def list_item(tp: Any) -> Any | None:
    tp = strip_annotated(tp)[0]
    if get_origin(tp) is list:
        return get_args(tp)[0]
    return None


def is_money(tp: Any) -> bool:
    return any(isinstance(m, MoneyAmount) for m in constraints(tp))


@cache
def fields_of(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) for each field of a dataclass, resolved (with
    their ``Annotated`` metadata)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints[f.name], required))
    return tuple(out)


def _parse_datetime(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        # whitespace collapsed, as xs:dateTime is
        m = _DATETIME_TEXT.fullmatch(value.strip())
        if m is None:
            raise ValidationError(
                path,
                "not an ISO 8601 date-time with an offset or Z "
                f"(2026-12-02T00:57:10Z): {value[:40]!r}",
            )
        base, frac, zone = m.groups()
        text = base + (frac or "")[:7] + ("+00:00" if zone == "Z" else zone)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(path, f"not a valid date-time: {value[:40]!r}") from None
    elif hasattr(value, "timetuple") and hasattr(value, "value"):  # xmlrpc.client.DateTime
        try:
            dt = datetime.strptime(value.value, "%Y%m%dT%H:%M:%S")
        except ValueError:
            raise ValidationError(path, f"not a date-time: {value.value!r}") from None
    else:
        raise ValidationError(path, "must be a date-time")
    if dt.tzinfo is None:
        # Only XML-RPC's dateTime.iso8601 type gets here without a zone (a
        # string must carry one): the protocol has none, docs/api.md reads it as UTC.
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def coerce(tp: Any, value: Any, path: str) -> Any:
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValidationError(path, "is required")
    out = _coerce(inner, value, path)
    for c in constraints(tp):
        if isinstance(c, MinLen) and len(out) < c.n:
            raise ValidationError(
                path, "must not be empty" if c.n == 1 else f"needs at least {c.n} items"
            )
        if isinstance(c, MaxLen) and len(out) > c.n:
            raise ValidationError(path, f"has more than {c.n} items")
    return out


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if tp is str:
        if not isinstance(value, str):
            raise ValidationError(path, "must be a string")
        if len(value) > MAX_STRING:
            raise ValidationError(path, "is too long")
        if "\x00" in value:
            raise ValidationError(path, "must not contain NUL characters")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValidationError(path, "must be a boolean")
    if tp is int:
        if isinstance(value, bool):
            raise ValidationError(path, "must be an integer")
        if isinstance(value, str):
            if _INT_TEXT.fullmatch(value.strip()) is None:
                raise ValidationError(path, f"not an integer: {value[:40]!r}")
            value = int(value)
        if not isinstance(value, int):
            raise ValidationError(path, "must be an integer")
        if not INT_MIN <= value <= INT_MAX:
            raise ValidationError(path, "is out of range")
        return value
    if tp is Decimal:
        return to_decimal(value, path)
    if tp is datetime:
        return _parse_datetime(value, path)
    if tp is date:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ValidationError(path, f"not an ISO 8601 date: {value!r}") from None
        raise ValidationError(path, "must be a date")
    if is_literal(tp):
        choices = get_args(tp)
        if value not in choices:
            raise ValidationError(path, f"must be one of: {', '.join(choices)}")
        return value
    item = list_item(tp)
    if item is not None:
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ValidationError(path, "must be a list")
        values = list(value)
        if len(values) > MAX_ITEMS:
            raise ValidationError(path, "has too many items")
        return [coerce(item, v, f"{path}[{i}]") for i, v in enumerate(values)]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if not isinstance(value, dict):
            # spyne ComplexModel instances and similar objects
            value = {name: getattr(value, name, None) for name, _t, _r in fields_of(tp)}
        known = {name for name, _t, _r in fields_of(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValidationError(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field")
        kwargs: dict[str, Any] = {}
        for name, ftype, required in fields_of(tp):
            sub = f"{path}.{name}" if path else name
            if name not in value or value[name] is None:
                if required and not unwrap_optional(ftype)[1]:
                    raise ValidationError(sub, "is required")
                if required:  # declared without a default: None is its value
                    kwargs[name] = None
                continue
            kwargs[name] = coerce(ftype, value[name], sub)
        return tp(**kwargs)
    raise TypeError(f"unsupported type {tp!r} at {path}")


def quantize_amounts(tp: Any, value: Any, currency: str | None = None) -> Any:
    """``value`` (of type ``tp``) with every :data:`~pba_server.core.money.Money`
    field quantized to the minor unit of the nearest enclosing struct's
    ``currency`` field: the one point where result money gets its scale
    (``28.9900`` -> ``28.99``, ``19`` -> ``19.00``). Other decimals (quantities,
    rates, prices per unit) keep theirs. Structs are copied, not changed."""
    if value is None:
        return None
    inner = unwrap_optional(tp)[0]
    item = list_item(inner)
    if item is not None:
        if not _holds_money(item):
            return value
        return [quantize_amounts(item, v, currency) for v in value]
    if isinstance(value, Decimal):
        if currency in MINOR_UNITS and is_money(tp) and value.is_finite():
            return quantize(value, currency)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not _holds_money(type(value)):
            return value
        own = getattr(value, "currency", None)
        if isinstance(own, str):
            currency = own.upper()
        changes = {}
        for name, ftype, _r in fields_of(type(value)):
            old = getattr(value, name)
            new = quantize_amounts(ftype, old, currency)
            if new is not old:
                changes[name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


@cache
def _holds_money(tp: Any) -> bool:
    """Whether a Money field is reachable from ``tp`` (most results hold none)."""
    seen: set[type] = set()

    def walk(t: Any) -> bool:
        if is_money(t):
            return True
        inner = unwrap_optional(t)[0]
        item = list_item(inner)
        if item is not None:
            return walk(item)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type) and inner not in seen:
            seen.add(inner)
            return any(walk(ft) for _n, ft, _r in fields_of(inner))
        return False

    return walk(tp)


def dump(value: Any) -> Any:
    """Plain JSON-able form of a result (Decimal/datetime/date as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")  # never 1E+2, which coerce refuses
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [dump(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    raise TypeError(f"cannot dump {type(value).__name__}")
