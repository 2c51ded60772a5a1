from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pba_server.accounts.types import (
    AccountStatus,
    AccountType,
    ContactKind,
    PartnerLevel,
    UserStatus,
)
from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        Index("ix_accounts_parent_type", "parent_id", "type"),
        # subtree queries are prefix matches on path; PostgreSQL needs the
        # pattern operator class to use a btree index for LIKE 'prefix%'
        Index("ix_accounts_path", "path", postgresql_ops={"path": "varchar_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    type: Mapped[AccountType] = mapped_column(String(32))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    # materialized path "/1/7/42/": subtree checks are a prefix match
    path: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[AccountStatus] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    credit_limit: Mapped[Decimal] = mapped_column(Money())
    partner_level: Mapped[PartnerLevel | None] = mapped_column(String(16))
    tax_id: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    contacts: Mapped[list[Contact]] = relationship(
        back_populates="account", order_by="Contact.id", lazy="raise"
    )


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[ContactKind] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str | None] = mapped_column(String(128))
    postal_code: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))

    account: Mapped[Account] = relationship(back_populates="contacts", lazy="raise")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    login: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    roles: Mapped[str] = mapped_column(String(255))  # comma-separated, sorted
    status: Mapped[UserStatus] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # Fernet-encrypted: PasswordDigest needs the secret itself to recompute it
    secret_encrypted: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
