"""What plugins may import: the plugin kinds, their results and exceptions.

A plugin is a module (or package) that exposes ``PLUGIN``: a subclass of a
plugin kind (here :class:`PaymentGateway`) whose class attribute ``info`` is a
:class:`PluginInfo`. The server instantiates it once per configured instance
with that instance's settings (secrets decrypted) and calls its methods on a
worker thread, never on the reactor thread.

Versioning: ``SDK_VERSION`` is ``MAJOR.MINOR``. A plugin declares the version
it targets; it loads when the major versions are equal and its minor is not
above ours (a plugin written for 1.0 runs on 1.3, not the reverse).

Rooms: this module (the plugin basics and :class:`PaymentGateway`), one
module per other kind (:mod:`.provisioning`, :mod:`.registrar`,
:mod:`.fraud`, :mod:`.notify`), :mod:`.net` (outgoing connections under the
address policy), :mod:`.upstream` (a SOAP client for another pba-server),
:mod:`.loader` (discovery and instantiation, the server's side) and
:mod:`.testing` (conformance kits). Plugins import this package and nothing
else of the server; the SDK itself imports only ``pba_server.core``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pba_server.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from pba_server.sdk.net import Net

SDK_VERSION = "1.0"
# the most a gateway may declare as PaymentGateway.lookup_settles_seconds
MAX_LOOKUP_SETTLES = 3600

SettingType = Literal["str", "int", "bool", "decimal"]
PluginKind = Literal[
    "payment_gateway",  # PaymentGateway, below
    "processing_module",  # pba_server.sdk.provisioning.ProcessingModule
    "domain_registrar",  # pba_server.sdk.registrar.DomainRegistrar
    "fraud_screener",  # pba_server.sdk.fraud.FraudScreener
    "notification_channel",  # pba_server.sdk.notify.NotificationChannel
]
# What a setting names. ``plain`` and ``secret`` are the tenant's (an API key,
# a login, a timeout); the others name something on the server or its network
# and are the operator's: only the provider's administrators set them.
SettingKind = Literal["plain", "secret", "url", "host", "port", "path", "program"]
OPERATOR_KINDS: frozenset[str] = frozenset({"url", "host", "port", "path", "program"})
Capability = Literal["charge", "refund", "partial_refund", "recurring_tokens", "3ds", "lookup"]


@dataclass(frozen=True)
class SettingField:
    """One setting of a plugin instance.

    ``kind`` says what it names (see :data:`SettingKind`). ``secret`` ones
    (``kind="secret"``, or ``secret=True``: the same) are encrypted at rest,
    never returned by the API and never logged. ``url``, ``host``, ``port``,
    ``path`` and ``program`` settings are operator settings: PluginConfigure
    refuses them from anyone but the provider's administrators, so a
    reseller's or customer's instance has the default (give one) or cannot be
    made. Declare every setting that names a program, a file, a host, a port
    or a URL with its kind."""

    name: str
    type: SettingType = "str"
    required: bool = True
    secret: bool = False
    default: str | None = None
    description: str = ""
    kind: SettingKind = "plain"

    def __post_init__(self) -> None:
        if self.secret and self.kind == "plain":
            object.__setattr__(self, "kind", "secret")
        elif self.kind == "secret":
            object.__setattr__(self, "secret", True)
        elif self.secret:
            raise ValueError(f"setting {self.name!r}: a {self.kind} setting cannot be secret")

    @property
    def operator_only(self) -> bool:
        """True if only the provider's administrators may set it."""
        return self.kind in OPERATOR_KINDS


