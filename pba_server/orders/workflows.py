"""Which workflow an order runs (:func:`workflow_for`: the seller's own, else the
nearest one above it, else the default) and the ``Workflow*`` operations
(:mod:`.workflow` holds workflows as data).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import cast

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.orders.models import Workflow
from pba_server.orders.types import (
    OrderType,
    StepAction,
    WorkflowInfo,
    WorkflowPage,
    WorkflowStep,
    WorkflowTransition,
)
from pba_server.orders.workflow import ORDER_TYPES, Flow, Step, default_flow, validate

EDITORS = frozenset({"sales"})


def _owner_chain(ctx: CallContext, acc: Account) -> list[int]:
    return [int(p) for p in acc.path.strip("/").split("/") if p]


def workflow_for(ctx: CallContext, vendor: Account, order_type: str) -> tuple[Flow, int | None]:
    """The workflow for ``vendor``'s customers' orders of ``order_type``: its
    own, else the nearest one above it, else the built-in default."""
    ids = _owner_chain(ctx, vendor)
    rows = {
        w.owner_id: w
        for w in ctx.session.scalars(
            select(Workflow).where(Workflow.owner_id.in_(ids), Workflow.order_type == order_type)
        )
    }
    for aid in reversed(ids):
        if aid in rows:
            return Flow.from_json(rows[aid].definition), aid
    return default_flow(order_type), None


def _workflow_info(
    flow: Flow, owner_id: int, order_type: str, is_default: bool, at: datetime | None
) -> WorkflowInfo:
    return WorkflowInfo(
        owner_id=owner_id,
        order_type=cast(OrderType, order_type),
        start=flow.start,
        steps=[
            WorkflowStep(
                s.name,
                cast(StepAction, s.action),
                [WorkflowTransition(on, to) for on, to in s.transitions],
            )
            for s in flow.steps
        ],
        is_default=is_default,
        updated_at=at,
    )


def _seller_account(ctx: CallContext, owner_id: int | None) -> Account:
    acc = get_account(ctx, owner_id if owner_id is not None else ctx.principal.account_id)
    if acc.type not in ("provider", "reseller"):
        raise ValidationError("owner_id", "only the provider and resellers have workflows")
    return acc


@operation("WorkflowGet", roles=ANY_ROLE)
def workflow_get(
    ctx: CallContext, *, order_type: OrderType, owner_id: int | None = None
) -> WorkflowInfo:
    """The workflow a seller's customers' orders of ``order_type`` run: the
    seller's own, else the nearest one above it, else the built-in default."""
    acc = _seller_account(ctx, owner_id)
    flow, found = workflow_for(ctx, acc, order_type)
    at = None
    if found is not None:
        w = ctx.session.scalar(
            select(Workflow).where(Workflow.owner_id == found, Workflow.order_type == order_type)
        )
        at = w.updated_at if w is not None else None
    return _workflow_info(
        flow, found if found is not None else acc.id, order_type, found is None, at
    )


@operation("WorkflowList", roles=ANY_ROLE)
def workflow_list(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> WorkflowPage:
    """The workflow of every order type for a seller (see WorkflowGet)."""
    types, total = paging.sliced(list(ORDER_TYPES), offset, limit)
    flows = [workflow_get(ctx, order_type=cast(OrderType, t), owner_id=owner_id) for t in types]
    return WorkflowPage(flows, total, offset, limit)


@operation("WorkflowSet", roles=EDITORS, mutating=True)
def workflow_set(
    ctx: CallContext,
    *,
    order_type: OrderType,
    start: str | None = None,
    steps: list[WorkflowStep] | None = None,
    owner_id: int | None = None,
) -> WorkflowInfo:
    """Set a seller's workflow for its customers' orders of ``order_type``
    (orders already placed keep the workflow they started with). Validated:
    known actions, a transition for every result of every action (``*`` for
    any), every step reachable from ``start`` and no loops, so every path ends
    in ``complete`` or ``reject``. No ``steps`` restores the default."""
    acc = _seller_account(ctx, owner_id)
    if order_type not in ORDER_TYPES:
        raise ValidationError("order_type", "unknown order type")
    row = ctx.session.scalar(
        select(Workflow)
        .where(Workflow.owner_id == acc.id, Workflow.order_type == order_type)
        .with_for_update()
    )
    if not steps:
        if row is not None:
            ctx.session.delete(row)
            ctx.session.flush()
        audit.record(ctx, "workflow", acc.id, acc.path, {order_type: "default"})
        return workflow_get(ctx, order_type=order_type, owner_id=acc.id)
    flow = validate(
        Flow(
            (start or "").strip(),
            tuple(
                Step(s.name.strip(), s.action, tuple((t.on, t.to) for t in s.transitions))
                for s in steps
            ),
        )
    )
    now = ctx.now()
    if row is None:
        row = Workflow(owner_id=acc.id, order_type=order_type)
        ctx.session.add(row)
    row.definition = flow.to_json()
    row.updated_by = ctx.principal.login[:128]
    row.updated_at = now
    ctx.session.flush()
    audit.record(ctx, "workflow", acc.id, acc.path, {order_type: json.loads(row.definition)})
    return _workflow_info(flow, acc.id, order_type, False, now)
