"""Values the accounts operations take and return (the wire shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pba_server.core.money import Money

AccountType = Literal[
    "provider", "customer_personal", "customer_business", "reseller", "enterprise", "department"
]
NewAccountType = Literal[
    "customer_personal", "customer_business", "reseller", "enterprise", "department"
]
AccountStatus = Literal["active", "suspended", "closed"]
PartnerLevel = Literal["affiliate", "basic", "advanced"]
ContactKind = Literal["billing", "technical", "administrative"]
Role = Literal["admin", "billing", "sales", "support", "technical", "readonly"]
UserStatus = Literal["active", "disabled"]


@dataclass
class ContactInput:
    kind: ContactKind
    name: str
    email: str
    phone: str | None = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass
class ContactInfo:
    id: int
    account_id: int
    kind: ContactKind
    name: str
    email: str
    phone: str | None = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass
class ContactPage:
    items: list[ContactInfo]
    total: int
    offset: int
    limit: int


@dataclass
class AccountInfo:
    id: int
    number: str
    type: AccountType
    name: str
    status: AccountStatus
    currency: str
    credit_limit: Money
    created_at: datetime
    updated_at: datetime
    parent_id: int | None = None
    partner_level: PartnerLevel | None = None
    tax_id: str | None = None
    country: str | None = None
    contacts: list[ContactInfo] = field(default_factory=list)


@dataclass
class AccountPage:
    items: list[AccountInfo]
    total: int
    offset: int
    limit: int


@dataclass
class UserInfo:
    id: int
    account_id: int
    login: str
    full_name: str
    roles: list[Role]
    status: UserStatus
    created_at: datetime
    email: str | None = None


@dataclass
class UserPage:
    items: list[UserInfo]
    total: int
    offset: int
    limit: int


@dataclass
class WhoAmIInfo:
    user_id: int
    login: str
    roles: list[Role]
    account_id: int
    account_number: str
    account_name: str
    account_type: AccountType
    authenticated_by: Literal["password", "apikey"]


@dataclass
class ApiKeyInfo:
    key_id: str
    user_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass
class ApiKeyPage:
    items: list[ApiKeyInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ApiKeyCreated:
    key_id: str
    secret: str
    user_id: int
    name: str
    created_at: datetime
