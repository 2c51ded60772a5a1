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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pba_server.sdk import NotSupported, Plugin, PluginError, ResultRule

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


# ---------------------------------------------------------------- result rules


def _same_name(a: object, b: object) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def check_checks(result: Any, call: Mapping[str, Any]) -> str | None:
    """One :class:`CheckResult` per name asked, in the same order."""
    if not isinstance(result, list | tuple):
        return f"check returned a {type(result).__name__}, not a list of CheckResult"
    names = list(call.get("names", []))
    if len(result) != len(names):
        return f"check answered {len(result)} name(s) for {len(names)} asked"
    for r, name in zip(result, names, strict=True):
        if not isinstance(r, CheckResult):
            return f"check returned a {type(r).__name__}, not a CheckResult"
        if not _same_name(r.name, name):
            return f"check answered {r.name!r} where {name!r} was asked"
    return None


def check_domain_result(result: Any, call: Mapping[str, Any]) -> str | None:
    """register, renew and transfer answer a :class:`DomainResult` for the
    name asked; ``active`` carries the new expiry date (after the current one,
    for a renewal)."""
    if not isinstance(result, DomainResult):
        return f"returned a {type(result).__name__}, not a DomainResult"
    if "name" in call and not _same_name(result.name, call["name"]):
        return f"answered for {result.name!r}, not {call['name']!r}"
    if result.status not in ("active", "pending"):
        return f"returned status {result.status!r}"
    if result.status == "active":
        if not isinstance(result.expires_on, date):
            return "returned status 'active' without an expiry date"
        current = call.get("current_expiry")
        if isinstance(current, date) and result.expires_on <= current:
            return f"renewal returned expiry {result.expires_on}, not after {current}"
    return None


def check_domain_info(result: Any, call: Mapping[str, Any]) -> str | None:
    """domain_info, set_nameservers and set_contacts answer a
    :class:`DomainInfo` for the name asked; ``active`` has an expiry date."""
    if not isinstance(result, DomainInfo):
        return f"returned a {type(result).__name__}, not a DomainInfo"
    if "name" in call and not _same_name(result.name, call["name"]):
        return f"answered for {result.name!r}, not {call['name']!r}"
    if result.status not in ("active", "pending", "expired", "transferring"):
        return f"returned status {result.status!r}"
    if result.status == "active" and not isinstance(result.expires_on, date):
        return "returned status 'active' without an expiry date"
    return None


def check_balance(result: Any, call: Mapping[str, Any]) -> str | None:
    if not isinstance(result, Balance):
        return f"get_balance returned a {type(result).__name__}, not a Balance"
    if not isinstance(result.amount, Decimal) or not result.amount.is_finite():
        return f"get_balance returned an amount that is not a Decimal ({result.amount!r})"
    if not isinstance(result.currency, str) or len(result.currency) != 3:
        return f"get_balance returned currency {result.currency!r}"
    return None


# ---------------------------------------------------------------- the kind


class DomainRegistrar(Plugin):
    """A domain registrar plugin kind (``info.kind == "domain_registrar"``).

    Deadlines (:attr:`max_call_seconds`): register, renew and transfer 60 s;
    set_nameservers and set_contacts 30 s; check, domain_info and
    get_balance 15 s. A call past it is :class:`RegistrarUnavailable`
    (retried with the same key). Results are checked (``check_*`` above): an
    ``active`` domain without an expiry date is refused and retried."""

    max_call_seconds: ClassVar[Mapping[str, float]] = {
        "check": 15.0,
        "register": 60.0,
        "renew": 60.0,
        "transfer": 60.0,
        "domain_info": 15.0,
        "set_nameservers": 30.0,
        "set_contacts": 30.0,
        "get_balance": 15.0,
    }
    result_rules: ClassVar[Mapping[str, ResultRule]] = {
        "check": check_checks,
        "register": check_domain_result,
        "renew": check_domain_result,
        "transfer": check_domain_result,
        "domain_info": check_domain_info,
        "set_nameservers": check_domain_info,
        "set_contacts": check_domain_info,
        "get_balance": check_balance,
    }

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


DomainRegistrar.timeout_error = RegistrarUnavailable
DomainRegistrar.failure_error = RegistrarUnavailable


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
    "check_balance",
    "check_checks",
    "check_domain_info",
    "check_domain_result",
]
