"""Conformance kits for payment gateway and domain registrar plugins
(:class:`GatewayContract`, :class:`RegistrarContract`).

Gateways:

Point it at your plugin in your own test suite::

    from pba_server.sdk.testing import GatewayContract
    from my_plugin import PLUGIN

    class TestMyGateway(GatewayContract):
        plugin = PLUGIN
        settings = {"api_key": "sk_test_x"}
        approve_token = "tok_ok"            # None if the gateway never captures online
        decline_tokens = {"tok_nsf": "insufficient_funds"}
        timeout_token = "tok_slow"           # None to skip the timeout checks

Each test makes a fresh instance with :meth:`make_gateway` (override it to
start a fake server, say). Keys are unique per test.

Every call the kits make is held to a deadline, as the server holds it: the
kind's ``max_call_seconds`` for the method (or the plugin's own shorter one,
or the kit's ``max_call_seconds`` if you set it). A call still running at
its deadline fails the test at the deadline, it is not waited for. Every
result is checked against the kind's result rules (``result_rules``), as the
server checks it.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from pba_server.sdk import (
    CardDeclined,
    ChargeResult,
    GatewayTimeout,
    LookupResult,
    NotSupported,
    PaymentGateway,
    PluginError,
    PluginInfo,
    RefundRejected,
    version_compatible,
)
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
)

REGISTRAR_CAPABILITIES = (
    "check",
    "register",
    "renew",
    "transfer",
    "info",
    "set_nameservers",
    "set_contacts",
    "balance",
)

AMOUNT = Decimal("12.34")
CURRENCY = "USD"


def call_within(seconds: float, method: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on its own thread; the test fails at
    ``seconds`` if it has not answered (the thread is left behind, a daemon)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    t = threading.Thread(target=run, name=f"conformance-{method}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"{method} did not answer within {seconds:g} s (max_call_seconds)")
    if "error" in box:
        raise box["error"]
    return box.get("result")


class Deadlined:
    """A plugin object whose documented methods (the kind's
    ``max_call_seconds``) are called with :func:`call_within` and have their
    results checked against the kind's ``result_rules``."""

    def __init__(self, obj: Any, base: type, override: float | None = None) -> None:
        self._obj = obj
        self._base = base
        own = getattr(type(obj), "max_call_seconds", {})
        self._limits = {
            m: override if override is not None else min(limit, own.get(m, limit))
            for m, limit in base.max_call_seconds.items()  # type: ignore[attr-defined]
        }

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if name not in self._limits or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = call_within(self._limits[name], name, attr, *args, **kwargs)
            rule = self._base.result_rules.get(name)  # type: ignore[attr-defined]
            if rule is not None:
                from pba_server.sdk.guard import call_arguments

                broken = rule(result, call_arguments(self._base, name, args, kwargs))
                assert broken is None, f"{name}: {broken}"
            return result

        return call


