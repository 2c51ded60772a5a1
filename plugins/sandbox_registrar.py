"""A complete test domain registrar. It registers nothing anywhere: it keeps an
in-memory registry per ``registry`` setting (so two instances with different
registries do not see each other's names), idempotent by key like a real one.

Test names (the first label decides):

==========================  ================================================
``taken*``                  registered by someone else: check says taken,
                            register raises ObjectExists
``premium*``                available at the premium price 500.00
``down*``                   every call raises RegistrarUnavailable
``flaky*``                  the first call with a key raises
                            RegistrarUnavailable, a repeat succeeds
``slow*``                   a transfer is pending; the next ``domain_info``
                            finds it completed
``invalid*``                register raises RegistrarError (2306 policy)
==========================  ================================================

``registry(name).offline = True`` makes every call of that registry raise
RegistrarUnavailable. Transfers: the auth code ``wrong`` raises AuthorizationError (2201); any
other is accepted. Every register/renew/transfer year costs ``price`` from
the ``balance`` (settings; ``get_balance`` reports what is left).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from pba_server.sdk import SDK_VERSION, ConfigurationError, PluginInfo, SettingField
from pba_server.sdk.registrar import (
    AuthorizationError,
    Balance,
    CheckResult,
    Contact,
    DomainInfo,
    DomainRegistrar,
    DomainResult,
    ObjectExists,
    ObjectNotFound,
    RegistrarError,
    RegistrarUnavailable,
)


@dataclass
class _Registry:
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, DomainResult] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)
    spent: Decimal = Decimal(0)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, name)
    offline: bool = False  # every call raises RegistrarUnavailable (tests set it)


_registries: dict[str, _Registry] = {}
_lock = threading.RLock()


def registry(name: str = "sandbox") -> _Registry:
    """The in-memory state of one registry (tests look inside)."""
    with _lock:
        return _registries.setdefault(name, _Registry())


def reset(name: str | None = None) -> None:
    with _lock:
        if name is None:
            _registries.clear()
        else:
            _registries.pop(name, None)


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


class SandboxRegistrar(DomainRegistrar):
    info = PluginInfo(
        name="sandbox_registrar",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="domain_registrar",
        description="Test registrar with an in-memory registry and documented test names",
        settings=(
            SettingField("registry", required=False, default="sandbox"),
            SettingField("password", required=False, secret=True, default=""),
            SettingField("balance", type="decimal", required=False, default="1000.00"),
            SettingField("price", type="decimal", required=False, default="10.00"),
            SettingField("currency", required=False, default="USD"),
        ),
        capabilities=frozenset(
            {
                "check",
                "register",
                "renew",
                "transfer",
                "info",
                "set_nameservers",
                "set_contacts",
                "balance",
            }
        ),
    )

    @staticmethod
    def state(name: str = "sandbox") -> _Registry:
        """The in-memory registry ``name`` as this class sees it (tests look
        inside; a second import of this file would have its own)."""
        return registry(name)

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        try:
            self.balance = Decimal(settings.get("balance") or "1000.00")
            self.price = Decimal(settings.get("price") or "10.00")
        except ArithmeticError:
            raise ConfigurationError("balance and price must be amounts") from None
        if settings.get("password") == "bad":
            raise ConfigurationError("the registrar refuses this password")
        self.reg = registry(settings.get("registry") or "sandbox")
        self.currency = (settings.get("currency") or "USD").upper()

    # -- helpers
    def _enter(self, method: str, name: str, key: str | None = None) -> None:
        self.reg.calls.append((method, name))
        label = name.split(".")[0]
        if label.startswith("down") or self.reg.offline:
            raise RegistrarUnavailable("sandbox: registry unreachable", "2400")
        if label.startswith("flaky") and key is not None and key not in self.reg.seen_keys:
            self.reg.seen_keys.add(key)
            raise RegistrarUnavailable("sandbox: connection dropped", "2500")

    def _taken(self, name: str) -> bool:
        return name.split(".")[0].startswith("taken") or (
            name in self.reg.domains and self.reg.domains[name]["status"] != "transferring"
        )

    def _result(self, name: str) -> DomainResult:
        d = self.reg.domains[name]
        status = "pending" if d["status"] == "transferring" else "active"
        return DomainResult(name, status, d["expires_on"], d["roid"])  # type: ignore[arg-type]

    # -- the kind
    def check(self, names: list[str]) -> list[CheckResult]:
        with _lock:
            out = []
            for n in names:
                self._enter("check", n)
                if self._taken(n):
                    out.append(CheckResult(n, False, "taken"))
                elif n.split(".")[0].startswith("premium"):
                    out.append(CheckResult(n, True, "premium", Decimal("500.00"), self.currency))
                else:
                    out.append(CheckResult(n, True))
            return out

    def register(
        self,
        *,
        key: str,
        name: str,
        years: int,
        contacts: dict[str, Contact],
        nameservers: list[str],
    ) -> DomainResult:
        with _lock:
            self._enter("register", name, key)
            if key in self.reg.keys:
                return self.reg.keys[key]
            if name.split(".")[0].startswith("invalid"):
                raise RegistrarError("sandbox: parameter value policy error", "2306")
            if self._taken(name):
                raise ObjectExists(f"{name} exists", "2302")
            if "registrant" not in contacts:
                raise RegistrarError("sandbox: a registrant is required", "2003")
            self.reg.domains[name] = {
                "status": "active",
                "expires_on": _add_years(self.today(), years),
                "roid": f"D{len(self.reg.domains) + 1}-SANDBOX",
                "nameservers": list(nameservers),
                "contacts": dict(contacts),
            }
            self.reg.spent += self.price * years
            result = self._result(name)
            self.reg.keys[key] = result
            return result

    def renew(self, *, key: str, name: str, years: int, current_expiry: date) -> DomainResult:
        with _lock:
            self._enter("renew", name, key)
            if key in self.reg.keys:
                return self.reg.keys[key]
            d = self.reg.domains.get(name)
            if d is None:
                raise ObjectNotFound(f"{name} does not exist", "2303")
            if d["expires_on"] != current_expiry:
                raise RegistrarError(
                    f"{name}: current expiry date is {d['expires_on']}, not {current_expiry}",
                    "2306",
                )
            d["expires_on"] = _add_years(d["expires_on"], years)
            self.reg.spent += self.price * years
            result = self._result(name)
            self.reg.keys[key] = result
            return result

    def transfer(self, *, key: str, name: str, auth_code: str, years: int) -> DomainResult:
        with _lock:
            self._enter("transfer", name, key)
            if key in self.reg.keys:
                return self._result(name)
            if auth_code == "wrong":
                raise AuthorizationError("sandbox: invalid authorization information", "2201")
            if name in self.reg.domains and self.reg.domains[name]["status"] == "active":
                raise ObjectExists(f"{name} is already ours", "2106")
            pending = name.split(".")[0].startswith("slow")
            self.reg.domains[name] = {
                "status": "transferring" if pending else "active",
                "expires_on": _add_years(self.today(), years),
                "roid": f"D{len(self.reg.domains) + 1}-SANDBOX",
                "nameservers": [],
                "contacts": {},
            }
            self.reg.spent += self.price * years
            result = self._result(name)
            self.reg.keys[key] = result
            return result

    def domain_info(self, name: str) -> DomainInfo:
        with _lock:
            self._enter("info", name)
            d = self.reg.domains.get(name)
            if d is None:
                raise ObjectNotFound(f"{name} does not exist", "2303")
            if d["status"] == "transferring":  # asked again: the losing registrar let it go
                d["status"] = "active"
            expired = d["expires_on"] < self.today()
            return DomainInfo(
                name=name,
                status="expired" if expired else "active",
                expires_on=d["expires_on"],
                nameservers=tuple(d["nameservers"]),
                registry_id=d["roid"],
                registry_status=("ok",),
            )

    def set_nameservers(self, *, key: str, name: str, nameservers: list[str]) -> DomainInfo:
        with _lock:
            self._enter("set_nameservers", name, key)
            d = self.reg.domains.get(name)
            if d is None:
                raise ObjectNotFound(f"{name} does not exist", "2303")
            if any(h.split(".")[0].startswith("bogus") for h in nameservers):
                raise RegistrarError("sandbox: name server host does not exist", "2303")
            d["nameservers"] = list(nameservers)
        return self.domain_info(name)

    def set_contacts(self, *, key: str, name: str, contacts: dict[str, Contact]) -> DomainInfo:
        with _lock:
            self._enter("set_contacts", name, key)
            d = self.reg.domains.get(name)
            if d is None:
                raise ObjectNotFound(f"{name} does not exist", "2303")
            d["contacts"].update(contacts)
        return self.domain_info(name)

    def get_balance(self) -> Balance:
        with _lock:
            return Balance(self.balance - self.reg.spent, self.currency)


PLUGIN = SandboxRegistrar
