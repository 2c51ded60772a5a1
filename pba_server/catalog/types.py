"""Values the catalog operations take and return (the wire shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pba_server.core.money import Money

ResourceKind = Literal["allocated", "metered"]
UsageReporting = Literal["per_period", "current_value"]
ServiceType = Literal["hosting", "virtual_server", "domain", "licence", "other"]
ParameterType = Literal["string", "integer", "boolean", "hostname", "domain", "email"]
PeriodUnit = Literal["day", "month", "year"]
PlanStatus = Literal["draft", "published", "unpublished", "archived"]
ChangeTiming = Literal["immediate", "period_end"]
RefundPolicy = Literal["none", "prorated", "full_within_days"]
PromotionStatus = Literal["active", "disabled"]
PriceSource = Literal["plan", "reseller_price"]
QuoteLineKind = Literal["setup", "recurring", "resource_setup", "resource_recurring", "discount"]


@dataclass
class ResourceInfo:
    id: int
    owner_id: int
    name: str
    unit: str
    kind: ResourceKind
    usage_reporting: UsageReporting
    created_at: datetime
    updated_at: datetime
    description: str | None = None


@dataclass
class ResourcePage:
    items: list[ResourceInfo]
    total: int
    offset: int
    limit: int


@dataclass
class TemplateResource:
    resource_id: int
    default_limit: Decimal


@dataclass
class OrderParameter:
    """A value a storefront must collect when the template is ordered."""

    name: str
    type: ParameterType
    required: bool = True
    pattern: str | None = None  # a regular expression the whole value must match
    title: str | None = None


@dataclass
class ModuleSetting:
    name: str
    value: str


@dataclass
class ServiceTemplateInfo:
    id: int
    owner_id: int
    name: str
    service_type: ServiceType
    module: str
    shared_with_resellers: bool
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    resources: list[TemplateResource] = field(default_factory=list)
    module_settings: list[ModuleSetting] = field(default_factory=list)  # to its managers only
    order_parameters: list[OrderParameter] = field(default_factory=list)


@dataclass
class ServiceTemplatePage:
    items: list[ServiceTemplateInfo]
    total: int
    offset: int
    limit: int


@dataclass
class PlanPeriod:
    """One subscription period of a plan and its fees (in the plan's currency).

    The setup fee is charged once, with the first period; the recurring fee for
    every period; the renewal fee in addition to it on each renewal."""

    count: int
    unit: PeriodUnit
    setup_fee: Money
    recurring_fee: Money
    renewal_fee: Money = Decimal(0)
    is_default: bool = False


@dataclass
class ResourceRate:
    """Prices of one resource in a plan. Unit prices are per unit; recurring and
    overage prices per unit and month (pro rata for periods in days: 30 days a month)."""

    resource_id: int
    included: Decimal
    maximum: Decimal | None = None  # most units a subscription may have; None: no limit
    unit_setup_price: Decimal = Decimal(0)
    unit_recurring_price: Decimal = Decimal(0)
    overage_price: Decimal = Decimal(0)
    optional: bool = False
    complimentary: bool = False


@dataclass
class PlanTrial:
    length: int
    unit: PeriodUnit
    requires_card: bool = False


@dataclass
class PlanInfo:
    id: int
    owner_id: int
    template_id: int
    name: str
    currency: str
    status: PlanStatus
    version: int  # the version new subscriptions get
    auto_renew: bool
    billing_in_advance: bool
    change_timing: ChangeTiming
    refund_policy: RefundPolicy
    refund_days: int
    created_at: datetime
    updated_at: datetime
    price_source: PriceSource = "plan"
    # whether the prices shown include tax: the plan's, or the price list's when
    # price_source is reseller_price
    tax_inclusive: bool = False
    description: str | None = None
    trial: PlanTrial | None = None
    periods: list[PlanPeriod] = field(default_factory=list)
    rates: list[ResourceRate] = field(default_factory=list)
    upgrade_to: list[int] = field(default_factory=list)
    version_created_at: datetime | None = None


@dataclass
class PlanMigrationInfo:
    """Subscribers of ``from_version`` move to ``to_version`` at their next renewal."""

    id: int
    plan_id: int
    from_version: int
    to_version: int
    requested_at: datetime
    requested_by: str


@dataclass
class PlanMigrationPage:
    items: list[PlanMigrationInfo]
    total: int
    offset: int
    limit: int


@dataclass
class PlanPage:
    items: list[PlanInfo]
    total: int
    offset: int
    limit: int


@dataclass
class PromotionInfo:
    id: int
    owner_id: int
    name: str
    status: PromotionStatus
    on_setup: bool
    on_recurring: bool
    once_per_account: bool
    used_count: int
    created_at: datetime
    code: str | None = None  # None: applied automatically
    percent: Decimal | None = None
    amount: Money | None = None
    currency: str | None = None
    cycles: int | None = None  # None: forever
    plan_ids: list[int] = field(default_factory=list)  # empty: every plan of the owner
    periods: list[PeriodChoice] = field(default_factory=list)  # empty: every period
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    max_uses: int | None = None


@dataclass
class PeriodChoice:
    count: int
    unit: PeriodUnit


@dataclass
class PromotionPage:
    items: list[PromotionInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ResellerPriceInfo:
    id: int
    reseller_id: int
    plan_id: int
    period_count: int
    period_unit: PeriodUnit
    currency: str
    setup_fee: Money
    recurring_fee: Money
    renewal_fee: Money
    updated_at: datetime
    tax_inclusive: bool = False


@dataclass
class ResellerPricePage:
    items: list[ResellerPriceInfo]
    total: int
    offset: int
    limit: int


@dataclass
class WholesalePriceInfo:
    """A parent's price to an advanced reseller, for one of the reseller's plans
    (per subscription) or one resource (per unit); recurring is per month."""

    id: int
    reseller_id: int
    currency: str
    # per unit for a resource (up to 4 decimals): not quantized as money
    setup_fee: Decimal
    recurring_fee: Decimal
    updated_at: datetime
    plan_id: int | None = None
    resource_id: int | None = None


@dataclass
class WholesalePricePage:
    items: list[WholesalePriceInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ResourceQuantity:
    resource_id: int
    quantity: Decimal


@dataclass
class QuoteLine:
    kind: QuoteLineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Money
    resource_id: int | None = None


@dataclass
class PriceQuoteInfo:
    account_id: int
    plan_id: int
    plan_version: int
    currency: str
    period_count: int
    period_unit: PeriodUnit
    price_source: PriceSource
    lines: list[QuoteLine]
    subtotal: Money  # before discount
    discount: Money  # not positive
    total: Money
    tax_inclusive: bool = False  # amounts include tax (extracted on the invoice) or not
    promotion_id: int | None = None
    discount_cycles: int | None = None  # how many periods the discount lasts; None: forever
    trial: PlanTrial | None = None


@dataclass
class CurrencyInfo:
    code: str  # ISO 4217
    minor_units: int  # decimals amounts in it are rounded to (half-up, per line)


@dataclass
class CurrencyPage:
    items: list[CurrencyInfo]
    total: int
    offset: int
    limit: int
