"""Usage tables.

A usage record is one reported quantity of a resource at a moment; its
``record_id`` is unique per subscription, so a repeated report is ignored.
``period_start`` is the start of the subscription period the moment falls in
(computed when the record arrives). ``billed`` is set by the billing run, in
the transaction of the invoice that bills the period: a record arriving after
its period was billed stays unbilled and becomes a late line on the next
invoice.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, UtcDateTime


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("subscription_id", "record_id"),
        # the run finds a batch's unbilled records through this index; no index
        # on ``billed``, so marking records billed is a HOT update
        Index("ix_usage_period", "subscription_id", "period_start", "resource_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"))
    record_id: Mapped[str] = mapped_column(String(128))
    quantity: Mapped[Decimal] = mapped_column(Numeric(19, 4))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    period_start: Mapped[date] = mapped_column(Date)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    billed: Mapped[bool] = mapped_column(Boolean)


class UsageThreshold(Base):
    """A threshold event already raised: once per subscription, resource, period and percent."""

    __tablename__ = "usage_thresholds"

    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    percent: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
