"""The values a billing run reads once and shares between batches: the
account tree (buyers and their sellers), the catalog (plans, versions, period
prices, resources, promotions, reseller and wholesale prices), tax rules and
scheduled plan migrations. :mod:`.load` fills a :class:`RunData` from the
database; :mod:`.plan` only reads it (and memoizes priced shapes in it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from pba_server.catalog import pricing

SELLERS = ("provider", "reseller")


@dataclass(frozen=True)
class Acc:
    id: int
    type: str
    parent_id: int | None
    path: str
    currency: str
    partner_level: str | None
    tax_id: str | None
    country: str | None
    status: str

    def ancestors(self) -> list[int]:
        return [int(p) for p in self.path.strip("/").split("/") if p][:-1]


class Res(NamedTuple):
    """A subscription's resource as the run reads it."""

    resource_id: int
    included: Decimal
    bought: Decimal
    unit_recurring_price: Decimal
    overage_price: Decimal


@dataclass(frozen=True)
class PeriodPrice:
    setup: Decimal
    recurring: Decimal
    renewal: Decimal


@dataclass(frozen=True)
class PlanData:
    id: int
    owner_id: int
    name: str
    currency: str


class Rule(NamedTuple):
    """An active tax rule of a seller."""

    id: int
    name: str
    buyer_country: str
    buyer_region: str
    rate: Decimal
    reverse_charge: bool


class ResellerPriceData(NamedTuple):
    """A basic reseller's price of a plan period."""

    id: int
    setup_fee: Decimal
    recurring_fee: Decimal
    renewal_fee: Decimal
    tax_inclusive: bool


class WholesalePriceData(NamedTuple):
    """An advanced reseller's wholesale price of a plan or a resource."""

    recurring_fee: Decimal
    currency: str


class SubRow(NamedTuple):
    """A due subscription as the run reads it (the columns of :data:`SUB_COLUMNS`)."""

    id: int
    account_id: int
    vendor_id: int
    plan_id: int
    plan_version_id: int
    currency: str
    status: str
    period_count: int
    period_unit: str
    anchor_day: int
    period_start: date
    period_end: date
    next_billing_date: date | None
    auto_renew: bool
    promotion_id: int | None
    promotion_cycles_left: int | None
    cancel_on: date | None
    cancel_reason: str | None


SUB_COLUMNS = SubRow._fields

# wholesale prices of one reseller: by plan id, by resource id
Wholesale = tuple[dict[int, WholesalePriceData], dict[int, WholesalePriceData]]


@dataclass
class RunData:
    """Catalog and account data read once per run (small, shared by every batch)."""

    accounts: dict[int, Acc] = field(default_factory=dict)
    plans: dict[int, PlanData] = field(default_factory=dict)
    versions: dict[int, bool] = field(default_factory=dict)  # version id -> tax_inclusive
    periods: dict[tuple[int, int, str], PeriodPrice | None] = field(default_factory=dict)
    resources: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, unit)
    promotions: dict[int, pricing.Discount | None] = field(default_factory=dict)
    reseller_prices: dict[int, dict[tuple[int, int, str], ResellerPriceData]] = field(
        default_factory=dict
    )
    wholesale: dict[int, Wholesale] = field(default_factory=dict)
    tax_rules: dict[int, list[Rule]] = field(default_factory=dict)
    # priced period shapes (description, quantity, unit price, discount) by
    # everything that decides them: most subscriptions share a few
    priced: dict[tuple[Any, ...], tuple[list[tuple[str, Decimal, Decimal, Decimal]], bool]] = field(
        default_factory=dict
    )
    months: dict[tuple[int, str], Decimal] = field(default_factory=dict)
    # scheduled subscriber migrations (PlanMigrateSubscribers) by plan:
    # from version number -> to version number; version ids <-> numbers;
    # the rates of a version subscriptions migrate to
    migrations: dict[int, dict[int, int]] = field(default_factory=dict)
    version_number: dict[int, tuple[int, int]] = field(default_factory=dict)
    version_id: dict[tuple[int, int], int] = field(default_factory=dict)
    version_rates: dict[int, list[tuple[int, Decimal, Decimal, Decimal]]] = field(
        default_factory=dict
    )

    def forget_customers(self) -> None:
        """Keep only sellers: memory must not grow with the number of customers."""
        if len(self.accounts) > 10_000:
            self.accounts = {k: v for k, v in self.accounts.items() if v.type in SELLERS}

    def seller_of(self, acc: Acc) -> Acc | None:
        for aid in reversed(acc.ancestors()):
            a = self.accounts[aid]
            if a.type in SELLERS:
                return a
        return None

    def price_list_of(self, acc: Acc) -> Acc | None:
        if acc.type == "reseller" and acc.partner_level == "basic":
            return acc
        if acc.parent_id is not None:
            p = self.accounts[acc.parent_id]
            if p.type == "reseller" and p.partner_level == "basic":
                return p
        return None
