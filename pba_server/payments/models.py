"""Tables of the payments feature."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class PluginInstance(Base):
    """A configured plugin: which plugin, its settings (secrets encrypted)."""

    __tablename__ = "plugin_instances"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    plugin: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    settings: Mapped[str] = mapped_column(Text)  # JSON of the non-secret settings
    secrets: Mapped[str] = mapped_column(Text)  # Fernet token of the secret ones' JSON
    status: Mapped[str] = mapped_column(String(16))  # active | disabled
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StoredPaymentMethod(Base):
    """A gateway token and what is shown of it; never a card number."""

    __tablename__ = "payment_methods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"))
    token: Mapped[str] = mapped_column(String(255))
    brand: Mapped[str] = mapped_column(String(32))
    last4: Mapped[str] = mapped_column(String(4))
    expiry_month: Mapped[int] = mapped_column(Integer)
    expiry_year: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(128))
    is_default: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))  # active | removed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GatewayPayment(Base):
    """One charge attempt, written (pending) before the gateway is called.

    ``gateway_key`` is our idempotency key at the gateway; ``client_key`` the
    caller's, unique per account, so a repeated PaymentCharge is the same one.
    """

    __tablename__ = "gateway_payments"
    __table_args__ = (
        UniqueConstraint("account_id", "client_key"),
        UniqueConstraint("gateway_key"),
        CheckConstraint("amount > 0", name="positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    method_id: Mapped[int] = mapped_column(ForeignKey("payment_methods.id"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"))
    client_key: Mapped[str] = mapped_column(String(128))
    gateway_key: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    amount: Mapped[Decimal] = mapped_column(Money())
    # pending | captured | declined | error
    status: Mapped[str] = mapped_column(String(16), index=True)
    decline_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(String(255))
    gateway_reference: Mapped[str | None] = mapped_column(String(128))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    # refunded or being refunded (pending refunds reserve their amount)
    refunded: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # while a request is at the gateway it renews this lease; a pending row
    # whose lease expired lost its worker (a crash) and is reconciled at once.
    # None: no worker owns it (the gateway did not answer; reconciled later)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # committed just before the gateway call: None means the call was never
    # made (no money moved); set, a not_found from an eventually consistent
    # lookup is final only lookup_settles_seconds after it
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class GatewayRefund(Base):
    """One refund attempt, written (pending) before the gateway is called."""

    __tablename__ = "gateway_refunds"
    __table_args__ = (
        UniqueConstraint("charge_id", "client_key"),
        UniqueConstraint("gateway_key"),
        CheckConstraint("amount > 0", name="positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("gateway_payments.id"), index=True)
    client_key: Mapped[str] = mapped_column(String(128))
    gateway_key: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money())
    reason: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | refunded | rejected
    decline_code: Mapped[str | None] = mapped_column(String(64))
    gateway_reference: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # as for a charge: renewed while a request is at the gateway (expired: its
    # worker died, recovered at once); None: nobody owns it (reconciled later)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # committed just before the gateway call: None means it was never made
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RoutingRule(Base):
    """Which gateway instance a seller's customers' cards go through."""

    __tablename__ = "payment_routing_rules"
    __table_args__ = (UniqueConstraint("account_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    position: Mapped[int] = mapped_column(Integer)
    brand: Mapped[str | None] = mapped_column(String(32))  # lower case; None: any
    currency: Mapped[str | None] = mapped_column(CurrencyCode())  # None: any
    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"))


class AutopaySetting(Base):
    """An account's auto-pay choice; no row means on (the default)."""

    __tablename__ = "payment_autopay_settings"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