@dataclass(frozen=True)
class PluginInfo:
    name: str  # unique, [a-z0-9_]+
    version: str
    sdk_version: str  # the SDK version the plugin targets, "MAJOR.MINOR"
    kind: PluginKind = "payment_gateway"
    description: str = ""
    settings: tuple[SettingField, ...] = ()
    capabilities: frozenset[str] = field(default_factory=frozenset)
    # True for a plugin that runs programs or touches the server's file system
    # (script, log_channel): only the provider's administrators configure its
    # instances; tenants use the ones the provider offers. (A plugin whose
    # ``path`` setting is optional and off by default, like sandbox_card's
    # state_file, may leave it False: the setting itself is the operator's.)
    operator_only: bool = False

    def tenant_configurable(self) -> bool:
        """False if only the provider's administrators may configure it."""
        return not self.operator_only


# ---------------------------------------------------------------- the base of every kind


class Plugin(abc.ABC):
    """What every plugin kind shares.

    ``clock`` is the server's clock: the server sets it on every object it
    builds (see :func:`pba_server.sdk.loader.instantiate`), so a plugin asks
    :meth:`now` / :meth:`today` and never the wall clock. Tests that move the
    server's time move the plugin's with it. An object built by hand (a
    plugin's own unit test) has the system clock until one is set.

    ``net`` (:class:`pba_server.sdk.net.Net`) is how a plugin connects to
    anything: sockets and HTTP sessions under the server's outgoing-address
    policy. A plugin never opens a socket or an HTTP client itself."""

    info: ClassVar[PluginInfo]
    # The longest the server waits for each method, in seconds: each kind
    # documents its maximum here. A plugin may declare shorter ones (never
    # longer: the kind's maximum wins). A call past its deadline is treated as
    # the kind's "outcome unknown" (timeout_error), like a gateway timeout.
    max_call_seconds: ClassVar[Mapping[str, float]] = {}
    # What the server raises in the caller's place when a call gets no answer
    # in time (timeout_error) or fails in a way that leaves the outcome
    # unknown (failure_error): set per kind below.
    timeout_error: ClassVar[type[PluginError]]
    failure_error: ClassVar[type[PluginError]]
    # The rules each method's result must keep (see :data:`ResultRule`); the
    # server checks them on every call and refuses a result that breaks one.
    result_rules: ClassVar[Mapping[str, ResultRule]] = {}
    clock: Clock = SystemClock()
    net: Net  # set below (the net module imports this one); see sdk.net

    def __init__(self, settings: dict[str, str]) -> None:
        """Required. ``settings`` holds every declared setting by name (secrets
        in clear, in memory only). Raise :class:`ConfigurationError` if unusable."""
        self.settings = settings

    def now(self) -> datetime:
        """The server's current time (aware, UTC)."""
        return self.clock.now()

    def today(self) -> date:
        """The server's current date (UTC)."""
        return self.clock.now().date()


# ---------------------------------------------------------------- exceptions


class PluginError(Exception):
    """Base of every exception a plugin may raise. Anything else a plugin
    raises is treated as :class:`GatewayError` (outcome unknown)."""


Plugin.timeout_error = PluginError
Plugin.failure_error = PluginError

# A result rule: ``rule(result, call_kwargs)`` returns what the result breaks
# (a short sentence for the operator's log) or None if it is fine.
ResultRule = Callable[[Any, Mapping[str, Any]], str | None]


class PluginBusy(PluginError):
    """Raised by the server in a caller's place, never by a plugin: the plugin
    was **not called** -- its instance's threads are all taken, the request
    threads' budget for plugin calls is used up, or its circuit breaker is
    open. Nothing reached the plugin, so nothing happened: the caller may try
    again shortly (``retry_after``: seconds, when known). What the guard
    raises is also the kind's ``failure_error`` (a class deriving from both),
    so code that does not know this class treats it as a failure; the
    server's own callers answer ``Server.Busy`` (5031) or retry later, never
    a decline."""

    retry_after: float | None = None


class ConfigurationError(PluginError):
    """The instance's settings are unusable (missing key, bad value)."""


