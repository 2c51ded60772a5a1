"""Tables of the billing run: what was billed, exactly once.

``billed_items`` holds one row per (subscription, period start, kind) the run
has billed; its UNIQUE key is the exactly-once guarantee: the row is written
in the same transaction as the invoice that bills it, so a crashed or
concurrent run either committed both or neither, and a second attempt at the
same item fails on the key instead of billing it twice.

``wholesale_charges`` are an advanced reseller's charges for its customers'
subscriptions, staged by each batch and invoiced together (one invoice per
reseller and issuer per run) at the end of the run.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class BilledItem(Base):
    __tablename__ = "billed_items"
    __table_args__ = (UniqueConstraint("subscription_id", "period_start", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    period_start: Mapped[date] = mapped_column(Date)
    # recurring (the period billed in advance) | overage (usage of the period
    # that ended) | late (usage that arrived after its period was billed) |
    # wholesale (the reseller's charge for the period)
    kind: Mapped[str] = mapped_column(String(16))
    period_end: Mapped[date] = mapped_column(Date)
    # the invoice that billed it (None: a wholesale charge not invoiced yet)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    billed_on: Mapped[date] = mapped_column(Date)  # the run's as-of date
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WholesaleCharge(Base):
    __tablename__ = "wholesale_charges"
    __table_args__ = (Index("ix_wholesale_pending", "reseller_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    billed_item_id: Mapped[int] = mapped_column(ForeignKey("billed_items.id"))
    reseller_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    description: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[Decimal] = mapped_column(Numeric(19, 4))
    unit_price: Mapped[Decimal] = mapped_column(Money())
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
