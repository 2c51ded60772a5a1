"""Subscription tables.

A subscription pins the plan version it was sold at (``plan_version_id``) and
its billing period (``period_count`` x ``period_unit``). Dates that bound
periods are calendar dates in UTC: a period runs from ``period_start``
(inclusive) to ``period_end`` (exclusive). ``anchor_day`` is the day of month
the subscription started on, kept so that 31 Jan -> 28 Feb -> 31 Mar (see
:mod:`pba_server.subscriptions.periods`).

``vendor_id`` is the account whose plan this is (provider or a reseller): the
issuer of the subscription's invoices.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.catalog.types import PeriodUnit
from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime
from pba_server.subscriptions.types import SubscriptionStatus


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_due", "next_billing_date", "id"),
        Index("ix_subscriptions_account", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    vendor_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    plan_version_id: Mapped[int] = mapped_column(ForeignKey("plan_versions.id"))
    name: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    status: Mapped[SubscriptionStatus] = mapped_column(String(16))
    period_count: Mapped[int] = mapped_column(Integer)
    period_unit: Mapped[PeriodUnit] = mapped_column(String(8))
    anchor_day: Mapped[int] = mapped_column(Integer)
    started_on: Mapped[date] = mapped_column(Date)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    # the next date the billing run owes this subscription an invoice; None when
    # nothing more is billed (cancelled, expired, auto-renew off at term end)
    next_billing_date: Mapped[date | None] = mapped_column(Date)
    trial_ends_on: Mapped[date | None] = mapped_column(Date)
    auto_renew: Mapped[bool] = mapped_column(Boolean)
    # promotion applied at sale and how many more recurring cycles it discounts
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"))
    promotion_cycles_left: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[str] = mapped_column(Text)  # JSON object: the order parameters
    cancel_on: Mapped[date | None] = mapped_column(Date)  # scheduled cancellation
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    suspended_reason: Mapped[str | None] = mapped_column(String(32))  # staff | dunning
    # the term end a subscription.expiring event was raised for (raised once per term)
    expiry_notice_for: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SubscriptionResource(Base):
    """One resource of a subscription: the plan's included amount and extra
    units bought on top. The limit is ``included + bought``; overage is usage
    above the limit, billed at ``overage_price`` per unit."""

    __tablename__ = "subscription_resources"

    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    included: Mapped[Decimal] = mapped_column(Money())
    bought: Mapped[Decimal] = mapped_column(Money())
    unit_recurring_price: Mapped[Decimal] = mapped_column(Money())
    overage_price: Mapped[Decimal] = mapped_column(Money())
