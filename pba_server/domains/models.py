"""Tables of the domains feature: TLDs and their prices, domains, and the
registrar balance monitor's per-instance minimum."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class Tld(Base):
    """A TLD an account sells (``com``, ``co.uk``), the registrar instance that
    registers it, and the plans it is sold through."""

    __tablename__ = "tlds"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(63))  # lower case, no leading dot
    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"), index=True)
    currency: Mapped[str] = mapped_column(CurrencyCode())
    status: Mapped[str] = mapped_column(String(16))  # active | disabled
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))  # registration
    transfer_plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TldPrice(Base):
    """Prices of one period (in years) of a TLD. ``transfer`` None: transfers
    are not sold for that period."""

    __tablename__ = "tld_prices"
    __table_args__ = (
        UniqueConstraint("tld_id", "years"),
        CheckConstraint("years >= 1 AND years <= 10", name="years"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tld_id: Mapped[int] = mapped_column(ForeignKey("tlds.id"))
    years: Mapped[int] = mapped_column(Integer)
    register: Mapped[Decimal] = mapped_column(Money())
    renew: Mapped[Decimal] = mapped_column(Money())
    transfer: Mapped[Decimal | None] = mapped_column(Money())


class Domain(Base):
    """A domain name we register, renew or transfer for an account.

    ``live_name`` is the name while the domain is live (pending, active,
    expired, transferring) and NULL once failed or deleted: its unique
    constraint keeps a name on one live row only (both databases allow many
    NULLs)."""

    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), index=True)
    live_name: Mapped[str | None] = mapped_column(String(253), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(Integer, index=True)  # provisioning's service
    tld_id: Mapped[int] = mapped_column(ForeignKey("tlds.id"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"))
    # pending | active | expired | transferring | failed | deleted
    status: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # register | transfer: how it came to us
    expires_on: Mapped[date | None] = mapped_column(Date, index=True)
    nameservers: Mapped[str] = mapped_column(Text)  # JSON list
    contacts: Mapped[str] = mapped_column(Text)  # JSON object role -> contact
    registry_id: Mapped[str | None] = mapped_column(String(128))
    # the expiry date a domain.expiring event was raised for (once per date)
    expiry_notice_for: Mapped[date | None] = mapped_column(Date)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RegistrarMonitor(Base):
    """The balance monitor's minimum for one registrar instance, and what it
    saw last. ``alerted_on``: the day ``registrar.balance_low`` was last raised.
    ``department_id``: the department (a ``departments`` row of the
    provisioning feature) that gets the task to top the balance up."""

    __tablename__ = "registrar_monitors"

    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"), primary_key=True)
    minimum: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(CurrencyCode())
    last_balance: Mapped[Decimal | None] = mapped_column(Money())
    last_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted_on: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # whose task it is to top the balance up (None: the owner's staff, no department)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
