"""The ``DomainRegistrar`` plugin kind: checking, registering, renewing and
transferring domain names at a registry or registrar.

The server calls a registrar on a worker thread, never on the reactor thread,
with one object per configured instance (its settings, secrets in clear, in
memory only). Every mutating call receives ``key``, the server's own
idempotency key (the provisioning operation's id, or a key derived from the
API call): a registrar MUST treat a repeated call with the same key as the
same request -- never register, renew or transfer twice, answer with the
first result (or with the domain's current state).

Results are typed (:class:`CheckResult`, :class:`DomainResult`,
:class:`DomainInfo`, :class:`Balance`); failures are exceptions:

- :class:`RegistrarUnavailable` -- the registry cannot be reached or is busy
  now (connection refused or dropped, timeout, command failed temporarily):
  the server retries later with the same key;
- :class:`ObjectExists` -- the name (or contact) is already registered, by
  someone else: final;
- :class:`AuthorizationError` -- wrong auth code, or the object belongs to
  another sponsor: final;
- :class:`ObjectNotFound` -- the registry does not know the name: final;
- :class:`RegistrarError` -- any other refusal (bad parameters, policy): final.

Anything else a registrar raises is treated like :class:`RegistrarUnavailable`
(outcome unknown, retried with the same key).

The registry's view of a domain is :meth:`DomainRegistrar.domain_info`
(``info`` is the class's :class:`~pba_server.sdk.PluginInfo`, as in every kind).

Capabilities (``PluginInfo.capabilities``): ``check``, ``register``,
``renew``, ``transfer``, ``info``, ``set_nameservers``, ``set_contacts``,
``balance``. The optional methods raise
:class:`~pba_server.sdk.NotSupported` by default.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from pba_server.sdk import NotSupported, Plugin, PluginError

ContactRole = Literal["registrant", "admin", "tech", "billing"]
CONTACT_ROLES: tuple[ContactRole, ...] = ("registrant", "admin", "tech", "billing")
RegistrarCapability = Literal[
    "check",
    "register",
    "renew",
    "transfer",
    "info",
    "set_nameservers",
    "set_contacts",
    "balance",
]


# ---------------------------------------------------------------- exceptions


class RegistrarUnavailable(PluginError):
    """Retryable: the registry could not be reached or asked us to come back
    (connection refused or dropped mid-command, timeout, server busy). The
    outcome of a mutating call may be unknown: the server repeats it later
    with the same key."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class RegistrarError(PluginError):
    """Final: the registry refused the request and will refuse it again.
    ``code`` is the registry's result code (``2306``...) when there is one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ObjectExists(RegistrarError):
    """The name (or contact) already exists at the registry (EPP 2302)."""


class AuthorizationError(RegistrarError):
    """Wrong auth code, or the object is another sponsor's (EPP 2200-2202)."""


class ObjectNotFound(RegistrarError):
    """The registry does not know the object (EPP 2303)."""


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Contact:
    """A person or organisation for one contact role of a domain."""

    name: str
    email: str
    phone: str = ""  # E.164-ish: +CC.NUMBER
    organization: str = ""
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""  # ISO 3166-1 alpha-2

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Contact:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: str(v) for k, v in d.items() if k in known})


@dataclass(frozen=True)
class CheckResult:
    """Whether ``name`` can be registered now. ``reason`` says why not (or
    ``premium``); ``price`` is the registry's price when it differs from the
    TLD's list price (premium names), else None."""

    name: str
    available: bool
    reason: str = ""
    price: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class DomainResult:
    """The outcome of register, renew or transfer.

    ``status`` ``active``: done, ``expires_on`` is the new expiry date;
    ``pending``: accepted, not finished (a transfer waiting for the losing
    registrar): the server asks :meth:`DomainRegistrar.domain_info` later."""

    name: str
    status: Literal["active", "pending"]
    expires_on: date | None = None
    registry_id: str | None = None  # the registry's object id (ROID)


@dataclass(frozen=True)
class DomainInfo:
    """What the registry knows of a domain we sponsor."""

    name: str
    status: Literal["active", "pending", "expired", "transferring"]
    expires_on: date | None
    nameservers: tuple[str, ...] = ()
    registry_id: str | None = None
    registry_status: tuple[str, ...] = ()  # the registry's own status values


@dataclass(frozen=True)
class Balance:
    amount: Decimal
    currency: str


# ---------------------------------------------------------------- the kind


class DomainRegistrar(Plugin):
    """A domain registrar plugin kind (``info.kind == "domain_registrar"``)."""

    # Do not connect in __init__: the server builds objects to validate settings too.

    def supports(self, capability: str) -> bool:
        return capability in self.info.capabilities

    @abc.abstractmethod
    def check(self, names: list[str]) -> list[CheckResult]:
        """Required. Availability of many names at once, one result per name
        in the same order. Raises :class:`RegistrarUnavailable`."""

    @abc.abstractmethod
    def register(
        self,
        *,
        key: str,
        name: str,
        years: int,
        contacts: dict[str, Contact],
        nameservers: list[str],
    ) -> DomainResult:
        """Required. Register ``name`` for ``years``. ``contacts`` maps roles
        (:data:`CONTACT_ROLES`; ``registrant`` always given) to contacts.
        Idempotent by ``key``: a repeat after a lost answer returns the domain
        registered by the first call, never :class:`ObjectExists`."""

    @abc.abstractmethod
    def renew(self, *, key: str, name: str, years: int, current_expiry: date) -> DomainResult:
        """Required. Add ``years`` to a domain expiring on ``current_expiry``
        (the registry refuses a renewal whose expiry date does not match, which
        makes a repeat harmless: answer it with the current state)."""

    @abc.abstractmethod
    def transfer(self, *, key: str, name: str, auth_code: str, years: int) -> DomainResult:
        """Required. Request the transfer of ``name`` to us. Usually
        ``pending``; :class:`AuthorizationError` for a wrong auth code."""

    @abc.abstractmethod
    def domain_info(self, name: str) -> DomainInfo:
        """Required. The registry's view of a domain we sponsor (expiry date,
        status, name servers); :class:`ObjectNotFound` if unknown."""

    def set_nameservers(self, *, key: str, name: str, nameservers: list[str]) -> DomainInfo:
        """Optional (capability ``set_nameservers``): replace the name servers."""
        raise NotSupported(f"{self.info.name} cannot change name servers")

    def set_contacts(self, *, key: str, name: str, contacts: dict[str, Contact]) -> DomainInfo:
        """Optional (capability ``set_contacts``): replace the given roles' contacts."""
        raise NotSupported(f"{self.info.name} cannot change contacts")

    def get_balance(self) -> Balance:
        """Optional (capability ``balance``): our prepaid balance at the registrar."""
        raise NotSupported(f"{self.info.name} does not report a balance")


__all__ = [
    "CONTACT_ROLES",
    "AuthorizationError",
    "Balance",
    "CheckResult",
    "Contact",
    "ContactRole",
    "DomainInfo",
    "DomainRegistrar",
    "DomainResult",
    "ObjectExists",
    "ObjectNotFound",
    "RegistrarCapability",
    "RegistrarError",
    "RegistrarUnavailable",
]
