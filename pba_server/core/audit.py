"""Audit log: who changed what, written in the same transaction as the change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from pba_server.core.context import CallContext
from pba_server.core.models import AuditEntry
from pba_server.core.operations import operation
from pba_server.core.paging import check_page
from pba_server.core.schema import dump
from pba_server.core.scope import visible_path


def record(
    ctx: CallContext,
    target_type: str,
    target_id: object,
    target_path: str,
    changes: dict[str, Any],
) -> None:
    p = ctx.principal
    ctx.session.add(
        AuditEntry(
            at=ctx.now(),
            user_id=p.user_id or None,
            user_login=p.login,
            actor_account_id=p.account_id or None,
            operation=ctx.operation,
            target_type=target_type,
            target_id=str(target_id),
            target_path=target_path,
            changes=json.dumps(dump(changes), sort_keys=True, default=str),
            correlation_id=ctx.correlation_id,
        )
    )


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Changed fields as ``{field: {"from": old, "to": new}}``."""
    return {k: {"from": before.get(k), "to": v} for k, v in after.items() if before.get(k) != v}


@dataclass
class AuditLogEntry:
    id: int
    at: datetime
    user_login: str
    user_id: int | None
    actor_account_id: int | None
    operation: str
    target_type: str
    target_id: str
    changes: str
    correlation_id: str


@dataclass
class AuditLogPage:
    items: list[AuditLogEntry]
    total: int
    offset: int
    limit: int


@operation("AuditLogList", roles={"admin", "support", "billing", "readonly"})
def audit_log_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> AuditLogPage:
    """Audit entries for changes inside an account's subtree (default: the caller's),
    newest first, optionally for one target and a time range [since, until)."""
    check_page(offset, limit)
    path = visible_path(ctx, account_id)
    q = select(AuditEntry).where(AuditEntry.target_path.startswith(path, autoescape=True))
    if target_type:
        q = q.where(AuditEntry.target_type == target_type)
    if target_id:
        q = q.where(AuditEntry.target_id == target_id)
    if since:
        q = q.where(AuditEntry.at >= since)
    if until:
        q = q.where(AuditEntry.at < until)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(AuditEntry.id.desc()).offset(offset).limit(limit)).all()
    items = [
        AuditLogEntry(
            id=r.id,
            at=r.at,
            user_login=r.user_login,
            user_id=r.user_id,
            actor_account_id=r.actor_account_id,
            operation=r.operation,
            target_type=r.target_type,
            target_id=r.target_id,
            changes=r.changes,
            correlation_id=r.correlation_id,
        )
        for r in rows
    ]
    return AuditLogPage(items=items, total=total, offset=offset, limit=limit)