class GatewayContract:
    plugin: ClassVar[type[PaymentGateway]]
    settings: ClassVar[dict[str, str]] = {}
    approve_token: ClassVar[str | None] = None
    decline_tokens: ClassVar[dict[str, str]] = {}
    timeout_token: ClassVar[str | None] = None
    # None: each method's deadline is the kind's (or the plugin's shorter one)
    max_call_seconds: ClassVar[float | None] = None

    def make_gateway(self) -> PaymentGateway:
        return self.plugin(dict(self.settings))

    def gateway(self) -> Any:
        """:meth:`make_gateway`, its calls held to their deadlines and rules."""
        return Deadlined(self.make_gateway(), PaymentGateway, self.max_call_seconds)

    @staticmethod
    def key() -> str:
        return f"conformance-{uuid.uuid4().hex}"

    def _charge(self, gw: Any, key: str, token: str, amount: Decimal = AMOUNT) -> Any:
        return gw.charge(
            key=key, amount=amount, currency=CURRENCY, token=token, description="conformance"
        )

    # ------------------------------------------------------------ metadata

    def test_info(self) -> None:
        info = self.plugin.info
        assert isinstance(info, PluginInfo)
        assert info.name and info.name.replace("_", "").isalnum() and info.name.islower()
        assert version_compatible(info.sdk_version)
        names = [f.name for f in info.settings]
        assert len(names) == len(set(names)), "setting names must be unique"
        assert "refund" in info.capabilities or "partial_refund" not in info.capabilities

    # ------------------------------------------------------------ charges

    def test_charge_is_idempotent_by_key(self) -> None:
        if self.approve_token is None:
            pytest.skip("this gateway captures nothing online")
        gw = self.gateway()
        key = self.key()
        first = self._charge(gw, key, self.approve_token)
        again = self._charge(self.gateway(), key, self.approve_token)
        assert isinstance(first, ChargeResult) and first.status == "captured"
        assert first.amount == AMOUNT and first.currency == CURRENCY
        assert again.reference == first.reference, "the same key charged twice"
        found = gw.lookup(key=key)
        assert isinstance(found, LookupResult)
        assert (found.status, found.reference, found.amount) == (
            "captured",
            first.reference,
            AMOUNT,
        )

    def test_lookup_of_unknown_key(self) -> None:
        assert self.gateway().lookup(key=self.key()).status == "not_found"

    def test_declines_map_to_card_declined(self) -> None:
        if not self.decline_tokens:
            pytest.skip("no declining test token")
        gw = self.gateway()
        for token, code in self.decline_tokens.items():
            key = self.key()
            with pytest.raises(CardDeclined) as exc:
                self._charge(gw, key, token)
            assert exc.value.code == code
            with pytest.raises(CardDeclined):  # a repeat answers the same
                self._charge(gw, key, token)
            assert gw.lookup(key=key).status in ("declined", "not_found")

    def test_errors_are_sdk_exceptions(self) -> None:
        gw = self.gateway()
        try:
            self._charge(gw, self.key(), "tok_certainly_not_valid_" + uuid.uuid4().hex)
        except PluginError:
            pass
        except Exception as exc:  # pragma: no cover - the failure path
            pytest.fail(f"charge raised {type(exc).__name__}, not an SDK exception")
        else:
            pytest.fail("an invalid token was charged")

    def test_timeout_is_reported_and_looked_up(self) -> None:
        if self.timeout_token is None:
            pytest.skip("no timeout test token")
        gw = self.gateway()
        key = self.key()
        with pytest.raises(GatewayTimeout):
            self._charge(gw, key, self.timeout_token)
        # the outcome is unknown to the caller; the gateway must be able to tell
        assert gw.lookup(key=key).status in ("captured", "declined", "not_found")

    # ------------------------------------------------------------ refunds

    def test_refund_never_above_captured(self) -> None:
        if self.approve_token is None or "refund" not in self.plugin.info.capabilities:
            pytest.skip("no refunds")
        gw = self.gateway()
        charge = self._charge(gw, self.key(), self.approve_token)
        with pytest.raises(RefundRejected):
            gw.refund(key=self.key(), charge_reference=charge.reference, amount=AMOUNT + 1)
        if "partial_refund" in self.plugin.info.capabilities:
            key = self.key()
            part = gw.refund(key=key, charge_reference=charge.reference, amount=Decimal("2.00"))
            same = gw.refund(key=key, charge_reference=charge.reference, amount=Decimal("2.00"))
            assert same.reference == part.reference, "the same refund key refunded twice"
            with pytest.raises(RefundRejected):
                gw.refund(
                    key=self.key(), charge_reference=charge.reference, amount=AMOUNT - 1
                )  # 10.34 + 2.00 > 12.34
            rest = gw.refund(key=self.key(), charge_reference=charge.reference, amount=AMOUNT - 2)
            assert rest.amount == AMOUNT - 2
        else:
            gw.refund(key=self.key(), charge_reference=charge.reference, amount=AMOUNT)
        with pytest.raises(RefundRejected):
            gw.refund(key=self.key(), charge_reference=charge.reference, amount=Decimal("0.01"))

    def test_full_refund_is_idempotent_by_key(self) -> None:
        if self.approve_token is None or "refund" not in self.plugin.info.capabilities:
            pytest.skip("no refunds")
        gw = self.gateway()
        charge = self._charge(gw, self.key(), self.approve_token)
        key = self.key()
        first = gw.refund(key=key, charge_reference=charge.reference, amount=AMOUNT)
        again = self.gateway().refund(key=key, charge_reference=charge.reference, amount=AMOUNT)
        assert again.reference == first.reference, "the same full refund key refunded twice"
        with pytest.raises(RefundRejected):  # nothing is left
            gw.refund(key=self.key(), charge_reference=charge.reference, amount=AMOUNT)

    def test_validate_token(self) -> None:
        gw = self.gateway()
        if self.approve_token is not None:
            gw.validate_token(self.approve_token)  # a good token is accepted
        try:
            gw.validate_token("tok_certainly_not_valid_" + uuid.uuid4().hex)
        except CardDeclined:
            pass  # refusing a token that can never be charged is right; accepting it too
        except PluginError as exc:
            pytest.fail(f"validate_token raised {type(exc).__name__}, not CardDeclined")


