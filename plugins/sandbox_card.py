"""A complete test card gateway. It moves no money; it keeps its own record
of charges and refunds by key, so repeats, refunds and look-ups behave like a
real processor's.

Test tokens (use them as the payment method token):

===========================  ===============================================
``tok_approve``              captured
``tok_insufficient_funds``   declined, code ``insufficient_funds``
``tok_stolen_card``          declined, code ``stolen_card``
``tok_timeout``              captured, but the answer is lost:
                             :class:`GatewayTimeout`; lookup finds it
``tok_3ds``                  :class:`AuthenticationRequired` (3-D Secure)
===========================  ===============================================

Any other token is declined with ``invalid_token``.

Settings: ``api_key`` (secret, must start with ``sk_test_``) and
``state_file``: a JSON file that holds the gateway's state so it outlives the
server process (empty: in memory, per process).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from pba_server.sdk import (
    SDK_VERSION,
    AuthenticationRequired,
    CardDeclined,
    ChargeResult,
    ConfigurationError,
    GatewayTimeout,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    RefundRejected,
    RefundResult,
    SettingField,
)

DECLINES = {"tok_insufficient_funds": "insufficient_funds", "tok_stolen_card": "stolen_card"}
_memory: dict[str, dict[str, Any]] = {"charges": {}, "refunds": {}}
_lock = threading.Lock()


class SandboxCardGateway(PaymentGateway):
    info = PluginInfo(
        name="sandbox_card",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        description="Test card gateway with documented test tokens",
        settings=(
            SettingField("api_key", secret=True, description="sk_test_..."),
            SettingField("state_file", required=False, default="", kind="path"),
        ),
        capabilities=frozenset({"charge", "refund", "partial_refund", "3ds", "lookup"}),
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        if not settings.get("api_key", "").startswith("sk_test_"):
            raise ConfigurationError("api_key must be a sk_test_ key")
        self.state_file = settings.get("state_file") or ""

    @contextmanager
    def _state(self) -> Iterator[dict[str, dict[str, Any]]]:
        with _lock:
            if not self.state_file:
                yield _memory
                return
            path = Path(self.state_file)
            with open(path.with_suffix(".lock"), "a") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                state = (
                    json.loads(path.read_text())
                    if path.exists()
                    else {"charges": {}, "refunds": {}}
                )
                yield state
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, path)

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        with self._state() as st:
            seen = st["charges"].get(key)
            if seen is None:
                if token in DECLINES:
                    seen = {"status": "declined", "code": DECLINES[token]}
                elif token == "tok_3ds":  # noqa: S105 - a test token
                    seen = {"status": "declined", "code": "authentication_required"}
                elif token in ("tok_approve", "tok_timeout"):
                    seen = {
                        "status": "captured",
                        "reference": f"ch_{uuid.uuid4().hex[:16]}",
                        "amount": str(amount),
                        "currency": currency,
                        "refunded": "0",
                    }
                else:
                    seen = {"status": "declined", "code": "invalid_token"}
                st["charges"][key] = seen
        if seen["status"] == "declined":
            if seen["code"] == "authentication_required":
                raise AuthenticationRequired()
            raise CardDeclined(seen["code"], f"card declined: {seen['code']}")
        if token == "tok_timeout":  # noqa: S105 - a test token
            raise GatewayTimeout("sandbox: no answer in time")
        return ChargeResult(seen["reference"], Decimal(seen["amount"]), seen["currency"])

    def lookup(self, *, key: str) -> LookupResult:
        with self._state() as st:
            seen = st["charges"].get(key)
        if seen is None:
            return LookupResult(status="not_found")
        if seen["status"] == "declined":
            return LookupResult(status="declined", decline_code=seen["code"])
        return LookupResult(
            status="captured",
            reference=seen["reference"],
            amount=Decimal(seen["amount"]),
            currency=seen["currency"],
        )

    def refund(self, *, key: str, charge_reference: str, amount: Decimal) -> RefundResult:
        with self._state() as st:
            done = st["refunds"].get(key)
            if done is not None:
                return RefundResult(done["reference"], Decimal(done["amount"]))
            charge = next(
                (c for c in st["charges"].values() if c.get("reference") == charge_reference),
                None,
            )
            if charge is None:
                raise RefundRejected("no_such_charge", f"no charge {charge_reference}")
            left = Decimal(charge["amount"]) - Decimal(charge["refunded"])
            if amount <= 0 or amount > left:
                raise RefundRejected("amount_too_large", f"only {left} left to refund")
            charge["refunded"] = str(Decimal(charge["refunded"]) + amount)
            done = {"reference": f"re_{uuid.uuid4().hex[:16]}", "amount": str(amount)}
            st["refunds"][key] = done
        return RefundResult(done["reference"], Decimal(done["amount"]))


PLUGIN = SandboxCardGateway
