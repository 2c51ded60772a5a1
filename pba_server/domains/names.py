"""Domain name rules (pure): the normal form of a name or TLD, name-server
lists, and how a taken name is reported. Shared by the domain operations
(:mod:`.service`) and the provisioning module (:mod:`.module`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pba_server.core.errors import ValidationError

MAX_NAMESERVERS = 13
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_domain(name: str, field: str = "name") -> str:
    """Lower case, IDNA (punycode) ASCII form; at least two labels."""
    if not isinstance(name, str):
        raise ValidationError(field, "must be a domain name")
    raw = name.strip().rstrip(".").lower()
    try:
        ascii_name = raw.encode("idna").decode("ascii") if not raw.isascii() else raw
    except UnicodeError:
        raise ValidationError(field, f"{name!r} is not a valid domain name") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(LABEL_RE.match(x) for x in labels):
        raise ValidationError(field, f"{name!r} is not a valid domain name")
    return ascii_name


def normalize_tld(name: str) -> str:
    raw = (name or "").strip().lstrip(".").lower()
    labels = raw.split(".")
    if not raw or len(raw) > 63 or not all(LABEL_RE.match(x) for x in labels):
        raise ValidationError("name", f"{name!r} is not a TLD such as com or co.uk")
    return raw


def check_nameservers(values: Sequence[str], field: str = "nameservers") -> list[str]:
    out: list[str] = []
    for i, v in enumerate(values):
        host = normalize_domain(v, f"{field}[{i}]")
        if host in out:
            raise ValidationError(f"{field}[{i}]", f"{host} is given twice")
        out.append(host)
    if out and not 2 <= len(out) <= MAX_NAMESERVERS:
        raise ValidationError(field, f"give 2 to {MAX_NAMESERVERS} name servers (or none)")
    return out


def taken_message(name: str, visible: bool) -> str:
    """Why a live name cannot be ordered again. Only a holder the caller may
    see is named as "here": for anyone else's it is "not available", as a
    registry answers for a name taken anywhere, so a seller cannot learn which
    names other sellers' customers hold (or are ordering) on this server."""
    return f"{name} is already registered here" if visible else f"{name} is not available"
