"""Moving a plan's subscribers from one version to another at their next renewal
(``PlanMigrateSubscribers``, ``PlanMigrationList``, :func:`renewal_version`)."""

from __future__ import annotations

from sqlalchemy import select

from pba_server.catalog import owners
from pba_server.catalog.models import (
    PlanMigration,
)
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.plans import editable_plan, get_plan
from pba_server.catalog.types import (
    PlanMigrationInfo,
    PlanMigrationPage,
)
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.operations import ANY_ROLE, operation


def _migration_info(m: PlanMigration) -> PlanMigrationInfo:
    return PlanMigrationInfo(
        id=m.id,
        plan_id=m.plan_id,
        from_version=m.from_version,
        to_version=m.to_version,
        requested_at=m.requested_at,
        requested_by=m.requested_by,
    )


@operation("PlanMigrateSubscribers", roles=EDITORS, mutating=True)
def plan_migrate_subscribers(
    ctx: CallContext, *, plan_id: int, from_version: int, to_version: int | None = None
) -> PlanMigrationInfo:
    """Move the subscriptions of a plan that are on ``from_version`` to
    ``to_version`` (default: the current version) at their next renewal; until
    then they keep paying what they were sold at. Asking again for the same
    ``from_version`` replaces the earlier request. Subscriptions that renew
    look the request up (``renewal_version``)."""
    plan = editable_plan(ctx, plan_id)
    target = to_version if to_version is not None else plan.current_version
    if from_version == target:
        raise ValidationError("to_version", "must differ from from_version")
    for field, number in (("from_version", from_version), ("to_version", target)):
        if number < 1 or number > plan.current_version:
            raise ValidationError(field, f"plan {plan.id} has no version {number}")
    row = ctx.session.scalar(
        select(PlanMigration)
        .where(PlanMigration.plan_id == plan.id, PlanMigration.from_version == from_version)
        .with_for_update()
    )
    before = None if row is None else row.to_version
    if row is None:
        row = PlanMigration(plan_id=plan.id, from_version=from_version)
        ctx.session.add(row)
    row.to_version = target
    row.requested_at = ctx.now()
    row.requested_by = ctx.principal.login
    ctx.session.flush()
    audit.record(
        ctx,
        "plan",
        plan.id,
        owners.account(ctx, plan.owner_id).path,
        {"migrate_subscribers": {"from_version": from_version, "to": target, "was": before}},
    )
    return _migration_info(row)


@operation("PlanMigrationList", roles=ANY_ROLE)
def plan_migration_list(
    ctx: CallContext, *, plan_id: int, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> PlanMigrationPage:
    """The version migrations requested for a plan, by from_version."""
    plan = get_plan(ctx, plan_id)
    owners.require_editor(ctx, plan.owner_id, "plan", plan_id)
    q = (
        select(PlanMigration)
        .where(PlanMigration.plan_id == plan.id)
        .order_by(PlanMigration.from_version)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return PlanMigrationPage([_migration_info(m) for m in rows], total, offset, limit)


def renewal_version(ctx: CallContext, plan_id: int, version: int) -> int:
    """The plan version a subscription on ``version`` renews at (for subscriptions)."""
    seen = {version}
    while True:
        nxt = ctx.session.scalar(
            select(PlanMigration.to_version).where(
                PlanMigration.plan_id == plan_id, PlanMigration.from_version == version
            )
        )
        if nxt is None or nxt in seen:
            return version
        seen.add(nxt)
        version = nxt
