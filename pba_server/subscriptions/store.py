"""Writing subscription rows: the one place a subscription is created.

Not an API operation: the orders feature calls :func:`new_subscription` when a
sales order is provisioned, and other features' tests call it to get
subscriptions without going through orders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account
from pba_server.catalog.models import Plan, PlanPeriodRow, PlanRateRow, PlanVersion
from pba_server.core import audit
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods
from pba_server.subscriptions.types import SubscriptionStatus


def new_subscription(
    session: Session,
    clock: Clock,
    *,
    account_id: int,
    vendor_id: int,
    plan_version_id: int,
    period_count: int,
    period_unit: str,
    start: date,
    status: SubscriptionStatus = "active",
    trial_ends_on: date | None = None,
    parameters: Mapping[str, str] | None = None,
    bought: Mapping[int, Decimal] | None = None,
    promotion_id: int | None = None,
    promotion_cycles: int | None = None,
    name: str | None = None,
) -> Subscription:
    """Insert a subscription to one plan version and period, with its
    resources copied from the version's rates (``bought``: extra units per
    resource id). The first period starts on ``start`` (or, for a trial, on
    ``trial_ends_on``); ``next_billing_date`` is the end of the first period
    (billing in advance: the first period is billed by the sales order)."""
    version = session.get(PlanVersion, plan_version_id)
    if version is None:
        raise NotFound(f"plan version {plan_version_id} does not exist")
    plan = session.get(Plan, version.plan_id)
    assert plan is not None
    period = session.scalar(
        select(PlanPeriodRow).where(
            PlanPeriodRow.version_id == version.id,
            PlanPeriodRow.count == period_count,
            PlanPeriodRow.unit == period_unit,
        )
    )
    if period is None:
        raise ValidationError(
            "period", f"plan {plan.id} has no {period_count} {period_unit} period"
        )
    first = trial_ends_on if status == "trial" and trial_ends_on else start
    end = add_periods(first, period_count, period_unit, anchor_day=first.day)
    now = clock.now()
    sub = Subscription(
        account_id=account_id,
        vendor_id=vendor_id,
        plan_id=plan.id,
        plan_version_id=version.id,
        name=name or plan.name,
        currency=plan.currency,
        status=status,
        period_count=period_count,
        period_unit=period_unit,
        anchor_day=first.day,
        started_on=start,
        period_start=first if status != "trial" else start,
        period_end=end if status != "trial" else first,
        next_billing_date=end if status != "trial" else first,
        trial_ends_on=trial_ends_on if status == "trial" else None,
        auto_renew=version.auto_renew,
        promotion_id=promotion_id,
        promotion_cycles_left=promotion_cycles,
        parameters=json.dumps(dict(parameters or {}), sort_keys=True),
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    session.flush()
    extra = dict(bought or {})
    rates = session.scalars(select(PlanRateRow).where(PlanRateRow.version_id == version.id))
    for r in rates:
        session.add(
            SubscriptionResource(
                subscription_id=sub.id,
                resource_id=r.resource_id,
                included=r.included,
                bought=extra.pop(r.resource_id, Decimal(0)),
                unit_recurring_price=r.unit_recurring_price,
                overage_price=r.overage_price,
            )
        )
    if extra:
        raise ValidationError("resources", f"plan has no rate for resource(s) {sorted(extra)}")
    session.flush()
    return sub


def move_with_subscription(
    ctx: CallContext, model: Any, kind: str, subscription_id: int, account_id: int
) -> list[int]:
    """Rows of ``model`` (with ``subscription_id``, ``account_id`` and
    ``updated_at``) that belong to a subscription moved to ``account_id``
    (a transfer order) follow it, each audited as ``kind``. Runs in the
    caller's transaction; returns the ids moved."""
    to = ctx.session.get(Account, account_id)
    if to is None:
        raise NotFound(f"account {account_id} not found")
    moved = []
    for row in ctx.session.scalars(
        select(model)
        .where(model.subscription_id == subscription_id, model.account_id != account_id)
        .order_by(model.id)
        .with_for_update()
    ):
        changes = {"account_id": {"from": row.account_id, "to": to.id}}
        audit.record(ctx, kind, row.id, to.path, changes)
        row.account_id = to.id
        row.updated_at = ctx.now()
        moved.append(int(row.id))
    return moved
