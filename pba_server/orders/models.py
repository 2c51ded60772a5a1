"""Order tables.

An order copies the workflow it runs (``workflow``, JSON) when it is placed,
so editing a workflow never changes orders in flight. ``current_step`` names
the step to run next (or the one it waits in); ``next_run_at`` is when the
background runner should run it (NULL while it waits for a person or for
provisioning, and once it is finished).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_due", "status", "next_run_at"),
        Index("ix_orders_account", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    vendor_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))  # the seller (issuer)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # running|waiting|completed|rejected|cancelled
    workflow: Mapped[str] = mapped_column(Text)  # JSON copy of the workflow it runs
    current_step: Mapped[str] = mapped_column(String(64))
    next_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer)  # runs of the current step
    currency: Mapped[str] = mapped_column(CurrencyCode())
    subtotal: Mapped[Decimal] = mapped_column(Money())
    discount: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"))
    payment_method_id: Mapped[int | None] = mapped_column(ForeignKey("payment_methods.id"))
    on_account: Mapped[bool] = mapped_column(Boolean)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("gateway_payments.id"))
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    applied: Mapped[bool] = mapped_column(Boolean)  # its effect on the subscription is done
    fraud_score: Mapped[int | None] = mapped_column(Integer)
    fraud_reasons: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # why rejected or cancelled
    placed_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # the order type of the line
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    plan_version_id: Mapped[int | None] = mapped_column(ForeignKey("plan_versions.id"))
    period_count: Mapped[int | None] = mapped_column(Integer)
    period_unit: Mapped[str | None] = mapped_column(String(8))
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    description: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text)  # JSON: parameters, resources, options, when...
    charges: Mapped[str] = mapped_column(Text)  # JSON: the priced lines (invoice lines)
    amount: Mapped[Decimal] = mapped_column(Money())
    # provisioning of the line's subscription: its bundle and how it ended
    bundle_id: Mapped[int | None] = mapped_column(Integer, index=True)
    provisioned: Mapped[str | None] = mapped_column(String(16))  # running | done | failed


class OrderHistory(Base):
    __tablename__ = "order_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    result: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)


class Workflow(Base):
    """A seller's workflow for one order type (its customers' orders)."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("owner_id", "order_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    order_type: Mapped[str] = mapped_column(String(16))
    definition: Mapped[str] = mapped_column(Text)  # JSON
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
