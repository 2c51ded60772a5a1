"""Wire types of the payments operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pba_server.core.money import Money

PluginStatus = Literal["ok", "broken"]
InstanceStatus = Literal["active", "disabled"]
GatewayPaymentStatus = Literal["pending", "captured", "declined", "error"]
RefundStatus = Literal["pending", "refunded", "rejected"]


@dataclass
class PluginSettingInfo:
    name: str
    type: str
    required: bool
    secret: bool
    default: str | None
    description: str
    # plain | secret | url | host | port | path | program; the last five are
    # operator settings (only the provider's administrators set them)
    kind: str = "plain"


@dataclass
class PluginInfoItem:
    name: str
    status: PluginStatus
    reason: str
    source: str
    version: str | None
    sdk_version: str | None
    description: str
    capabilities: list[str]
    settings: list[PluginSettingInfo]
    operator_only: bool = False  # only the provider's administrators configure it


@dataclass
class PluginPage:
    items: list[PluginInfoItem]
    total: int
    offset: int
    limit: int


@dataclass
class SettingValue:
    name: str
    value: str


@dataclass
class PluginInstanceInfo:
    id: int
    account_id: int
    plugin: str
    name: str
    status: InstanceStatus
    settings: list[SettingValue]  # the non-secret ones only
    secret_settings_set: list[str]  # names of the secret ones that have a value
    created_at: datetime
    updated_at: datetime


@dataclass
class PluginInstancePage:
    items: list[PluginInstanceInfo]
    total: int
    offset: int
    limit: int


@dataclass
class PaymentMethodInfo:
    id: int
    account_id: int
    instance_id: int
    brand: str
    last4: str
    expiry_month: int
    expiry_year: int
    holder: str
    is_default: bool
    created_at: datetime


@dataclass
class PaymentMethodPage:
    items: list[PaymentMethodInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ChargeInfo:
    id: int
    account_id: int
    invoice_id: int | None
    payment_method_id: int
    currency: str
    amount: Money
    status: GatewayPaymentStatus
    decline_code: str | None
    message: str | None
    gateway_reference: str | None
    payment_id: int | None
    refunded: Money
    created_at: datetime


@dataclass
class RefundInfo:
    id: int
    charge_id: int
    amount: Money
    reason: str
    status: RefundStatus
    decline_code: str | None
    gateway_reference: str | None
    created_at: datetime


@dataclass
class RoutingRuleInput:
    instance_id: int
    brand: str | None = None  # e.g. "visa", "amex"; empty: any brand
    currency: str | None = None  # empty: any currency


@dataclass
class RoutingRuleInfo:
    account_id: int
    position: int
    brand: str | None
    currency: str | None
    instance_id: int


@dataclass
class RoutingRulePage:
    items: list[RoutingRuleInfo]
    total: int
    offset: int
    limit: int


@dataclass
class AutopayInfo:
    account_id: int
    enabled: bool  # issued invoices are charged to the default payment method
    default_payment_method_id: int | None = None  # None: nothing to charge, auto-pay skips
