"""Domains resold from an upstream pba-server: a registrar whose "registry"
is another pba-server where we are a reseller, called over SOAP with zeep.

Settings: ``url`` (the upstream's SOAP address), ``login`` / ``password``
(secret) of a user of our reseller account there, ``timeout`` (seconds per
call, default 30), ``verify_tls`` (default true), ``wait`` (how long one call
waits for an upstream order to complete, default 20 seconds),
``upstream_account_id`` (the account domains are ordered for; default our
reseller account, found with ``WhoAmI``) and ``key_prefix`` (prepended to
the idempotency keys we send).

- ``check`` -> ``DomainCheck`` upstream;
- ``register`` / ``transfer`` -> ``OrderPlace`` on account for the plan that
  sells the TLD there (``TldList``: ``plan_id``, ``transfer_plan_id``) with
  the parameters ``domain``, ``action``, ``auth_code``, ``nameservers``, keyed
  by our key; the call waits up to ``wait`` seconds for the upstream order to
  complete and otherwise raises :class:`RegistrarUnavailable` -- the retry
  with the same key finds the same order. A transfer still running at the
  upstream is answered ``pending``. After a registration the registrant,
  admin, tech and billing contacts we were given are set on the upstream
  domain (``DomainSetContacts``): the upstream would otherwise use our
  reseller account's.
- ``renew`` -> ``SubscriptionRenew`` of the upstream domain's subscription,
  keyed by our key and the expiry date it extends; a domain already expiring
  on or after the target is not renewed again;
- ``domain_info`` -> ``DomainList`` (by name) upstream;
- ``set_nameservers`` / ``set_contacts`` -> ``DomainSetNameservers`` /
  ``DomainSetContacts`` upstream;
- ``get_balance`` -> ``AccountBalanceGet`` of our account: the available
  credit at the upstream (credit limit minus what we owe), so the balance
  monitor warns before orders there start failing.

Faults: unreachable upstream, timeouts, ``Server.*``, ``Client.AuthFailed``,
``Client.TooManyAttempts`` and ``Client.CreditLimitExceeded`` ->
:class:`RegistrarUnavailable`; ``Client.NotFound`` -> :class:`ObjectNotFound`;
other ``Client.*`` faults -> :class:`RegistrarError` with the fault code. A
rejected upstream order maps its reason: a name taken -> :class:`ObjectExists`,
a wrong auth code -> :class:`AuthorizationError`.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal
from typing import Any, NoReturn

from pba_server.sdk import SDK_VERSION, ConfigurationError, PluginInfo, SettingField
from pba_server.sdk.registrar import (
    CONTACT_ROLES,
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
from pba_server.sdk.upstream import Upstream, UpstreamFault, is_true

LIVE = ("pending", "active", "expired", "transferring")


def _raise(exc: UpstreamFault) -> NoReturn:
    if exc.retryable:
        raise RegistrarUnavailable(f"upstream: {exc}", exc.code) from None
    if exc.code == "Client.NotFound":
        raise ObjectNotFound(f"upstream: {exc}", exc.code) from None
    if exc.code == "Client.Validation" and "already registered" in exc.message:
        raise ObjectExists(f"upstream: {exc}", exc.code) from None
    raise RegistrarError(f"upstream: {exc}", exc.code) from None


def _refused(order: dict[str, Any]) -> NoReturn:
    reason = str(order.get("reason") or "no reason given")
    text = f"upstream order {order['id']} {order['status']}: {reason}"
    if "ObjectExists" in reason or "taken" in reason:
        raise ObjectExists(text)
    if "AuthorizationError" in reason:
        raise AuthorizationError(text)
    raise RegistrarError(text)


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


class UpstreamPbaRegistrar(DomainRegistrar):
    info = PluginInfo(
        name="upstream_pba_registrar",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="domain_registrar",
        description="Domains resold from an upstream pba-server (SOAP, our reseller account there)",
        settings=(
            SettingField(
                "url", description="the upstream's SOAP address, http(s)://host/soap", kind="url"
            ),
            SettingField("login", description="a user of our reseller account at the upstream"),
            SettingField("password", secret=True),
            SettingField("timeout", type="int", required=False, default="30"),
            SettingField("verify_tls", type="bool", required=False, default="true"),
            SettingField("wait", type="int", required=False, default="20"),
            SettingField("upstream_account_id", required=False, default=""),
            SettingField("key_prefix", required=False, default=""),
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

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        url = (settings.get("url") or "").strip()
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError("url must be the upstream's http(s) SOAP address")
        login = (settings.get("login") or "").strip()
        if not login:
            raise ConfigurationError("login is required")
        try:
            timeout = float(settings.get("timeout") or 30)
            self.wait = float(settings.get("wait") or 20)
        except ValueError:
            raise ConfigurationError("timeout and wait must be numbers of seconds") from None
        if not 1 <= timeout <= 600 or not 0 <= self.wait <= 600:
            raise ConfigurationError("timeout must be 1 to 600 and wait 0 to 600 seconds")
        self.account = (settings.get("upstream_account_id") or "").strip()
        if self.account and not self.account.isdigit():
            raise ConfigurationError("upstream_account_id must be an account id")
        self.prefix = (settings.get("key_prefix") or "").strip()[:32]
        self.upstream = Upstream(
            url,
            login,
            settings.get("password") or "",
            timeout=timeout,
            verify=is_true(settings.get("verify_tls")),
            sessions=self.net.http_session,
        )

    # -- helpers
    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return self.upstream.call(operation, **params)
        except UpstreamFault as exc:
            _raise(exc)

    def _key(self, *parts: str) -> str:
        return (self.prefix + ":".join(parts))[:128]

    def _account_id(self) -> int:
        try:
            return self.upstream.account_id(self.account)
        except UpstreamFault as exc:
            _raise(exc)

    def _tld(self, name: str) -> dict[str, Any]:
        tlds = [t for t in self._all("TldList") if t["status"] == "active"]
        under = [t for t in tlds if name.endswith("." + str(t["name"]))]
        if not under:
            raise RegistrarError(f"the upstream sells no TLD of {name}")
        return max(under, key=lambda t: len(str(t["name"])))

    def _all(self, operation: str) -> list[dict[str, Any]]:
        """Every item of a ``*List``, page after page. An upstream of an older
        release answers a bare array (and takes no offset or limit)."""
        answer = self._call(operation)
        if not isinstance(answer, dict):
            return list(answer or [])
        items = list(answer.get("items") or [])
        while len(items) < int(answer.get("total") or 0):
            answer = self._call(operation, offset=len(items), limit=1000) or {}
            more = list(answer.get("items") or [])
            if not more:
                break
            items.extend(more)
        return items

    def _domain(self, name: str) -> dict[str, Any] | None:
        """The upstream's live domain row for ``name``, None if none."""
        page = self._call("DomainList", name=name, limit=100) or {}
        rows = [d for d in page.get("items") or [] if d["name"] == name and d["status"] in LIVE]
        return max(rows, key=lambda d: int(d["id"])) if rows else None

    def _follow(self, order_id: int, transferring: str | None = None) -> dict[str, Any]:
        """The order, once it is no longer running, or after ``wait`` seconds;
        with ``transferring`` (a name), also once the upstream provisions it and
        its domain waits for the losing registrar."""
        deadline = time.monotonic() + self.wait
        while True:
            order: dict[str, Any] = self._call("OrderGet", order_id=order_id)
            if order["status"] not in ("running", "waiting") or time.monotonic() >= deadline:
                return order
            if transferring is not None and order.get("current_action") == "provision":
                d = self._domain(transferring)
                if d is not None and d["status"] == "transferring":
                    return order
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _order(
        self, key: str, lines: list[dict[str, Any]], transferring: str | None = None
    ) -> dict[str, Any]:
        placed = self._call(
            "OrderPlace",
            account_id=self._account_id(),
            lines=lines,
            on_account=True,
            idempotency_key=key,
        )
        return self._follow(int(placed["id"]), transferring)

    @staticmethod
    def _still_running(order: dict[str, Any]) -> NoReturn:
        raise RegistrarUnavailable(
            f"upstream order {order['id']} is {order['status']} at step "
            f"{order.get('current_step')}; asked again later"
        )

    def _wire_contacts(self, contacts: dict[str, Contact]) -> list[dict[str, str]]:
        out = []
        for role in CONTACT_ROLES:
            c = contacts.get(role)
            if c is not None:
                values = {k: getattr(c, k) for k in Contact.__dataclass_fields__}
                out.append({"role": role, **values})
        return out

    @staticmethod
    def _info(d: dict[str, Any]) -> DomainInfo:
        status = d["status"] if d["status"] in ("active", "expired", "transferring") else "pending"
        return DomainInfo(
            name=str(d["name"]),
            status=status,
            expires_on=d.get("expires_on"),
            nameservers=tuple(d.get("nameservers") or ()),
            registry_id=d.get("registry_id"),
            registry_status=(str(d["status"]),),
        )

    @staticmethod
    def _result(d: dict[str, Any]) -> DomainResult:
        status = "active" if d["status"] in ("active", "expired") else "pending"
        return DomainResult(
            str(d["name"]),
            status,
            d.get("expires_on"),
            d.get("registry_id"),  # type: ignore[arg-type]
        )

    # -- the kind
    def check(self, names: list[str]) -> list[CheckResult]:
        try:
            items = self._call("DomainCheck", names=names) or []
            by_name = {str(i["name"]): i for i in items}
            out = []
            for n in names:
                i = by_name.get(n) or by_name.get(n.lower())
                if i is None:
                    out.append(CheckResult(n, False, "the upstream did not answer for it"))
                    continue
                premium = i.get("premium_price")
                out.append(
                    CheckResult(
                        n,
                        bool(i["available"]),
                        str(i.get("reason") or ""),
                        Decimal(premium) if premium is not None else None,
                        i.get("currency") if premium is not None else None,
                    )
                )
            return out
        finally:
            self.upstream.close()

    def register(
        self,
        *,
        key: str,
        name: str,
        years: int,
        contacts: dict[str, Contact],
        nameservers: list[str],
    ) -> DomainResult:
        try:
            tld = self._tld(name)
            params = [{"name": "domain", "value": name}, {"name": "action", "value": "register"}]
            if nameservers:
                params.append({"name": "nameservers", "value": ",".join(nameservers)})
            line = {
                "plan_id": int(tld["plan_id"]),
                "period_count": years,
                "period_unit": "year",
                "parameters": params,
            }
            order = self._order(self._key("register", key), [line])
            if order["status"] in ("rejected", "cancelled"):
                _refused(order)
            if order["status"] != "completed":
                self._still_running(order)
            d = self._domain(name)
            if d is None:
                raise RegistrarUnavailable(f"upstream order {order['id']} completed; no {name}")
            if contacts:  # ours, not our reseller account's (the upstream's default)
                d = self._call(
                    "DomainSetContacts",
                    domain_id=int(d["id"]),
                    contacts=self._wire_contacts(contacts),
                )
            return self._result(d)
        finally:
            self.upstream.close()

    def transfer(self, *, key: str, name: str, auth_code: str, years: int) -> DomainResult:
        try:
            tld = self._tld(name)
            line = {
                "plan_id": int(tld.get("transfer_plan_id") or tld["plan_id"]),
                "period_count": years,
                "period_unit": "year",
                "parameters": [
                    {"name": "domain", "value": name},
                    {"name": "action", "value": "transfer"},
                    {"name": "auth_code", "value": auth_code},
                ],
            }
            order = self._order(self._key("transfer", key), [line], transferring=name)
            if order["status"] in ("rejected", "cancelled"):
                _refused(order)
            d = self._domain(name)
            if order["status"] != "completed":
                if d is not None and d["status"] in ("pending", "transferring"):
                    return DomainResult(name, "pending", d.get("expires_on"), d.get("registry_id"))
                self._still_running(order)
            if d is None:
                raise RegistrarUnavailable(f"upstream order {order['id']} completed; no {name}")
            return self._result(d)
        finally:
            self.upstream.close()

    def renew(self, *, key: str, name: str, years: int, current_expiry: date) -> DomainResult:
        try:
            target = _add_years(current_expiry, years)
            for _ in range(max(1, years)):
                d = self._domain(name)
                if d is None:
                    raise ObjectNotFound(f"the upstream has no live domain {name}")
                expires = d.get("expires_on")
                if expires is not None and expires >= target:
                    return self._result(d)  # done (by us, earlier): never twice
                if d.get("subscription_id") is None:
                    raise RegistrarError(f"the upstream domain {name} has no subscription")
                placed = self._call(
                    "SubscriptionRenew",
                    subscription_id=int(d["subscription_id"]),
                    on_account=True,
                    idempotency_key=self._key("renew", key, str(expires)),
                )
                order = self._follow(int(placed["id"]))
                if order["status"] in ("rejected", "cancelled"):
                    _refused(order)
                if order["status"] != "completed":
                    self._still_running(order)
            d = self._domain(name)
            if d is None:
                raise ObjectNotFound(f"the upstream has no live domain {name}")
            if d.get("expires_on") is None or d["expires_on"] < target:
                raise RegistrarError(
                    f"the upstream renewed {name} to {d.get('expires_on')}, not {target}"
                )
            return self._result(d)
        finally:
            self.upstream.close()

    def domain_info(self, name: str) -> DomainInfo:
        try:
            d = self._domain(name)
            if d is None:
                raise ObjectNotFound(f"the upstream has no live domain {name}")
            return self._info(d)
        finally:
            self.upstream.close()

    def set_nameservers(self, *, key: str, name: str, nameservers: list[str]) -> DomainInfo:
        try:
            d = self._domain(name)
            if d is None:
                raise ObjectNotFound(f"the upstream has no live domain {name}")
            d = self._call(
                "DomainSetNameservers", domain_id=int(d["id"]), nameservers=list(nameservers)
            )
            return self._info(d)
        finally:
            self.upstream.close()

    def set_contacts(self, *, key: str, name: str, contacts: dict[str, Contact]) -> DomainInfo:
        try:
            d = self._domain(name)
            if d is None:
                raise ObjectNotFound(f"the upstream has no live domain {name}")
            d = self._call(
                "DomainSetContacts", domain_id=int(d["id"]), contacts=self._wire_contacts(contacts)
            )
            return self._info(d)
        finally:
            self.upstream.close()

    def get_balance(self) -> Balance:
        try:
            b = self._call("AccountBalanceGet", account_id=self._account_id())
            return Balance(Decimal(b["available_credit"]), str(b["currency"]))
        finally:
            self.upstream.close()


PLUGIN = UpstreamPbaRegistrar