class CardDeclined(PluginError):
    """The gateway answered: no money moved. ``code`` is the gateway's reason
    (e.g. ``insufficient_funds``, ``stolen_card``)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code


class AuthenticationRequired(CardDeclined):
    """The charge needs the cardholder (3-D Secure); no money moved."""

    def __init__(self, message: str = "3-D Secure authentication required") -> None:
        super().__init__("authentication_required", message)


class GatewayTimeout(PluginError):
    """No answer in time: the outcome is unknown. The server keeps the payment
    pending and asks again later with :meth:`PaymentGateway.lookup`."""


class GatewayError(PluginError):
    """The gateway failed in a way that leaves the outcome unknown."""


class RefundRejected(PluginError):
    """The gateway refused the refund (e.g. above what was captured)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


class NotSupported(PluginError):
    """An optional method the plugin does not implement."""


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ChargeResult:
    """A charge the gateway captured."""

    reference: str  # the gateway's id of the charge
    amount: Decimal
    currency: str
    status: Literal["captured"] = "captured"


@dataclass(frozen=True)
class LookupResult:
    """What the gateway knows of a charge asked for by our key."""

    status: Literal["captured", "declined", "not_found"]
    reference: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True)
class RefundResult:
    reference: str
    amount: Decimal


def _is_money(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def _is_currency(value: object) -> bool:
    return isinstance(value, str) and len(value) == 3 and value.isalpha() and value.isupper()


def check_charge(result: Any, call: Mapping[str, Any]) -> str | None:
    """A charge answers a captured :class:`ChargeResult` of exactly the amount
    and currency asked for, with the gateway's reference."""
    if not isinstance(result, ChargeResult):
        return f"charge returned a {type(result).__name__}, not a ChargeResult"
    if result.status != "captured":
        return f"charge returned status {result.status!r}, not 'captured'"
    if not isinstance(result.reference, str) or not result.reference.strip():
        return "charge returned no reference"
    if not _is_money(result.amount):
        return f"charge returned an amount that is not a Decimal ({result.amount!r})"
    if "amount" in call and result.amount != call["amount"]:
        return f"charge captured {result.amount}, not the {call['amount']} asked for"
    if "currency" in call and result.currency != call["currency"]:
        return f"charge captured in {result.currency!r}, not {call['currency']!r}"
    return None


def check_lookup(result: Any, call: Mapping[str, Any]) -> str | None:
    """A lookup answers a :class:`LookupResult` with a known status; a capture
    has a Decimal amount (if given) and a currency (if given)."""
    if not isinstance(result, LookupResult):
        return f"lookup returned a {type(result).__name__}, not a LookupResult"
    if result.status not in ("captured", "declined", "not_found"):
        return f"lookup returned status {result.status!r}"
    if result.amount is not None and not _is_money(result.amount):
        return f"lookup returned an amount that is not a Decimal ({result.amount!r})"
    if result.currency is not None and not _is_currency(result.currency):
        return f"lookup returned currency {result.currency!r}"
    return None


def check_refund(result: Any, call: Mapping[str, Any]) -> str | None:
    """A refund answers a :class:`RefundResult` of exactly the amount asked for."""
    if not isinstance(result, RefundResult):
        return f"refund returned a {type(result).__name__}, not a RefundResult"
    if not isinstance(result.reference, str) or not result.reference.strip():
        return "refund returned no reference"
    if not _is_money(result.amount):
        return f"refund returned an amount that is not a Decimal ({result.amount!r})"
    if "amount" in call and result.amount != call["amount"]:
        return f"refund returned {result.amount}, not the {call['amount']} asked for"
    return None


class PaymentGateway(Plugin):
    """A payment gateway plugin kind.

    Every money-moving method receives ``key``, the server's own idempotency
    key, unique per attempt. A gateway MUST treat a repeated call with the same
    key as the same request: never charge twice, answer with the first result.
    Amounts are ``Decimal`` in the currency's major unit, already quantized.

    Deadlines (:attr:`max_call_seconds`): charge 30 s, refund 30 s, lookup
    15 s, validate_token 10 s. A charge or refund past it is left pending and
    reconciled with :meth:`lookup`, as after :class:`GatewayTimeout`.
    Results are checked (:func:`check_charge`, :func:`check_lookup`,
    :func:`check_refund`): a capture of another amount than asked for is
    refused and the charge stays pending for reconciliation.
    """

    max_call_seconds: ClassVar[Mapping[str, float]] = {
        "charge": 30.0,
        "refund": 30.0,
        "lookup": 15.0,
        "validate_token": 10.0,
    }
    result_rules: ClassVar[Mapping[str, ResultRule]] = {
        "charge": check_charge,
        "lookup": check_lookup,
        "refund": check_refund,
    }
    #: How many seconds after a charge call was *sent* a ``not_found`` from
    #: :meth:`lookup` can be trusted (an int, 0 to :data:`MAX_LOOKUP_SETTLES`).
    #: A gateway whose lookup is eventually consistent (a search index that
    #: lags writes) sets this; until then a ``not_found`` means "not yet
    #: known": the server keeps the charge pending and asks again later,
    #: instead of taking it for a key the gateway never saw and charging again
    #: with a new key (a double charge). 0 (the default): the lookup is
    #: consistent, ``not_found`` is final as soon as the call was made.
    lookup_settles_seconds: ClassVar[int] = 0

    @abc.abstractmethod
    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        """Required. Charge ``amount`` to the stored-method ``token``.

        Returns a captured :class:`ChargeResult`. Raises :class:`CardDeclined`
        (or :class:`AuthenticationRequired`) when no money moved,
        :class:`GatewayTimeout` or :class:`GatewayError` when the outcome is
        unknown."""

    @abc.abstractmethod
    def lookup(self, *, key: str) -> LookupResult:
        """Required. What became of the charge made with ``key``; status
        ``not_found`` if the gateway never saw it. Raises
        :class:`GatewayTimeout` / :class:`GatewayError` if it cannot tell now.

        ``captured`` and ``declined`` are final whenever they are answered;
        ``not_found`` is final only :attr:`lookup_settles_seconds` after the
        charge call was sent (before that the server asks again later). Never
        answer ``declined`` for a key you have not seen: that is
        ``not_found``."""

    def refund(self, *, key: str, charge_reference: str, amount: Decimal) -> RefundResult:
        """Optional (capability ``refund``; ``partial_refund`` for less than the
        charge). Refund ``amount`` of a captured charge; the same ``key`` twice
        refunds once. Raises :class:`RefundRejected` above what is left,
        :class:`NotSupported` by default."""
        raise NotSupported(f"{self.info.name} does not refund")

    def validate_token(self, token: str) -> None:
        """Optional. Raise :class:`CardDeclined` if ``token`` can never be
        charged (called by PaymentMethodAdd). Default: accept."""
        return None


PaymentGateway.timeout_error = GatewayTimeout
PaymentGateway.failure_error = GatewayError


from pba_server.sdk.net import ConnectionFailed, Net  # noqa: E402 - needs PluginError

Plugin.net = Net()


def version_compatible(target: str) -> bool:
    """True if a plugin targeting SDK ``target`` runs on this SDK."""
    try:
        t_major, t_minor = (int(x) for x in target.split("."))
    except ValueError:
        return False
    major, minor = (int(x) for x in SDK_VERSION.split("."))
    return t_major == major and t_minor <= minor


__all__ = [
    "MAX_LOOKUP_SETTLES",
    "OPERATOR_KINDS",
    "SDK_VERSION",
    "AuthenticationRequired",
    "CardDeclined",
    "ChargeResult",
    "ConfigurationError",
    "ConnectionFailed",
    "GatewayError",
    "GatewayTimeout",
    "LookupResult",
    "Net",
    "NotSupported",
    "PaymentGateway",
    "Plugin",
    "PluginBusy",
    "PluginError",
    "PluginInfo",
    "RefundRejected",
    "RefundResult",
    "ResultRule",
    "SettingField",
    "SettingKind",
    "check_charge",
    "check_lookup",
    "check_refund",
    "version_compatible",
]