# ---------------------------------------------------------------- registrars


class RegistrarContract:
    """Conformance kit for domain registrar plugins::

        from pba_server.sdk.testing import RegistrarContract

        class TestMyRegistrar(RegistrarContract):
            plugin = PLUGIN
            settings = {"host": "...", ...}
            tld = "example"                 # names are made under it
            taken_name = "taken.example"    # registered by someone else
            transfer_name = "move.example"  # someone else's; None: skip transfers
            transfer_auth = "right-code"

    Override :meth:`make_registrar` to start a fake registry first. Names are
    fresh per test (``conformance-<random>.<tld>``).
    """

    plugin: ClassVar[type[DomainRegistrar]]
    settings: ClassVar[dict[str, str]] = {}
    tld: ClassVar[str] = "example"
    taken_name: ClassVar[str | None] = None
    transfer_name: ClassVar[str | None] = None
    transfer_auth: ClassVar[str] = ""
    nameservers: ClassVar[tuple[str, ...]] = ("ns1.conformance.example", "ns2.conformance.example")
    # None: each method's deadline is the kind's (or the plugin's shorter one)
    max_call_seconds: ClassVar[float | None] = None

    def make_registrar(self) -> DomainRegistrar:
        return self.plugin(dict(self.settings))

    def registrar(self) -> Any:
        """:meth:`make_registrar`, its calls held to their deadlines and rules."""
        return Deadlined(self.make_registrar(), DomainRegistrar, self.max_call_seconds)

    def fresh_name(self) -> str:
        return f"conformance-{uuid.uuid4().hex[:12]}.{self.tld}"

    @staticmethod
    def key() -> str:
        return f"conformance-{uuid.uuid4().hex}"

    @staticmethod
    def contacts() -> dict[str, Contact]:
        c = Contact(
            name="Conformance Tester",
            email="tester@example.com",
            phone="+1.5555550100",
            street="1 Test Street",
            city="Testville",
            postal_code="12345",
            country="US",
        )
        return {"registrant": c, "admin": c, "tech": c}

    def _register(self, reg: Any, key: str, name: str) -> DomainResult:
        result: DomainResult = reg.register(
            key=key, name=name, years=1, contacts=self.contacts(), nameservers=[]
        )
        return result

    def test_info(self) -> None:
        info = self.plugin.info
        assert isinstance(info, PluginInfo) and info.kind == "domain_registrar"
        assert version_compatible(info.sdk_version)
        assert info.capabilities <= set(REGISTRAR_CAPABILITIES), info.capabilities
        names = [f.name for f in info.settings]
        assert len(names) == len(set(names)), "setting names must be unique"

    def test_check_answers_every_name_in_order(self) -> None:
        names = [self.fresh_name(), self.fresh_name()]
        if self.taken_name:
            names.append(self.taken_name)
        results = self.registrar().check(names)
        assert [r.name for r in results] == names
        assert all(isinstance(r, CheckResult) for r in results)
        assert results[0].available and results[1].available
        if self.taken_name:
            assert not results[2].available and results[2].reason

    def test_register_is_idempotent_by_key(self) -> None:
        name, key = self.fresh_name(), self.key()
        first = self._register(self.registrar(), key, name)
        assert isinstance(first, DomainResult) and first.name == name
        again = self._register(self.registrar(), key, name)
        assert again.status == first.status and again.expires_on == first.expires_on
        with pytest.raises(ObjectExists):  # another request for the same name
            self._register(self.registrar(), self.key(), name)
        info = self.registrar().domain_info(name)
        assert isinstance(info, DomainInfo) and info.expires_on == first.expires_on

    def test_taken_name_is_object_exists(self) -> None:
        if not self.taken_name:
            pytest.skip("no taken name")
        with pytest.raises(ObjectExists):
            self._register(self.registrar(), self.key(), self.taken_name)

    def test_renew_adds_years(self) -> None:
        name = self.fresh_name()
        first = self._register(self.registrar(), self.key(), name)
        assert first.expires_on is not None
        renewed = self.registrar().renew(
            key=self.key(), name=name, years=1, current_expiry=first.expires_on
        )
        assert renewed.expires_on is not None and renewed.expires_on > first.expires_on

    def test_transfer_with_a_wrong_auth_code_is_an_authorization_error(self) -> None:
        if not self.transfer_name:
            pytest.skip("no transfer test name")
        with pytest.raises(AuthorizationError):
            self.registrar().transfer(
                key=self.key(), name=self.transfer_name, auth_code="wrong", years=1
            )

    def test_renewal_repeated_renews_once(self) -> None:
        reg, name = self.registrar(), self.fresh_name()
        first = self._register(reg, self.key(), name)
        assert first.expires_on is not None
        key = self.key()
        renewed = reg.renew(key=key, name=name, years=1, current_expiry=first.expires_on)
        # a repeat (same key, the old expiry): answered with the current state,
        # or refused by the registry for the expiry that no longer matches
        try:
            again = self.registrar().renew(
                key=key, name=name, years=1, current_expiry=first.expires_on
            )
        except RegistrarError:
            pass
        else:
            assert again.expires_on == renewed.expires_on, "the same renewal key renewed twice"
        # under another key: the same, never renewed again
        try:
            stale = reg.renew(key=self.key(), name=name, years=1, current_expiry=first.expires_on)
        except RegistrarError:
            pass
        else:
            assert stale.expires_on == renewed.expires_on, "a stale renewal added years"
        assert reg.domain_info(name).expires_on == renewed.expires_on
        assert renewed.expires_on is not None
        later = reg.renew(key=self.key(), name=name, years=1, current_expiry=renewed.expires_on)
        assert later.expires_on is not None and later.expires_on > renewed.expires_on
        assert later.expires_on - renewed.expires_on >= timedelta(days=365)

    def test_transfer_with_the_auth_code(self) -> None:
        if not self.transfer_name or not self.transfer_auth:
            pytest.skip("no transfer test name and auth code")
        result = self.registrar().transfer(
            key=self.key(), name=self.transfer_name, auth_code=self.transfer_auth, years=1
        )
        assert result.status in ("pending", "active")

    def test_set_nameservers(self) -> None:
        reg, name = self.registrar(), self.fresh_name()
        self._register(reg, self.key(), name)
        if "set_nameservers" not in self.plugin.info.capabilities:
            with pytest.raises(NotSupported):
                reg.set_nameservers(key=self.key(), name=name, nameservers=list(self.nameservers))
            return
        info = reg.set_nameservers(key=self.key(), name=name, nameservers=list(self.nameservers))
        assert {h.lower() for h in info.nameservers} == {h.lower() for h in self.nameservers}
        assert {h.lower() for h in reg.domain_info(name).nameservers} == {
            h.lower() for h in self.nameservers
        }

    def test_set_contacts(self) -> None:
        reg, name = self.registrar(), self.fresh_name()
        self._register(reg, self.key(), name)
        admin = Contact(name="Other Admin", email="other@example.com", country="US")
        if "set_contacts" not in self.plugin.info.capabilities:
            with pytest.raises(NotSupported):
                reg.set_contacts(key=self.key(), name=name, contacts={"admin": admin})
            return
        info = reg.set_contacts(key=self.key(), name=name, contacts={"admin": admin})
        assert isinstance(info, DomainInfo)

    def test_unknown_domain_info_is_not_found(self) -> None:
        with pytest.raises(ObjectNotFound):
            self.registrar().domain_info(self.fresh_name())

    def test_balance_if_declared(self) -> None:
        reg = self.registrar()
        if "balance" not in self.plugin.info.capabilities:
            with pytest.raises(NotSupported):
                reg.get_balance()
            return
        b = reg.get_balance()
        assert isinstance(b, Balance) and isinstance(b.amount, Decimal) and len(b.currency) == 3


