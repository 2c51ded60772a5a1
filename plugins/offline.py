"""Offline payments: bank transfer or cheque instructions shown to the
customer; staff record the money when it arrives (PaymentRecord). A charge
through this gateway is never captured online: it is declined with the code
``offline_payment`` and the instructions as the message."""

from __future__ import annotations

from decimal import Decimal

from pba_server.sdk import (
    SDK_VERSION,
    CardDeclined,
    ChargeResult,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    SettingField,
)


class OfflineGateway(PaymentGateway):
    info = PluginInfo(
        name="offline",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        description="Bank transfer / cheque instructions; payments recorded by staff",
        settings=(
            SettingField("instructions", description="Shown to the customer: IBAN, payee..."),
        ),
        capabilities=frozenset({"lookup"}),
    )

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        raise CardDeclined("offline_payment", self.settings.get("instructions", ""))

    def lookup(self, *, key: str) -> LookupResult:
        return LookupResult(status="not_found")


PLUGIN = OfflineGateway
