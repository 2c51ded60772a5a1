"""Where the server may connect: one outgoing-address policy for webhooks and
for every connection a plugin makes (through :mod:`pba_server.sdk.net`).

An address an account of the hierarchy influences (a webhook URL) or a
plugin's endpoint is an address the server connects to: without a policy a
reseller could make the server probe the provider's internal network (SSRF)
or the cloud metadata service at 169.254.169.254. A host that resolves to a
loopback, private (RFC 1918, unique local), shared (100.64/10), link-local,
multicast, reserved or unspecified address is refused, after DNS resolution,
every time a connection is made; the connection then goes to the address
that was checked (no second lookup a rebinding DNS server could answer
differently). IPv6 forms that carry an IPv4 address (IPv4-mapped
``::ffff:a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, 6to4 ``2002:AABB:CCDD::/48``, NAT64 ``64:ff9b::/96`` and
``64:ff9b:1::/48``, Teredo ``2001::/32``) are judged by that IPv4 address
too.

The operator's exceptions (settings, read at start-up by bootstrap):

- ``outbound_allowed_networks``: comma-separated networks that are allowed
  although private, e.g. ``10.20.0.0/16`` for a registry on the internal
  network (the tests allow ``127.0.0.0/8, ::1/128``);
- ``webhook_allow_private``: allow every address (a lab, never production).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


class RefusedAddress(ValueError):
    """The policy does not allow a connection to this host or address."""


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()


def parse_networks(text: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, ::1/128"`` -> networks; raises ValueError on a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip())


# Set from the configuration at start-up (bootstrap.build_app); tests allow
# loopback. Process-wide on purpose, for now (docs/architecture.md, "The
# runtime object"): the networks a process may reach are the host's, the same
# for every app of a process in production; the deliverer and each plugin's
# sdk.net.Net read it here. Putting it on the Runtime means handing a Policy
# to the deliverer and through sdk.loader.instantiate to Net.
_policy = Policy()


def configure(*, allow_private: bool = False, allowed_networks: str | Iterable[str] = ()) -> None:
    global _policy
    _policy = Policy(allow_private, parse_networks(allowed_networks))


def policy() -> Policy:
    return _policy


def private_allowed() -> bool:
    """True if every address is allowed (``webhook_allow_private``)."""
    return _policy.allow_private


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64...)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if (
        any(ip in net for net in NAT64)
        or ip in IPV4_TRANSLATED
        or (ip in IPV4_COMPATIBLE and int(ip) > 1)  # not :: nor ::1, judged as they are
    ):
        found.append(low32)
    return found


def _plain_public(ip: IPAddress) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def is_public(address: str) -> bool:
    """True if ``address`` (and every IPv4 address it embeds) is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner:
            # mapped, translated and NAT64 addresses are that IPv4 address on
            # the wire (their prefixes are "reserved" to ipaddress); 6to4 and
            # Teredo must be public as IPv6 addresses as well
            translated = ip.ipv4_mapped is not None or ip in IPV4_TRANSLATED
            translated = translated or any(ip in net for net in NAT64)
            return all(_plain_public(v4) for v4 in inner) and (translated or _plain_public(ip))
    return _plain_public(ip)


def allowed(address: str, pol: Policy | None = None) -> bool:
    """True if the policy lets the server connect to ``address``."""
    pol = pol or _policy
    if pol.allow_private or is_public(address):
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(
        c in net for c in candidates for net in pol.allowed_networks if c.version == net.version
    )


def check_address(address: str, host: str = "") -> None:
    if not allowed(address):
        raise RefusedAddress(
            f"{host or address} resolves to a non-public address ({address}); "
            "connections to private networks are off (settings outbound_allowed_networks, "
            "webhook_allow_private)"
        )


def resolve(host: str, port: int) -> str:
    """The address to connect to for ``host``: every address it resolves to
    must be allowed (one private answer among public ones is refused too).
    Raises :class:`RefusedAddress`, or OSError if the name does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError(f"{host} does not resolve")
    for a in addresses:
        check_address(a, host)
    return addresses[0]
