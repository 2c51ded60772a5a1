"""Order parameters a template asks for: checking their definitions, and the
values an order supplies (``OrderPlace`` calls :func:`check_values`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pba_server.catalog.types import OrderParameter
from pba_server.core.errors import ValidationError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_PATTERN = 500
MAX_VALUE = 1024


def check_definitions(params: Sequence[OrderParameter], field: str) -> list[OrderParameter]:
    seen: set[str] = set()
    out = []
    for i, p in enumerate(params):
        f = f"{field}[{i}]"
        name = p.name.strip()
        if not NAME_RE.match(name):
            raise ValidationError(
                f"{f}.name", "must be lower-case letters, digits and _, starting with a letter"
            )
        if name in seen:
            raise ValidationError(f"{f}.name", f"parameter {name!r} is defined twice")
        seen.add(name)
        pattern = p.pattern or None
        if pattern is not None:
            if len(pattern) > MAX_PATTERN:
                raise ValidationError(f"{f}.pattern", f"must be at most {MAX_PATTERN} characters")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValidationError(f"{f}.pattern", f"not a regular expression: {exc}") from None
        title = (p.title or "").strip() or None
        out.append(OrderParameter(name, p.type, p.required, pattern, title))
    return out


def check_values(
    params: Sequence[OrderParameter], values: Mapping[str, str], field: str = "parameters"
) -> dict[str, str]:
    """The values an order gives, checked against the template's definitions."""
    known = {p.name for p in params}
    for name in values:
        if name not in known:
            raise ValidationError(f"{field}.{name}", "this template has no such parameter")
    out: dict[str, str] = {}
    for p in params:
        f = f"{field}.{p.name}"
        value = values.get(p.name)
        if value is None or value.strip() == "":
            if p.required:
                raise ValidationError(f, "is required")
            continue
        value = value.strip()
        if len(value) > MAX_VALUE:
            raise ValidationError(f, f"must be at most {MAX_VALUE} characters")
        if p.type == "integer" and not re.fullmatch(r"-?[0-9]+", value):
            raise ValidationError(f, "must be an integer")
        if p.type == "boolean" and value.lower() not in ("true", "false"):
            raise ValidationError(f, "must be true or false")
        if p.type == "hostname" and not HOSTNAME_RE.match(value):
            raise ValidationError(f, "not a valid host name")
        if p.type == "domain" and not DOMAIN_RE.match(value):
            raise ValidationError(f, "not a valid domain name")
        if p.type == "email" and not EMAIL_RE.match(value):
            raise ValidationError(f, "not a valid e-mail address")
        if p.pattern is not None and not re.fullmatch(p.pattern, value):
            raise ValidationError(f, "does not match the required pattern")
        out[p.name] = value
    return out
