"""A charge cut off during the gateway call, at a gateway whose lookup lags
(Stripe's search): recovery does not take the lag's ``not_found`` for "never
seen" before ``lookup_settles_seconds``, so the order never charges again with
a new key while the first charge may have moved money."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from pba_server.core.db import UnitOfWork
from pba_server.orders import placing, queries
from pba_server.orders.types import OrderLineInput
from pba_server.payments.models import GatewayPayment
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.reconcile import lookup_settles, reconcile
from pba_server.sdk import (
    MAX_LOOKUP_SETTLES,
    SDK_VERSION,
    ChargeResult,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    loader,
)
from tests.catalog_support import service_ctx
from tests.orders_support import FakeProvisioner, buyer, card, plan, run, use_fake


class ProcessDied(BaseException):
    """Stands in for kill -9: nothing after it in the process runs."""


class LaggingGateway(PaymentGateway):
    """Captures at once; its lookup sees a capture only LAG seconds later."""

    info = PluginInfo(name="lagging_gw", version="1.0", sdk_version=SDK_VERSION)
    lookup_settles_seconds = 90
    LAG = timedelta(seconds=60)
    captures: ClassVar[dict[str, datetime]] = {}
    die: ClassVar[str | None] = None  # "before_capture" | "after_capture"

    def charge(self, *, key: str, amount: Decimal, currency: str, token: str, description: str):  # type: ignore[no-untyped-def]
        if self.die == "before_capture":
            raise ProcessDied()
        self.captures[key] = self.now()
        if self.die == "after_capture":
            raise ProcessDied()
        return ChargeResult("ch_" + key, amount, currency)

    def lookup(self, *, key: str) -> LookupResult:
        at = self.captures.get(key)
        if at is None or self.now() < at + self.LAG:
            return LookupResult(status="not_found")
        return LookupResult("captured", "ch_" + key, None, None)


@pytest.fixture
def setup(env: Any, tmp_path: Any, monkeypatch: Any) -> Iterator[dict[str, Any]]:
    # kill -9 is no exception: the plugin-call guard would turn the stand-in
    # ProcessDied into an ordinary failure, so these tests call the plugin
    # unguarded (the guard's own tests are in test_plugin_guard.py)
    from pba_server.sdk import guard

    monkeypatch.setattr(type(guard.runtime()), "wrap", lambda self, obj, base, **kw: obj)
    plugins = loader.plugins()
    plugins["lagging_gw"] = loader.LoadedPlugin("lagging_gw", "test", "ok", cls=LaggingGateway)
    LaggingGateway.captures, LaggingGateway.die = {}, None
    fake = FakeProvisioner()
    old = use_fake(env, fake)
    try:
        with service_ctx(env) as ctx:
            inst = plugin_configure(ctx, plugin="lagging_gw", name="lag").id
        p = plan(env)
        acc = buyer(env)
        card(env, acc, inst)
        yield {"plan": p["plan"], "acc": acc}
    finally:
        use_fake(env, old)
        plugins.pop("lagging_gw", None)
        LaggingGateway.die = None


def _charges(env: Any) -> list[tuple[str, str, str | None]]:
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.scalars(select(GatewayPayment).order_by(GatewayPayment.id)).all()
        return [(g.client_key, g.status, g.decline_code) for g in rows]


def _recover(env: Any) -> str:
    with UnitOfWork(env.app.engine) as uow:
        out = reconcile(uow, env.app.runtime, expired_only=True)
        uow.commit()
    return out


def _place(env: Any, s: dict[str, Any]) -> int:
    with service_ctx(env) as ctx:
        return placing.order_place(
            ctx, account_id=s["acc"], lines=[OrderLineInput(plan_id=s["plan"])]
        ).id


def _status(env: Any, order_id: int) -> tuple[str, str]:
    with service_ctx(env) as ctx:
        o = queries.order_get(ctx, order_id=order_id)
    return o.status, o.current_action


@pytest.mark.parametrize("died", ["after_capture", "before_capture"])
def test_a_charge_cut_off_during_the_call_is_not_charged_again_before_it_settles(env, setup, died):
    t0 = datetime.now(UTC).replace(microsecond=0)
    env.clock.freeze(t0)
    oid = _place(env, setup)
    LaggingGateway.die = died
    with pytest.raises(ProcessDied):
        run(env)
    LaggingGateway.die = None
    key = f"order:{oid}:charge"
    assert _charges(env) == [(key, "pending", None)]
    # the lease ran out; the lookup answers not_found (lagging, or never seen)
    for after in (20, 40, 55):
        env.clock.freeze(t0 + timedelta(seconds=after))
        assert _recover(env) == "1 pending"
        run(env)
        assert _charges(env) == [(key, "pending", None)], after  # no new key
        assert _status(env, oid) == ("running", "charge")
    env.clock.freeze(t0 + timedelta(seconds=95))
    run(env)
    if died == "after_capture":  # the lookup caught up: the one capture is recorded
        assert _charges(env) == [(key, "captured", None)]
    else:  # settled: not_found is final, no money moved; charged again with a new key
        assert _charges(env) == [(key, "declined", "not_found"), (f"{key}:2", "captured", None)]
    assert len(LaggingGateway.captures) == 1  # the money moved once
    assert _status(env, oid) == ("running", "provision")


def test_a_charge_never_sent_is_not_found_at_once(env, setup, monkeypatch):
    """Dying before the call (``sent_at`` never committed): no money moved,
    the order charges again with a new key as soon as the lease runs out,
    without waiting for the gateway's lookup to settle."""
    from pba_server.payments import charges

    def died(code: int) -> None:
        raise ProcessDied()

    t0 = datetime.now(UTC).replace(microsecond=0)
    env.clock.freeze(t0)
    oid = _place(env, setup)
    monkeypatch.setenv(charges.CRASH_BEFORE_HOOK, "1")
    monkeypatch.setattr(charges.os, "_exit", died)
    with pytest.raises(ProcessDied):
        run(env)
    monkeypatch.undo()
    key = f"order:{oid}:charge"
    with UnitOfWork(env.app.engine) as uow:
        g = uow.session.scalars(select(GatewayPayment)).one()
        assert (g.status, g.sent_at) == ("pending", None)
    env.clock.freeze(t0 + timedelta(seconds=16))  # the lease ran out; settle is 90 s
    run(env)
    assert _charges(env) == [(key, "declined", "not_found"), (f"{key}:2", "captured", None)]
    assert len(LaggingGateway.captures) == 1  # only the second key reached the gateway
    assert _status(env, oid) == ("running", "provision")


def test_lookup_settles_is_bounded() -> None:
    class Odd(LaggingGateway):
        pass

    gw = Odd({})
    assert lookup_settles(gw) == timedelta(seconds=90)
    for bad in (-1, "60", 1.5, True, MAX_LOOKUP_SETTLES + 1):
        Odd.lookup_settles_seconds = bad  # type: ignore[assignment]
        assert lookup_settles(gw) == timedelta(seconds=MAX_LOOKUP_SETTLES)
    stripe = loader.plugins()["stripe"].cls
    assert stripe is not None and stripe.lookup_settles_seconds == 120
