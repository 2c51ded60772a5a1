"""Protocol-neutral value typing for operation parameters and results.

Supported annotations: ``str``, ``int``, ``bool``, ``Decimal``, ``datetime``,
``date``, ``Literal[...]`` of strings (an enumeration), ``X | None``,
``list[X]`` and dataclasses of those. :func:`coerce` turns loosely typed wire
values (XML-RPC structs, JSON, spyne objects) into exactly these types or
raises ``Client.Validation`` naming the field; :func:`dump` turns results
into JSON-able plain values (Decimal and datetimes as strings).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Literal, get_args, get_origin

from pba_server.core.errors import ValidationError
from pba_server.core.money import to_decimal

MAX_STRING = 65536
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != len(get_args(tp)) and len(args) == 1:
            return args[0], True
        raise TypeError(f"unsupported union {tp}")
    return tp, False


def is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def list_item(tp: Any) -> Any | None:
    if get_origin(tp) is list:
        return get_args(tp)[0]
    return None


@cache
def fields_of(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) for each field of a dataclass, resolved."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints[f.name], required))
    return tuple(out)


def _parse_datetime(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(path, f"not an ISO 8601 date-time: {value!r}") from None
    elif hasattr(value, "timetuple") and hasattr(value, "value"):  # xmlrpc.client.DateTime
        try:
            dt = datetime.strptime(value.value, "%Y%m%dT%H:%M:%S")
        except ValueError:
            raise ValidationError(path, f"not a date-time: {value.value!r}") from None
    else:
        raise ValidationError(path, "must be a date-time")
    if dt.tzinfo is None:
        # XML-RPC's dateTime.iso8601 carries no zone; the API is UTC throughout.
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def coerce(tp: Any, value: Any, path: str) -> Any:
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValidationError(path, "is required")
    tp = inner
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
            try:
                value = int(value.strip())
            except ValueError:
                raise ValidationError(path, f"not an integer: {value!r}") from None
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
        if len(values) > 10000:
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


def dump(value: Any) -> Any:
    """Plain JSON-able form of a result (Decimal/datetime/date as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
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
