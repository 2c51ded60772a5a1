"""Catalog tables.

A plan's prices and terms live in immutable :class:`PlanVersion` rows: changing
them after a plan was first published writes a new version, and a subscription
pins the version it was sold at (``plan_versions.id``) until renewal or
migration, so a price change never alters what existing subscribers pay.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.catalog.types import (
    ChangeTiming,
    PeriodUnit,
    PlanStatus,
    PromotionStatus,
    RefundPolicy,
    ResourceKind,
    ServiceType,
    UsageReporting,
)
from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(255))
    unit: Mapped[str] = mapped_column(String(32))
    kind: Mapped[ResourceKind] = mapped_column(String(16))
    usage_reporting: Mapped[UsageReporting] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ServiceTemplate(Base):
    __tablename__ = "service_templates"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    service_type: Mapped[ServiceType] = mapped_column(String(32))
    module: Mapped[str] = mapped_column(String(128))
    module_settings: Mapped[str] = mapped_column(Text)  # JSON object of strings
    order_parameters: Mapped[str] = mapped_column(Text)  # JSON list of OrderParameter
    # advanced resellers below the owner may build their own plans on it
    shared_with_resellers: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TemplateResource(Base):
    __tablename__ = "template_resources"

    template_id: Mapped[int] = mapped_column(ForeignKey("service_templates.id"), primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    default_limit: Mapped[Decimal] = mapped_column(Money())


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_plans_owner_status", "owner_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    template_id: Mapped[int] = mapped_column(ForeignKey("service_templates.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(CurrencyCode())
    status: Mapped[PlanStatus] = mapped_column(String(16))
    # number of the version new subscriptions get (plan_versions.version)
    current_version: Mapped[int] = mapped_column(Integer)
    first_published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlanVersion(Base):
    __tablename__ = "plan_versions"
    __table_args__ = (UniqueConstraint("plan_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    version: Mapped[int] = mapped_column(Integer)
    trial_length: Mapped[int | None] = mapped_column(Integer)
    trial_unit: Mapped[PeriodUnit | None] = mapped_column(String(8))
    trial_requires_card: Mapped[bool] = mapped_column(Boolean)
    auto_renew: Mapped[bool] = mapped_column(Boolean)
    billing_in_advance: Mapped[bool] = mapped_column(Boolean)
    change_timing: Mapped[ChangeTiming] = mapped_column(String(16))
    refund_policy: Mapped[RefundPolicy] = mapped_column(String(16))
    refund_days: Mapped[int] = mapped_column(Integer)
    # whether the version's prices include tax (the tax is then extracted from them)
    tax_inclusive: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlanPeriodRow(Base):
    __tablename__ = "plan_periods"
    __table_args__ = (UniqueConstraint("version_id", "count", "unit"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("plan_versions.id"))
    count: Mapped[int] = mapped_column(Integer)
    unit: Mapped[PeriodUnit] = mapped_column(String(8))
    setup_fee: Mapped[Decimal] = mapped_column(Money())
    recurring_fee: Mapped[Decimal] = mapped_column(Money())
    renewal_fee: Mapped[Decimal] = mapped_column(Money())
    is_default: Mapped[bool] = mapped_column(Boolean)


class PlanRateRow(Base):
    __tablename__ = "plan_rates"
    __table_args__ = (UniqueConstraint("version_id", "resource_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("plan_versions.id"))
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), index=True)
    included: Mapped[Decimal] = mapped_column(Money())
    maximum: Mapped[Decimal | None] = mapped_column(Money())
    unit_setup_price: Mapped[Decimal] = mapped_column(Money())
    unit_recurring_price: Mapped[Decimal] = mapped_column(Money())
    overage_price: Mapped[Decimal] = mapped_column(Money())
    optional: Mapped[bool] = mapped_column(Boolean)
    complimentary: Mapped[bool] = mapped_column(Boolean)


class PlanUpgrade(Base):
    """A plan a subscription of ``plan_id`` may change to."""

    __tablename__ = "plan_upgrades"

    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), primary_key=True)
    to_plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), primary_key=True)


class Promotion(Base):
    __tablename__ = "promotions"
    __table_args__ = (UniqueConstraint("owner_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    code: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[PromotionStatus] = mapped_column(String(16))
    percent: Mapped[Decimal | None] = mapped_column(Money())
    amount: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(CurrencyCode())
    on_setup: Mapped[bool] = mapped_column(Boolean)
    on_recurring: Mapped[bool] = mapped_column(Boolean)
    cycles: Mapped[int | None] = mapped_column(Integer)
    periods: Mapped[str] = mapped_column(Text)  # JSON list of [count, unit]
    valid_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UtcDateTime)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    once_per_account: Mapped[bool] = mapped_column(Boolean)
    # counted by orders when they use it
    used_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PromotionPlan(Base):
    __tablename__ = "promotion_plans"

    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotions.id"), primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), primary_key=True)


class ResellerPrice(Base):
    """What a basic reseller's customers pay for one period of its parent's plan."""

    __tablename__ = "reseller_prices"
    __table_args__ = (UniqueConstraint("reseller_id", "plan_id", "period_count", "period_unit"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    period_count: Mapped[int] = mapped_column(Integer)
    period_unit: Mapped[PeriodUnit] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    setup_fee: Mapped[Decimal] = mapped_column(Money())
    recurring_fee: Mapped[Decimal] = mapped_column(Money())
    renewal_fee: Mapped[Decimal] = mapped_column(Money())
    # whether these prices include tax; one value per reseller and plan
    tax_inclusive: Mapped[bool] = mapped_column(Boolean, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WholesalePrice(Base):
    """What a parent charges an advanced reseller: per subscription of one of the
    reseller's plans (setup, and recurring per month), or per unit and month of
    a resource its subscriptions use."""

    __tablename__ = "wholesale_prices"
    __table_args__ = (
        UniqueConstraint("reseller_id", "plan_id"),
        UniqueConstraint("reseller_id", "resource_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reseller_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), index=True)
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resources.id"), index=True)
    currency: Mapped[str] = mapped_column(CurrencyCode())
    setup_fee: Mapped[Decimal] = mapped_column(Money())
    recurring_fee: Mapped[Decimal] = mapped_column(Money())  # per month
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlanMigration(Base):
    """A request to move the subscribers of one plan version to another at their
    next renewal. Subscriptions read it when they renew (:func:`renewal_version`)."""

    __tablename__ = "plan_migrations"
    __table_args__ = (UniqueConstraint("plan_id", "from_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    requested_by: Mapped[str] = mapped_column(String(128))


class PromotionUse(Base):
    """One use of a promotion by an order. ``once_key`` is the account id for a
    once-per-account promotion (else NULL), so the database refuses a second use."""

    __tablename__ = "promotion_uses"
    __table_args__ = (UniqueConstraint("promotion_id", "once_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotions.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    once_key: Mapped[int | None] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(64))  # e.g. the order number
    used_at: Mapped[datetime] = mapped_column(UtcDateTime)
