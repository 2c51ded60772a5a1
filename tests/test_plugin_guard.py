"""Plugins cannot stall or fool the server (sdk.guard): deadlines,
circuit breakers, the request-thread budget, result rules, and exception
text that never reaches the tenant."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
import uuid
import xmlrpc.client
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from pba_server.core.logsafe import mask_secrets
from pba_server.payments import charges, methods, plugins
from pba_server.payments.types import SettingValue
from pba_server.sdk import (
    SDK_VERSION,
    CardDeclined,
    ChargeResult,
    GatewayError,
    GatewayTimeout,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    RefundResult,
    SettingField,
    loader,
)
from pba_server.sdk import guard as plugincall
from pba_server.sdk.guard import GuardSettings, PluginRuntime
from pba_server.sdk.provisioning import RetryableFailure
from pba_server.sdk.registrar import (
    CheckResult,
    DomainInfo,
    DomainRegistrar,
    DomainResult,
    RegistrarUnavailable,
)
from tests import domains_support as ds
from tests.billing_support import customer
from tests.catalog_support import service_ctx

LEAKED = "sk_acme_test"


# ---------------------------------------------------------------- misbehaving plugins


class Hung(PaymentGateway):
    """charge blocks until RELEASE is set (or 30 s); everything else answers."""

    info = PluginInfo(
        name="hung_card",
        version="1.0",
        sdk_version=SDK_VERSION,
        settings=(SettingField("api_key", secret=True),),
        capabilities=frozenset({"charge", "refund"}),
    )
    max_call_seconds: ClassVar[dict[str, float]] = {"charge": 0.5}
    RELEASE = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0
    # what charge answers once released: "ok", "double", "dict", "raise"
    behaviour = "hang"

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            if cls.behaviour == "hang":
                cls.RELEASE.wait(30)
            if cls.behaviour == "double":
                return ChargeResult(f"ch_{key}", amount * 2, currency)
            if cls.behaviour == "dict":
                return {"reference": "x", "amount": amount}  # type: ignore[return-value]
            if cls.behaviour == "raise":
                raise RuntimeError(f"upstream refused: api_key={self.settings['api_key']}")
            if cls.behaviour == "decline":
                raise CardDeclined("insufficient_funds")
            return ChargeResult(f"ch_{key}", amount, currency)
        finally:
            with cls.lock:
                cls.running -= 1

    def lookup(self, *, key: str) -> LookupResult:
        return LookupResult("not_found")

    def refund(self, *, key: str, charge_reference: str, amount: Decimal) -> RefundResult:
        return RefundResult("rf", amount)


class Leaky(DomainRegistrar):
    """A registrar that answers nonsense or leaks its key in its exceptions."""

    info = PluginInfo(
        name="leaky_registrar",
        version="1.0",
        sdk_version=SDK_VERSION,
        kind="domain_registrar",
        settings=(SettingField("api_key", secret=True), SettingField("registry", required=False)),
        capabilities=frozenset({"check", "register", "renew", "transfer", "info"}),
    )
    behaviour = "leak"

    def check(self, names: list[str]) -> list[CheckResult]:
        return [CheckResult(n, True) for n in names]

    def register(self, *, key: str, name: str, years: int, contacts: Any, nameservers: Any) -> Any:
        if type(self).behaviour == "no_expiry":
            return DomainResult(name, "active", None)
        raise RuntimeError(f"registry said no (api_key={self.settings['api_key']})")

    def renew(self, *, key: str, name: str, years: int, current_expiry: date) -> DomainResult:
        raise RegistrarUnavailable("down")

    def transfer(self, *, key: str, name: str, auth_code: str, years: int) -> DomainResult:
        raise RegistrarUnavailable("down")

    def domain_info(self, name: str) -> DomainInfo:
        from pba_server.sdk.registrar import ObjectNotFound

        raise ObjectNotFound(name)


@pytest.fixture
def fakes() -> Any:
    plugins = loader.plugins()
    plugins["hung_card"] = loader.LoadedPlugin("hung_card", "test", "ok", cls=Hung)
    plugins["leaky_registrar"] = loader.LoadedPlugin("leaky_registrar", "test", "ok", cls=Leaky)
    Hung.RELEASE.clear()
    Hung.behaviour, Hung.running, Hung.most = "hang", 0, 0
    Leaky.behaviour = "leak"
    yield
    Hung.RELEASE.set()
    plugins.pop("hung_card", None)
    plugins.pop("leaky_registrar", None)


def _guarded(rt: PluginRuntime, obj: Any, base: type, secrets: tuple[str, ...] = ()) -> Any:
    return rt.wrap(
        obj, base, instance_id=7, plugin=obj.info.name, key=(uuid.uuid4().hex,), secrets=secrets
    )


def _hung(**settings: str) -> Hung:
    return loader.instantiate(Hung, {"api_key": LEAKED, **settings}, clock=Hung.clock)  # type: ignore[no-any-return]


def _charge(gw: Any, amount: str = "10.00") -> Any:
    return gw.charge(
        key=uuid.uuid4().hex, amount=Decimal(amount), currency="EUR", token="t", description="d"
    )


# ---------------------------------------------------------------- the guard itself


def test_a_hung_call_ends_at_its_deadline_as_outcome_unknown(fakes, caplog):
    rt = PluginRuntime(GuardSettings(threads_per_instance=2))
    gw = _guarded(rt, _hung(), PaymentGateway)
    assert gw.deadline("charge") == 0.5  # the plugin's own, shorter than the kind's 30 s
    assert gw.deadline("lookup") == PaymentGateway.max_call_seconds["lookup"]
    started = time.monotonic()
    with pytest.raises(GatewayTimeout) as exc:
        _charge(gw)
    took = time.monotonic() - started
    assert 0.45 < took < 2, took
    assert "did not answer in time" in str(exc.value) and "ref " in str(exc.value)
    assert "no answer within 0.5 s" in caplog.text
    # its hung thread is written off: other methods of the instance still answer
    assert gw.lookup(key="k").status == "not_found"


def test_calls_beyond_the_pool_wait_then_are_not_made(fakes):
    rt = PluginRuntime(GuardSettings(threads_per_instance=1, breaker_failures=100))
    gw = _guarded(rt, _hung(), PaymentGateway)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            _charge(gw)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # the call that was taken is inside the plugin (hung) by now or soon: a
    # loaded machine can give up on it before its thread has entered charge
    entered = time.monotonic() + 5
    while Hung.running < 1 and time.monotonic() < entered:
        time.sleep(0.01)
    assert Hung.most == 1  # never more than the pool at once
    assert len(errors) == 3
    kinds = sorted(type(e).__name__ for e in errors)
    # one timed out inside the plugin; the others were never made
    assert kinds.count("GatewayTimeout") >= 1
    assert all(isinstance(e, GatewayError | GatewayTimeout) for e in errors)


def test_the_breaker_opens_fails_fast_and_closes_after_a_good_trial(fakes):
    now = [0.0]
    rt = PluginRuntime(
        GuardSettings(breaker_failures=3, breaker_cooldown=30), monotonic=lambda: now[0]
    )
    Hung.behaviour = "raise"
    gw = _guarded(rt, _hung(), PaymentGateway)
    for _ in range(3):
        with pytest.raises(GatewayError):
            _charge(gw)
    Hung.behaviour = "ok"
    started = time.monotonic()
    with pytest.raises(GatewayError) as exc:
        _charge(gw)
    assert time.monotonic() - started < 0.1
    assert "circuit open" in str(exc.value)
    # a decline is an answer: it does not count as a failure
    now[0] = 31.0
    assert _charge(gw).amount == Decimal("10.00")  # the trial call closes it
    Hung.behaviour = "decline"
    for _ in range(5):
        with pytest.raises(CardDeclined):
            _charge(gw)
    Hung.behaviour = "ok"
    assert _charge(gw).reference


def test_request_threads_waiting_on_plugins_are_bounded(fakes):
    rt = PluginRuntime(GuardSettings(threads_per_instance=8, wait_slots=2))
    gw = _guarded(rt, _hung(), PaymentGateway)
    Hung.behaviour = "hang"
    results: list[str] = []

    def one() -> None:
        started = time.monotonic()
        try:
            _charge(gw)
        except GatewayTimeout:
            results.append("timeout")
        except GatewayError as exc:
            assert "busy" in str(exc)
            results.append(f"refused in {time.monotonic() - started:.3f}")

    threads = [
        threading.Thread(target=one, name=f"PoolThread-{plugincall.REQUEST_POOL_NAME}-{i}")
        for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results.count("timeout") == 2
    refused = [float(r.split()[-1]) for r in results if r.startswith("refused")]
    assert len(refused) == 4 and max(refused) < 0.1
    assert rt.waiting() == 0
    # a job thread (not a request thread) is not bounded by the request budget
    Hung.behaviour = "ok"
    assert _charge(gw).reference


def test_results_are_checked_against_the_sdk_types(fakes, caplog):
    rt = PluginRuntime()
    gw = _guarded(rt, _hung(), PaymentGateway)
    Hung.behaviour = "double"
    with pytest.raises(GatewayError) as exc:
        _charge(gw, "12.34")
    assert "captured 24.68, not the 12.34 asked for" in caplog.text
    assert "hung_card (instance 7)" in caplog.text and "ref " in str(exc.value)
    Hung.behaviour = "dict"
    with pytest.raises(GatewayError) as exc:
        _charge(gw)
    assert "returned a dict, not a ChargeResult" in str(exc.value)
    reg = _guarded(rt, Leaky({"api_key": LEAKED}), DomainRegistrar)
    Leaky.behaviour = "no_expiry"
    with pytest.raises(RegistrarUnavailable) as rexc:
        reg.register(key="k", name="a.test", years=1, contacts={}, nameservers=[])
    assert "'active' without an expiry date" in str(rexc.value)


def test_exception_text_is_generic_for_the_caller_and_masked_in_the_log(fakes, caplog):
    caplog.set_level(logging.WARNING, logger="pba.plugins.calls")
    rt = PluginRuntime()
    Hung.behaviour = "raise"
    gw = _guarded(rt, _hung(), PaymentGateway, secrets=(LEAKED,))
    with pytest.raises(GatewayError) as exc:
        _charge(gw)
    text = str(exc.value)
    # the tenant's text: generic, with a reference; no secret, no exception class
    assert LEAKED not in text and "RuntimeError" not in text
    ref = text.split("ref ")[1][:12]
    (record,) = [r for r in caplog.records if ref in r.getMessage()]
    logged = record.getMessage() + (record.exc_text or "")
    assert "hung_card (instance 7)" in logged and "upstream refused" in logged
    assert "Traceback" in (record.exc_text or "") and "in charge" in (record.exc_text or "")
    assert LEAKED not in caplog.text


def test_mask_secrets():
    assert mask_secrets("failed: api_key=sk_x1 password: hunter22 ok") == (
        "failed: api_key=*** password: *** ok"
    )
    assert mask_secrets("token sk_live_ABCdef123 and zz-secret-zz", ["zz-secret-zz"]) == (
        "token *** and ***"
    )


# ---------------------------------------------------------------- through the features


def test_a_registrar_exception_never_reaches_the_tenant(env, fakes, caplog):
    caplog.set_level(logging.INFO)
    with service_ctx(env) as ctx:
        inst = plugins.plugin_configure(
            ctx,
            plugin="leaky_registrar",
            name="leaky",
            settings=[SettingValue("api_key", LEAKED)],
        )
    t = ds.tld(env, inst.id, "leak")
    acc = ds.customer(env)
    svc = ds.service(env, acc, ds.template_of(env, t.plan_id), domain="shop.leak")
    result = ds.run(env, svc, "create")
    assert isinstance(result, RetryableFailure)
    d = ds.domain_row(env, "shop.leak")
    assert d.last_error and LEAKED not in d.last_error and "ref " in d.last_error
    ref = d.last_error.split("ref ")[1][:12]
    assert any(ref in r.getMessage() for r in caplog.records)  # the operator finds the detail
    assert LEAKED not in caplog.text
    # a registrar answering "active" without an expiry: refused, retried
    Leaky.behaviour = "no_expiry"
    assert isinstance(ds.run(env, svc, "create"), RetryableFailure)
    d = ds.domain_row(env, "shop.leak")
    assert d.status == "pending" and d.expires_on is None
    assert "without an expiry date" in (d.last_error or "")


def _gateway_setup(env: Any) -> tuple[int, int]:
    with service_ctx(env) as ctx:
        inst = plugins.plugin_configure(
            ctx, plugin="hung_card", name="hung", settings=[SettingValue("api_key", LEAKED)]
        )
    acc = customer(env, "Payer")
    Hung.behaviour = "ok"
    with service_ctx(env) as ctx:
        m = methods.payment_method_add(
            ctx,
            account_id=acc,
            token="tok",
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="P",
            instance_id=inst.id,
        )
    return inst.id, m.id


def test_an_over_capture_is_refused_and_the_charge_stays_pending(env, fakes, caplog):
    _inst, method = _gateway_setup(env)
    Hung.behaviour = "double"
    with service_ctx(env) as ctx:
        info = charges.payment_charge(
            ctx, payment_method_id=method, idempotency_key="k1", amount=Decimal("12.34")
        )
    assert info.status == "pending"  # nothing booked; reconciliation asks the gateway
    with service_ctx(env) as ctx:
        assert charges.payment_charge_get(ctx, charge_id=info.id).payment_id is None
    # a dict instead of a ChargeResult: the same, not Server.Internal
    Hung.behaviour = "dict"
    with service_ctx(env) as ctx:
        info = charges.payment_charge(
            ctx, payment_method_id=method, idempotency_key="k2", amount=Decimal("5.00")
        )
    assert info.status == "pending"
    # an exception with the key in it: pending, and the key is nowhere
    Hung.behaviour = "raise"
    with service_ctx(env) as ctx:
        info = charges.payment_charge(
            ctx, payment_method_id=method, idempotency_key="k3", amount=Decimal("5.00")
        )
    assert info.status == "pending" and LEAKED not in repr(info)
    assert LEAKED not in caplog.text and "RuntimeError" in caplog.text


def _timed(fn: Any) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _figures(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms"


def test_fifty_hung_charges_leave_the_server_answering(env, server, fakes):
    """50 charges hung in one gateway, sent at once over XML-RPC: WhoAmI and
    /health keep answering while they hang (the figures are printed)."""
    if env.backend == "sqlite":
        pytest.skip("50 concurrent writers: PostgreSQL only")
    _inst, method = _gateway_setup(env)
    Hung.behaviour = "hang"
    Hung.max_call_seconds = {"charge": 8.0}
    base = server.removeprefix("http://")
    url = f"http://admin:{env.admin_password}@{base}/xmlrpc"
    answers: list[str] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
            try:
                got = proxy.PaymentCharge(
                    {"payment_method_id": method, "idempotency_key": f"h{i}", "amount": "1.00"}
                )
                status = got["status"]
            except xmlrpc.client.Fault as exc:
                status = exc.faultString.split(":")[0]
        with lock:
            answers.append(status)

    def health() -> None:
        with urllib.request.urlopen(f"{server}/health", timeout=10) as r:
            r.read()

    def measure(who: Any) -> tuple[list[float], list[float]]:
        return [_timed(who.WhoAmI) for _ in range(10)], [_timed(health) for _ in range(10)]

    with xmlrpc.client.ServerProxy(url, allow_none=True) as who:
        assert who.WhoAmI()["login"] == "admin"
        idle_who, idle_health = measure(who)
        threads = [threading.Thread(target=charge, args=(i,), daemon=True) for i in range(50)]
        try:
            for t in threads:
                t.start()
            time.sleep(0.2)  # the flood is in
            flood_who, flood_health = measure(who)
            deadline = time.monotonic() + 5
            while len(answers) < 50 - env.app.settings.plugin_threads:
                assert time.monotonic() < deadline, f"only {len(answers)} answered"
                time.sleep(0.02)
            hung_now, waiting = Hung.running, plugincall.runtime().waiting()
            hung_who, hung_health = measure(who)
            print(
                f"\n50 hung charges ({env.app.settings.threads} request threads): "
                f"{hung_now} hang in the plugin, {waiting} request threads wait on it, "
                f"{len(answers)} answered at once.\n"
                f"  idle:          WhoAmI {_figures(idle_who)}; /health {_figures(idle_health)}\n"
                f"  during flood:  WhoAmI {_figures(flood_who)}; /health {_figures(flood_health)}\n"
                f"  while hung:    WhoAmI {_figures(hung_who)}; /health {_figures(hung_health)}"
            )
            assert max(hung_who) < 1.0 and max(hung_health) < 1.0
            assert max(flood_who) < 5.0 and max(flood_health) < 5.0
            assert 1 <= hung_now <= env.app.settings.plugin_threads
            assert waiting == hung_now
        finally:
            Hung.RELEASE.set()
            Hung.max_call_seconds = {"charge": 0.5}
        for t in threads:
            t.join(30)
    # the refused ones were never sent: Server.Busy (retryable), no charge left
    # behind; the hung ones, released, captured (or pending, if past their deadline)
    assert len(answers) == 50 and set(answers) <= {"Server.Busy", "pending", "captured"}, answers
    assert answers.count("Server.Busy") >= 50 - env.app.settings.plugin_threads
    from sqlalchemy import func, select

    from pba_server.core.db import UnitOfWork
    from pba_server.payments.models import GatewayPayment

    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.scalar(select(func.count()).select_from(GatewayPayment))
    assert rows == 50 - answers.count("Server.Busy")
