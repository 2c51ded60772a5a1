"""What the domains operations take and return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from pba_server.core.money import Money

TldStatus = Literal["active", "disabled"]
DomainStatus = Literal["pending", "active", "expired", "transferring", "failed", "deleted"]
ContactRoleName = Literal["registrant", "admin", "tech", "billing"]


@dataclass
class TldPrice:
    """Prices of one registration period of ``years`` years, in the TLD's
    currency. ``transfer`` omitted: transfers are not sold for that period."""

    years: int
    register: Money
    renew: Money
    transfer: Money | None = None


@dataclass
class TldInfo:
    id: int
    owner_id: int
    name: str
    instance_id: int
    registrar: str  # the plugin of the instance
    currency: str
    status: TldStatus
    plan_id: int  # the published plan that sells registrations (and renews them)
    created_at: datetime
    updated_at: datetime
    transfer_plan_id: int | None = None  # the plan that sells transfers in, if priced
    prices: list[TldPrice] = field(default_factory=list)


@dataclass
class TldPage:
    items: list[TldInfo]
    total: int
    offset: int
    limit: int


@dataclass
class DomainCheckItem:
    """One name's availability. ``reason`` says why not (``unknown TLD``,
    ``taken``, the registry's reason) or ``premium``; prices are the TLD's
    list prices for one year (``premium_price``: the registry's own)."""

    name: str
    available: bool
    reason: str = ""
    tld_id: int | None = None
    currency: str | None = None
    register_price: Money | None = None
    transfer_price: Money | None = None
    premium_price: Money | None = None


@dataclass
class DomainContact:
    role: ContactRoleName
    name: str
    email: str
    phone: str = ""
    organization: str = ""
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""


@dataclass
class DomainInfo:
    id: int
    name: str
    account_id: int
    tld_id: int
    instance_id: int
    status: DomainStatus
    action: Literal["register", "transfer"]
    created_at: datetime
    updated_at: datetime
    subscription_id: int | None = None
    expires_on: date | None = None
    registry_id: str | None = None
    last_error: str | None = None
    nameservers: list[str] = field(default_factory=list)
    contacts: list[DomainContact] = field(default_factory=list)


@dataclass
class DomainPage:
    items: list[DomainInfo]
    total: int
    offset: int
    limit: int


@dataclass
class RegistrarMonitorInfo:
    """The balance monitor of one registrar instance."""

    instance_id: int
    minimum: Money
    currency: str
    updated_at: datetime
    last_balance: Money | None = None
    last_checked_at: datetime | None = None
    last_error: str | None = None
    alerted_on: date | None = None
    department_id: int | None = None  # gets the task to top the balance up


@dataclass
class RegistrarMonitorPage:
    items: list[RegistrarMonitorInfo]
    total: int
    offset: int
    limit: int
