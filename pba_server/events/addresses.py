"""Where webhooks may go: not to this server's own network, unless allowed.

A webhook URL is an address an account of the hierarchy chooses, and the
server POSTs to it: without a policy a reseller could make the server probe
the provider's internal network (SSRF). Unless the ``webhook_allow_private``
setting is on, a webhook host that resolves to a loopback, private (RFC 1918,
unique local), link-local (cloud metadata at 169.254.169.254), multicast,
reserved or unspecified address is refused when the handler is created or
changed, and again at every delivery, after DNS resolution; the delivery
then connects to the address that was checked (no second lookup a rebinding
DNS server could answer differently).
"""

from __future__ import annotations

import ipaddress
import socket

# set from the configuration at start-up (bootstrap); the tests allow loopback
_allow_private = False


def configure(*, allow_private: bool) -> None:
    global _allow_private
    _allow_private = allow_private


def private_allowed() -> bool:
    return _allow_private


class RefusedAddress(ValueError):
    pass


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def resolve_public(host: str, port: int) -> str:
    """The address to connect to for ``host``: every address it resolves to
    must be public (one private answer among public ones is refused too).
    Raises :class:`RefusedAddress`, or OSError if the name does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError(f"{host} does not resolve")
    bad = [a for a in addresses if not is_public(a)]
    if bad:
        raise RefusedAddress(
            f"{host} resolves to a non-public address ({bad[0]}); "
            "webhooks to private networks are off (setting webhook_allow_private)"
        )
    return addresses[0]