class ChannelContract:
    """Conformance kit for notification channel plugins::

        from pba_server.sdk.testing import ChannelContract

        class TestMyChannel(ChannelContract):
            plugin = PLUGIN
            settings = {"api_key": "test"}
            address = "+15550100"              # a test address that accepts messages
            invalid_address = "not-a-number"   # None to skip the final-failure check

    Override :meth:`make_channel` to start a fake service first, and
    :meth:`sent_count` to tell how many messages reached ``address`` (default:
    not checked).
    """

    plugin: ClassVar[type[Any]]
    settings: ClassVar[dict[str, str]] = {}
    address: ClassVar[str] = ""
    invalid_address: ClassVar[str | None] = None

    # None: the kind's deadline (or the plugin's shorter one)
    max_call_seconds: ClassVar[float | None] = None

    def make_channel(self) -> Any:
        return self.plugin(dict(self.settings))

    def channel(self) -> Any:
        """:meth:`make_channel`, its calls held to their deadlines and rules."""
        from pba_server.sdk.notify import NotificationChannel

        return Deadlined(self.make_channel(), NotificationChannel, self.max_call_seconds)

    def sent_count(self, key: str) -> int | None:
        return None

    def _send(self, ch: Any, key: str, address: str) -> Any:
        from pba_server.sdk.notify import Recipient

        return ch.send(
            key=key,
            recipient=Recipient(address=address, name="Conformance"),
            subject="Conformance",
            text="A test message.",
            html="<p>A test message.</p>",
            metadata={"event_type": "account.created", "event_id": "1"},
        )

    def test_info(self) -> None:
        from pba_server.sdk.notify import NotificationChannel

        info = self.plugin.info
        assert isinstance(info, PluginInfo) and info.kind == "notification_channel"
        assert issubclass(self.plugin, NotificationChannel)
        assert info.name and info.name.replace("_", "").isalnum() and info.name.islower()
        assert version_compatible(info.sdk_version)

    def test_send_is_idempotent_by_key(self) -> None:
        from pba_server.sdk.notify import SendResult

        key = f"conformance-{uuid.uuid4().hex}"
        first = self._send(self.channel(), key, self.address)
        again = self._send(self.channel(), key, self.address)
        assert isinstance(first, SendResult) and first.reference
        assert again.reference == first.reference, "the same key sent twice"
        assert self.sent_count(key) in (None, 1)

    def test_invalid_address_is_final(self) -> None:
        from pba_server.sdk.notify import FinalSendError

        if self.invalid_address is None:
            pytest.skip("no invalid test address")
        with pytest.raises(FinalSendError):
            self._send(self.channel(), f"conformance-{uuid.uuid4().hex}", self.invalid_address)
