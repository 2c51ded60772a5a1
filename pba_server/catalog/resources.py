"""Resources: what is sold and metered (``Resource*`` operations)."""

from __future__ import annotations

import re
from dataclasses import asdict

from sqlalchemy import func, select

from pba_server.catalog import checks, owners
from pba_server.catalog.models import (
    Resource,
)
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.types import (
    ResourceInfo,
    ResourceKind,
    ResourcePage,
    UsageReporting,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page

UNIT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9 ._/-]{0,31}$")


def _resource_info(r: Resource) -> ResourceInfo:
    return ResourceInfo(
        id=r.id,
        owner_id=r.owner_id,
        name=r.name,
        unit=r.unit,
        kind=r.kind,
        usage_reporting=r.usage_reporting,
        created_at=r.created_at,
        updated_at=r.updated_at,
        description=r.description,
    )


def _get_resource(ctx: CallContext, resource_id: int) -> Resource:
    r = ctx.session.get(Resource, resource_id)
    if r is None or not (owners.manages(ctx, r.owner_id) or owners.above_or_self(ctx, r.owner_id)):
        raise NotFound(f"resource {resource_id} not found")
    return r  # type: ignore[no-any-return]


def _unit(value: str) -> str:
    value = value.strip()
    if not UNIT_RE.match(value):
        raise ValidationError("unit", "must be a short unit name such as GB, mailbox, IP or item")
    return value


@operation("ResourceCreate", roles=EDITORS, mutating=True)
def resource_create(
    ctx: CallContext,
    *,
    name: str,
    unit: str,
    kind: ResourceKind,
    usage_reporting: UsageReporting = "per_period",
    description: str | None = None,
    owner_id: int | None = None,
) -> ResourceInfo:
    """Define a resource: something sold and metered. ``kind`` is ``allocated``
    (a limit that is handed out, such as mailboxes) or ``metered`` (a quantity
    used, such as traffic GB); ``usage_reporting`` says whether usage comes as
    a total per period or as a current value. Names are unique per owner."""
    owner = owners.owner_for_create(ctx, owner_id)
    now = ctx.now()
    r = Resource(
        owner_id=owner.id,
        name=checks.text(name, "name"),
        unit=_unit(unit),
        kind=kind,
        usage_reporting=usage_reporting,
        description=checks.opt_text(description, "description"),
        created_at=now,
        updated_at=now,
    )
    owners.savepoint_unique(ctx, r, "name", f"account {owner.id} already has a resource {r.name!r}")
    info = _resource_info(r)
    audit.record(ctx, "resource", r.id, owner.path, {"created": info})
    return info


@operation("ResourceList", roles=ANY_ROLE)
def resource_list(
    ctx: CallContext, *, owner_id: int | None = None, offset: int = 0, limit: int = 100
) -> ResourcePage:
    """Resources of one owner, or (default) those the caller's account may use:
    its own and its catalog owners' above it; ordered by id."""
    check_page(offset, limit)
    if owner_id is not None:
        if not (owners.manages(ctx, owner_id) or owners.above_or_self(ctx, owner_id)):
            raise NotFound(f"account {owner_id} not found")
        owner_ids = [owner_id]
    else:
        owner_ids = owners.readable_owner_ids(ctx)
    q = select(Resource).where(Resource.owner_id.in_(owner_ids))
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Resource.id).offset(offset).limit(limit))
    return ResourcePage([_resource_info(r) for r in rows], total, offset, limit)


@operation("ResourceUpdate", roles=EDITORS, mutating=True)
def resource_update(
    ctx: CallContext,
    *,
    resource_id: int,
    name: str | None = None,
    unit: str | None = None,
    usage_reporting: UsageReporting | None = None,
    description: str | None = None,
) -> ResourceInfo:
    """Rename a resource or change its unit, usage reporting or description
    (an empty description clears it). Its kind never changes: plans bill by it."""
    r = _get_resource(ctx, resource_id)
    owners.require_editor(ctx, r.owner_id, "resource", resource_id)
    before = asdict(_resource_info(r))
    if name is not None:
        owners.rename(ctx, r, name, "resource")
    if unit is not None:
        r.unit = _unit(unit)
    if usage_reporting is not None:
        r.usage_reporting = usage_reporting
    if description is not None:
        r.description = checks.opt_text(description, "description")
    info = _resource_info(r)
    changes = audit.diff(before, asdict(info))
    if changes:
        r.updated_at = info.updated_at = ctx.now()
        audit.record(ctx, "resource", r.id, owners.account(ctx, r.owner_id).path, changes)
    return info
