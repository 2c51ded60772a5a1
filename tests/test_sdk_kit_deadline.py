"""The conformance kits enforce ``max_call_seconds`` by a deadline: a hung
plugin method fails the kit's test when its deadline passes, not when (or
if) the call returns."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import ClassVar

import pytest

from pba_server.sdk import (
    SDK_VERSION,
    ChargeResult,
    LookupResult,
    PaymentGateway,
    PluginInfo,
)
from pba_server.sdk.testing import Deadlined, call_within

RELEASE = threading.Event()


class Stuck(PaymentGateway):
    info = PluginInfo(name="stuck_card", version="1.0", sdk_version=SDK_VERSION)
    max_call_seconds: ClassVar[dict[str, float]] = {"charge": 0.3}

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        RELEASE.wait(30)
        return ChargeResult("ch", amount, currency)

    def lookup(self, *, key: str) -> LookupResult:
        return LookupResult("not_found")


def test_a_hung_call_fails_at_its_deadline() -> None:
    RELEASE.clear()
    try:
        gw = Deadlined(Stuck({}), PaymentGateway)
        started = time.monotonic()
        with pytest.raises(pytest.fail.Exception, match=r"did not answer within 0\.3 s"):
            gw.charge(key="k", amount=Decimal("1"), currency="USD", token="t", description="d")
        assert time.monotonic() - started < 2
        assert gw.lookup(key="k").status == "not_found"
    finally:
        RELEASE.set()


def test_call_within_returns_and_reraises() -> None:
    assert call_within(1, "f", lambda: 7) == 7
    with pytest.raises(ValueError):
        call_within(1, "f", lambda: (_ for _ in ()).throw(ValueError("x")))
