"""Reselling an upstream pba-server: every service is a subscription our
reseller account buys from another pba-server (a distributor), over its SOAP
API with zeep.

Instance settings: ``url`` (the upstream's SOAP address, e.g.
``https://upstream.example:8443/soap``; the WSDL is ``url?wsdl``), ``login``
and ``password`` (secret) of a user of our reseller account there,
``timeout`` (seconds per call, default 30), ``verify_tls`` (default true),
``poll_seconds`` (how often an unfinished upstream order is looked at,
default 60) and ``key_prefix`` (prepended to every idempotency key we send:
give each installation that shares one upstream account its own).

Template module settings: ``upstream_plan_id`` (required), ``period`` (e.g.
``1 month``, ``1 year``; default the plan's first), ``upstream_account_id``
(default: our reseller account itself, found with ``WhoAmI``) and
``parameters`` (comma-separated order parameters passed on; default all).

- ``create``: ``OrderPlace`` on account (the upstream's workflow runs it),
  ``idempotency_key`` = our operation key, so a retry or a poll finds the same
  order; then the order is followed (``InProgress`` until it completes). A
  rejected or cancelled order is a final failure with the upstream's reason.
  The upstream subscription id becomes the service's ``platform_id``; its
  status, period end and the data of its services (``ServiceList``) are
  copied into the service's data.
- ``prolong``: ``SubscriptionRenew`` until the upstream period ends on or after
  ours (``until``); each renewal is keyed by the period end it extends, so a
  repeat never renews twice.
- ``delete``: ``SubscriptionCancel`` (now); done when the cancellation order
  completes (or the subscription is already cancelled).
- ``suspend`` / ``resume``: ``SubscriptionSuspend`` / ``Resume`` when the
  upstream lets our reseller (by default it does not: only the seller's staff
  may; then the operation becomes a manual task).
- ``change``: ``SubscriptionChangePlan`` when the template's
  ``upstream_plan_id`` differs from the upstream subscription's plan, and
  ``SubscriptionBuyResource`` for each resource whose limit here is above the
  upstream's; anything else (parameters, lower limits) is a manual task.
- ``sync``: ``SubscriptionGet`` (status, period end).

Faults: connection errors, timeouts and ``Server.*`` faults are retried; so
are ``Client.AuthFailed`` / ``Client.TooManyAttempts`` (fixed by
reconfiguring the instance) and ``Client.CreditLimitExceeded`` (fixed by
paying the upstream); any other ``Client.*`` fault is a final failure with
its code and message.

The upstream keeps idempotency keys for 24 hours: an upstream order that
takes longer than that to complete is followed by its id, remembered in this
process; after a restart a person should check the upstream before retrying
such an operation (it becomes a manual task after the retry limit anyway).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from pba_server.sdk import SDK_VERSION, ConfigurationError, NotSupported, PluginInfo, SettingField
from pba_server.sdk.provisioning import (
    Done,
    FinalFailure,
    InProgress,
    ModuleResult,
    ProcessingModule,
    RetryableFailure,
    ServiceRequest,
)
from pba_server.sdk.upstream import Upstream, UpstreamFault, is_true

PERIOD_RE = re.compile(r"^\s*(\d{1,3})\s*(day|month|year)s?\s*$", re.IGNORECASE)

# our key -> the upstream order it placed (beyond the upstream's 24 h key
# retention), the most recent MEMO_SIZE in this process
_orders: OrderedDict[str, int] = OrderedDict()
_orders_lock = threading.Lock()
MEMO_SIZE = 10000


def parse_period(text: str | None) -> tuple[int | None, str | None]:
    if not text:
        return None, None
    m = PERIOD_RE.match(text)
    if m is None:
        raise ConfigurationError(f"period {text!r} is not like '1 month' or '1 year'")
    return int(m.group(1)), m.group(2).lower()


def settings_common(settings: dict[str, str]) -> tuple[str, str, str, float, bool]:
    url = (settings.get("url") or "").strip()
    if not re.match(r"^https?://[^\s/]+", url):
        raise ConfigurationError("url must be the upstream's http(s) SOAP address")
    login = (settings.get("login") or "").strip()
    if not login:
        raise ConfigurationError("login is required")
    try:
        timeout = float(settings.get("timeout") or 30)
    except ValueError:
        raise ConfigurationError("timeout must be a number of seconds") from None
    if not 1 <= timeout <= 600:
        raise ConfigurationError("timeout must be 1 to 600 seconds")
    return url, login, settings.get("password") or "", timeout, is_true(settings.get("verify_tls"))


def order_state(order: dict[str, Any]) -> str:
    """running | done | failed"""
    status = order.get("status")
    if status == "completed":
        return "done"
    if status in ("rejected", "cancelled"):
        return "failed"
    return "running"


class UpstreamPba(ProcessingModule):
    info = PluginInfo(
        name="upstream_pba",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="processing_module",
        description="Resells an upstream pba-server's plans (SOAP, our reseller account there)",
        settings=(
            SettingField(
                "url", description="the upstream's SOAP address, http(s)://host/soap", kind="url"
            ),
            SettingField("login", description="a user of our reseller account at the upstream"),
            SettingField("password", secret=True),
            SettingField("timeout", type="int", required=False, default="30"),
            SettingField("verify_tls", type="bool", required=False, default="true"),
            SettingField("poll_seconds", type="int", required=False, default="60"),
            SettingField("key_prefix", required=False, default=""),
        ),
        capabilities=frozenset(
            {"create", "suspend", "resume", "change", "prolong", "delete", "sync"}
        ),
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        url, login, password, timeout, verify = settings_common(settings)
        try:
            self.poll = int(settings.get("poll_seconds") or 60)
        except ValueError:
            raise ConfigurationError("poll_seconds must be a whole number") from None
        if not 1 <= self.poll <= 86400:
            raise ConfigurationError("poll_seconds must be 1 to 86400")
        self.prefix = (settings.get("key_prefix") or "").strip()[:32]
        self.upstream = Upstream(
            url, login, password, timeout=timeout, verify=verify, sessions=self.net.http_session
        )

    # -- helpers
    def key(self, *parts: str) -> str:
        return (self.prefix + ":".join(parts))[:128]

    def _order_of(self, key: str, place: Any) -> dict[str, Any]:
        """The upstream order placed with ``key``: placed now (``place()``,
        which sends the key), or found again (same key: the upstream answers
        the first order), then read fresh with OrderGet."""
        with _orders_lock:
            known = _orders.get(f"{self.upstream.url}|{key}")
        if known is None:
            placed = place()
            known = int(placed["id"])
            with _orders_lock:
                _orders[f"{self.upstream.url}|{key}"] = known
                while len(_orders) > MEMO_SIZE:
                    _orders.popitem(last=False)
        order: dict[str, Any] = self.upstream.call("OrderGet", order_id=known)
        return order

    def _waiting(self, order: dict[str, Any], what: str) -> ModuleResult:
        return InProgress(
            poll_after=self.poll,
            message=f"upstream {what} order {order['id']} is {order['status']} "
            f"at step {order.get('current_step')}",
        )

    @staticmethod
    def _refused(order: dict[str, Any], what: str) -> ModuleResult:
        return FinalFailure(
            f"upstream {what} order {order['id']} {order['status']}: "
            f"{order.get('reason') or 'no reason given'}"
        )

    def _subscription(self, request: ServiceRequest) -> dict[str, Any]:
        if not request.platform_id:
            raise UpstreamFault("Client.Validation", "the service has no upstream subscription id")
        sub: dict[str, Any] = self.upstream.call(
            "SubscriptionGet", subscription_id=int(request.platform_id)
        )
        return sub

    def _data(self, sub: dict[str, Any], order_id: int | None = None) -> dict[str, str]:
        data = {
            "upstream_subscription_id": str(sub["id"]),
            "upstream_plan_id": str(sub["plan_id"]),
            "upstream_status": str(sub["status"]),
            "upstream_period_end": str(sub["period_end"]),
        }
        if order_id is not None:
            data["upstream_order_id"] = str(order_id)
        # a page ({items, total, offset, limit}: one subscription's services
        # fit the default limit); an upstream of an older release answers a
        # bare array
        answer = self.upstream.call("ServiceList", subscription_id=int(sub["id"]))
        services = answer.get("items") if isinstance(answer, dict) else answer
        for svc in services or []:
            for value in svc.get("data") or []:
                data.setdefault(str(value["name"]), str(value["value"]))
        return data

    # -- actions
    def perform(self, request: ServiceRequest) -> ModuleResult:
        try:
            handler = getattr(self, f"_{request.action}")
            result: ModuleResult = handler(request)
            return result
        except UpstreamFault as exc:
            if request.action in ("suspend", "resume") and exc.code == "Client.Forbidden":
                raise NotSupported(
                    f"the upstream does not let our reseller {request.action}: {exc.message}"
                ) from None
            if exc.retryable:
                return RetryableFailure(f"upstream: {exc}")
            return FinalFailure(f"upstream refused: {exc}")
        finally:
            self.upstream.close()

    def _create(self, request: ServiceRequest) -> ModuleResult:
        ms = request.module_settings
        try:
            plan_id = int(ms.get("upstream_plan_id") or "")
        except ValueError:
            return FinalFailure("the template's module setting upstream_plan_id is not set")
        try:
            count, unit = parse_period(ms.get("period"))
        except ConfigurationError as exc:
            return FinalFailure(f"the template's module setting {exc}")
        passed = {p.strip() for p in (ms.get("parameters") or "").split(",") if p.strip()}
        params = [
            {"name": k, "value": v}
            for k, v in sorted(request.parameters.items())
            if not passed or k in passed
        ]
        line: dict[str, Any] = {"plan_id": plan_id, "parameters": params or None}
        if count is not None:
            line.update(period_count=count, period_unit=unit)
        key = self.key("create", request.key)

        def place() -> Any:
            return self.upstream.call(
                "OrderPlace",
                account_id=self.upstream.account_id(ms.get("upstream_account_id")),
                lines=[line],
                on_account=True,
                idempotency_key=key,
            )

        order = self._order_of(key, place)
        state = order_state(order)
        if state == "running":
            return self._waiting(order, "sales")
        if state == "failed":
            return self._refused(order, "sales")
        if order.get("subscription_id") is None:
            return FinalFailure(f"upstream order {order['id']} completed without a subscription")
        sub = self.upstream.call("SubscriptionGet", subscription_id=int(order["subscription_id"]))
        return Done(platform_id=str(sub["id"]), data=self._data(sub, int(order["id"])))

    def _prolong(self, request: ServiceRequest) -> ModuleResult:
        sub = self._subscription(request)
        until = date.fromisoformat(request.until) if request.until else None
        if until is not None and sub["period_end"] >= until:
            return Done(data=self._data(sub))
        # with ``until``: renewals until the upstream period reaches it, each
        # keyed by the period end it extends (a repeat never renews twice);
        # without: one renewal, keyed by our operation
        if until is None:
            key = self.key("renew", request.key)
        else:
            key = self.key("renew", str(sub["id"]), str(sub["period_end"]))

        def place() -> Any:
            return self.upstream.call(
                "SubscriptionRenew",
                subscription_id=int(sub["id"]),
                on_account=True,
                idempotency_key=key,
            )

        order = self._order_of(key, place)
        state = order_state(order)
        if state == "running":
            return self._waiting(order, "renewal")
        if state == "failed":
            return self._refused(order, "renewal")
        sub = self._subscription(request)
        if until is not None and sub["period_end"] < until:  # a shorter upstream period
            return InProgress(
                poll_after=1,
                message=f"upstream renewed to {sub['period_end']}; renewing again to {until}",
            )
        return Done(data=self._data(sub))

    def _delete(self, request: ServiceRequest) -> ModuleResult:
        sub = self._subscription(request)
        if sub["status"] in ("cancelled", "expired"):
            return Done(data={"upstream_status": str(sub["status"])})
        key = self.key("cancel", request.key)

        def place() -> Any:
            return self.upstream.call(
                "SubscriptionCancel",
                subscription_id=int(sub["id"]),
                when="now",
                reason="cancelled by the reseller",
                idempotency_key=key,
            )

        order = self._order_of(key, place)
        state = order_state(order)
        if state == "running":
            return self._waiting(order, "cancellation")
        if state == "failed":
            return self._refused(order, "cancellation")
        sub = self._subscription(request)
        return Done(data={"upstream_status": str(sub["status"])})

    def _suspend(self, request: ServiceRequest) -> ModuleResult:
        sub = self._subscription(request)
        if sub["status"] != "suspended":
            sub = self.upstream.call(
                "SubscriptionSuspend", subscription_id=int(sub["id"]), reason="reseller"
            )
        return Done(data={"upstream_status": str(sub["status"])})

    def _resume(self, request: ServiceRequest) -> ModuleResult:
        sub = self._subscription(request)
        if sub["status"] == "suspended":
            sub = self.upstream.call("SubscriptionResume", subscription_id=int(sub["id"]))
        return Done(data={"upstream_status": str(sub["status"])})

    def _change(self, request: ServiceRequest) -> ModuleResult:
        sub = self._subscription(request)
        wanted = request.module_settings.get("upstream_plan_id")
        if wanted and str(sub["plan_id"]) != wanted.strip():
            key = self.key("change", request.key)

            def change() -> Any:
                return self.upstream.call(
                    "SubscriptionChangePlan",
                    subscription_id=int(sub["id"]),
                    plan_id=int(wanted),
                    on_account=True,
                    idempotency_key=key,
                )

            order = self._order_of(key, change)
            state = order_state(order)
            if state == "running":
                return self._waiting(order, "plan change")
            if state == "failed":
                return self._refused(order, "plan change")
            return Done(data=self._data(self._subscription(request)))
        buy = []
        for r in sub.get("resources") or []:
            here = request.limits.get(str(r["name"]))
            try:
                there = Decimal(str(r["limit"]))
            except (InvalidOperation, KeyError):
                continue
            if here is not None and here > there:
                buy.append((int(r["resource_id"]), str(r["name"]), here - there))
        if not buy:
            mine = (
                f"{self.upstream.url}|{self.key('change', request.key)}",
                f"{self.upstream.url}|{self.key('buy', request.key)}:",
            )
            with _orders_lock:
                ours = any(k == mine[0] or k.startswith(mine[1]) for k in _orders)
            if ours:  # our change, asked again after it completed
                return Done(data=self._data(sub))
            raise NotSupported("nothing the upstream can change: a person applies it")
        for resource_id, name, amount in buy:
            key = self.key("buy", request.key, str(resource_id))

            def place(
                resource_id: int = resource_id, amount: Decimal = amount, key: str = key
            ) -> Any:
                return self.upstream.call(
                    "SubscriptionBuyResource",
                    subscription_id=int(sub["id"]),
                    resource_id=resource_id,
                    amount=amount,
                    on_account=True,
                    idempotency_key=key,
                )

            order = self._order_of(key, place)
            state = order_state(order)
            if state == "running":
                return self._waiting(order, f"{name} resource")
            if state == "failed":
                return self._refused(order, f"{name} resource")
        return Done(data=self._data(self._subscription(request)))

    def _sync(self, request: ServiceRequest) -> ModuleResult:
        return Done(data=self._data(self._subscription(request)))


PLUGIN = UpstreamPba
