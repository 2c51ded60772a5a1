"""Order and workflow operations.

``OrderPlace`` validates and prices the order, commits it and returns at once;
its workflow runs in the background (:mod:`pba_server.orders.engine`).
``OrderGet`` shows the current step and the history of every step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, cast

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.billing.balances import check_credit
from pba_server.billing.common import seller_of
from pba_server.catalog import parameters as params
from pba_server.catalog import pricing as cpricing
from pba_server.catalog import promotions, templates, versions
from pba_server.catalog.models import Plan, PlanVersion
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import (
    CreditLimitExceeded,
    Forbidden,
    InvalidState,
    NotFound,
    ValidationError,
)
from pba_server.core.money import money
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path
from pba_server.domains import service as domains
from pba_server.dunning import service as dunning
from pba_server.orders import engine, records, runner, steps
from pba_server.orders import pricing as opricing
from pba_server.orders.models import Order, OrderHistory, OrderLine, Workflow
from pba_server.orders.types import (
    OrderCharge,
    OrderHistoryEntry,
    OrderInfo,
    OrderLineInfo,
    OrderLineInput,
    OrderPage,
    OrderStatus,
    OrderType,
    SignupCard,
    SignupCustomer,
    SignupResult,
    SignupUser,
    StepAction,
    WorkflowInfo,
    WorkflowPage,
    WorkflowStep,
    WorkflowTransition,
)
from pba_server.orders.workflow import ORDER_TYPES, Flow, Step, default_flow, validate
from pba_server.payments.models import StoredPaymentMethod
from pba_server.subscriptions.models import Subscription

SELLERS = frozenset({"sales"})  # place, approve, reject, cancel orders (and admin)
EDITORS = frozenset({"sales"})
STOREFRONT = frozenset({"sales"})  # besides admin
MAX_LINES = 50


# ---------------------------------------------------------------- views


def _line_info(ln: OrderLine) -> OrderLineInfo:
    return OrderLineInfo(
        position=ln.position,
        kind=cast(OrderType, ln.kind),
        description=ln.description,
        amount=ln.amount,
        plan_id=ln.plan_id,
        period_count=ln.period_count,
        period_unit=ln.period_unit,  # type: ignore[arg-type]
        subscription_id=ln.subscription_id,
        provisioned=ln.provisioned,
        charges=[
            OrderCharge(
                description=d["description"],
                quantity=Decimal(d["quantity"]).normalize(),
                unit_price=Decimal(d["unit_price"]),
                discount=Decimal(d["discount"]),
                amount=Decimal(d["quantity"]) * Decimal(d["unit_price"]) - Decimal(d["discount"]),
            )
            for d in json.loads(ln.charges)
        ],
    )


def order_info(ctx: CallContext, o: Order, *, full: bool = True) -> OrderInfo:
    flow = Flow.from_json(o.workflow)
    lines: list[OrderLineInfo] = []
    hist: list[OrderHistoryEntry] = []
    if full:
        lines = [_line_info(ln) for ln in records.lines_of(ctx, o)]
        hist = [
            OrderHistoryEntry(h.at, h.actor, h.step, h.action, h.result, h.note)
            for h in ctx.session.scalars(
                select(OrderHistory).where(OrderHistory.order_id == o.id).order_by(OrderHistory.id)
            )
        ]
    return OrderInfo(
        id=o.id,
        account_id=o.account_id,
        vendor_id=o.vendor_id,
        type=cast(OrderType, o.type),
        status=cast(OrderStatus, o.status),
        current_step=o.current_step,
        current_action=cast(StepAction, flow.step(o.current_step).action),
        currency=o.currency,
        subtotal=money(o.subtotal, o.currency, "subtotal"),
        discount=money(o.discount, o.currency, "discount"),
        total=money(o.total, o.currency, "total"),
        on_account=o.on_account,
        placed_by=o.placed_by,
        created_at=o.created_at,
        updated_at=o.updated_at,
        promotion_id=o.promotion_id,
        payment_method_id=o.payment_method_id,
        invoice_id=o.invoice_id,
        charge_id=o.charge_id,
        subscription_id=o.subscription_id,
        fraud_score=o.fraud_score,
        fraud_reasons=json.loads(o.fraud_reasons) if o.fraud_reasons else [],
        reason=o.reason,
        lines=lines,
        history=hist,
    )


def _get_order(ctx: CallContext, order_id: int, *, for_update: bool = False) -> Order:
    o = ctx.session.get(Order, order_id, with_for_update=for_update or None)
    if o is None:
        raise NotFound(f"order {order_id} not found")
    acc = ctx.session.get(Account, o.account_id)
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"order {order_id} not found")
    return o  # type: ignore[no-any-return]


# ---------------------------------------------------------------- workflows


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


# ---------------------------------------------------------------- placing


def _text(value: str | None, field: str, max_len: int = 255) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value.strip()) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value.strip()


def _subscription(ctx: CallContext, buyer: Account, sub_id: int | None, field: str) -> Subscription:
    if sub_id is None:
        raise ValidationError(field, "is required for this order type")
    sub = ctx.session.get(Subscription, sub_id, with_for_update=True)
    if sub is None or sub.account_id != buyer.id:
        raise ValidationError(field, f"account {buyer.id} has no subscription {sub_id}")
    return sub  # type: ignore[no-any-return]


def _live(sub: Subscription, field: str, *allowed: str) -> None:
    ok = allowed or ("active", "trial")
    if sub.status not in ok:
        raise InvalidState(f"subscription {sub.id} is {sub.status}")
    if sub.cancel_on is not None and "cancelled" not in ok:
        raise InvalidState(f"subscription {sub.id} is being cancelled on {sub.cancel_on}")


def _open_order_for(ctx: CallContext, sub_id: int) -> None:
    busy = ctx.session.scalar(
        select(OrderLine.order_id)
        .join(Order, Order.id == OrderLine.order_id)
        .where(OrderLine.subscription_id == sub_id, Order.status.in_(("running", "waiting")))
        .limit(1)
    )
    if busy is not None:
        raise InvalidState(f"subscription {sub_id} has order {busy} in progress")


def _one_order_per_domain(ctx: CallContext, priced: Sequence[opricing.PricedLine]) -> None:
    """A domain name ordered twice (on two lines, or while another order for
    it is still open: not registered yet, so check_order does not see it)
    would be charged twice and fail once."""
    from pba_server.catalog.models import ServiceTemplate
    from pba_server.domains.service import normalize_domain

    seen: dict[str, int] = {}
    for i, p in enumerate(priced):
        name = p.detail.get("parameters", {}).get("domain")
        if not name or p.plan is None:
            continue
        t = ctx.session.get(ServiceTemplate, p.plan.template_id)
        if t is None or t.module != "domains":
            continue
        key = normalize_domain(name, f"lines[{i}].parameters.domain")
        if key in seen:
            raise ValidationError(
                f"lines[{i}].parameters.domain", f"{key} is ordered on line {seen[key] + 1} already"
            )
        seen[key] = i
    if not seen:
        return
    open_lines = ctx.session.execute(
        select(OrderLine.order_id, OrderLine.detail, Account.path)
        .join(Order, Order.id == OrderLine.order_id)
        .join(Account, Account.id == Order.account_id)
        .join(Plan, Plan.id == OrderLine.plan_id)
        .join(ServiceTemplate, ServiceTemplate.id == Plan.template_id)
        .where(
            Order.status.in_(("running", "waiting")),
            OrderLine.kind == "sales",
            ServiceTemplate.module == "domains",
        )
    )
    for order_id, detail, path in open_lines:
        try:
            other = normalize_domain(json.loads(detail).get("parameters", {}).get("domain", ""))
        except ValidationError:
            continue
        if other in seen:
            # the other order is named only to a caller who may see it; to
            # anyone else the name is just not available (domains.taken_message)
            raise ValidationError(
                f"lines[{seen[other]}].parameters.domain",
                f"{other} is being ordered already (order {order_id})"
                if ctx.principal.sees(path)
                else domains.taken_message(other, False),
            )


def price_line(
    ctx: CallContext,
    buyer: Account,
    order_type: str,
    li: OrderLineInput,
    field: str,
    promotion_code: str | None,
) -> opricing.PricedLine:
    """Validate and price one order line (the one code path for orders and
    previews)."""
    if order_type == "sales":
        if li.plan_id is None:
            raise ValidationError(f"{field}.plan_id", "is required for a sales order")
        plan = opricing.sellable_plan(ctx, buyer, li.plan_id, f"{field}.plan_id")
        template_params = templates.template_parameters(ctx, plan.template_id)
        values: dict[str, str] = {}
        for i, pv in enumerate(li.parameters or []):
            if pv.name in values:
                raise ValidationError(f"{field}.parameters[{i}].name", "is given twice")
            values[pv.name] = pv.value
        checked = params.check_values(template_params, values, f"{field}.parameters")
        # a domain plan: a valid name under its TLD, not live here already
        domains.check_order(ctx, plan.template_id, checked, f"{field}.parameters")
        line = opricing.price_sales(
            ctx,
            buyer,
            plan,
            period_count=li.period_count,
            period_unit=li.period_unit,
            options=li.options or [],
            resources=li.resources or [],
            promotion_code=promotion_code,
        )
        q = line.quote
        assert q is not None and line.period is not None
        extra = {rq.resource_id: Decimal(str(rq.quantity)) for rq in li.resources or []}
        units = cpricing.selected_units(
            [
                cpricing.Rate(
                    resource_id=r.resource_id,
                    name="",
                    included=r.included,
                    maximum=r.maximum,
                    optional=r.optional,
                    complimentary=r.complimentary,
                )
                for r in versions.terms_of(ctx, line.version).rates  # type: ignore[arg-type]
            ],
            li.options or [],
            extra,
        )
        line.detail = {
            "parameters": checked,
            "bought": {str(rid): str(b) for rid, (_i, b) in units.items() if b > 0},
            "promotion_cycles": q.discount_cycles,
        }
        if q.trial is not None:
            from pba_server.subscriptions.periods import add_periods

            line.detail["trial_ends_on"] = add_periods(
                opricing.today(ctx), q.trial.length, q.trial.unit
            ).isoformat()
            line.detail["trial_requires_card"] = q.trial.requires_card
        return line
    if order_type == "payment":
        if li.amount is None:
            raise ValidationError(f"{field}.amount", "is required for a payment order")
        amt = money(li.amount, buyer.currency, f"{field}.amount")
        if amt <= 0:
            raise ValidationError(f"{field}.amount", "must be positive")
        return opricing.PricedLine(
            kind="payment",
            description=f"Prepayment {amt} {buyer.currency}",
            charges=[opricing.Charge("Prepayment", Decimal(1), amt)],
        )
    sub = _subscription(ctx, buyer, li.subscription_id, f"{field}.subscription_id")
    _open_order_for(ctx, sub.id)
    if order_type in ("upgrade", "downgrade"):
        _live(sub, field)
        if li.plan_id is None:
            raise ValidationError(f"{field}.plan_id", "is required: the plan to change to")
        new_plan = opricing.sellable_plan(ctx, buyer, li.plan_id, f"{field}.plan_id")
        when = li.when or _default_when(ctx, sub)
        return opricing.price_plan_change(ctx, sub, new_plan, when, order_type)
    if order_type == "resource":
        _live(sub, field, "active")
        return opricing.price_resource(ctx, sub, li.resources or [])
    if order_type == "renewal":
        _live(sub, field, "active", "expired", "trial")
        return opricing.price_renewal(ctx, sub)
    if order_type == "cancellation":
        _live(sub, field, "active", "trial", "suspended")
        when = li.when or "now"
        reason = _text(li.reason, f"{field}.reason", 1000)
        refund = opricing.refund_on_cancel(ctx, sub, when)
        return opricing.PricedLine(
            kind="cancellation",
            description=f"Cancel subscription {sub.id} ({when.replace('_', ' ')})",
            subscription=sub,
            credit=refund,
            detail={"when": when, "reason": reason},
        )
    if order_type == "transfer":
        _live(sub, field, "active", "suspended", "trial")
        if li.to_account_id is None:
            raise ValidationError(f"{field}.to_account_id", "is required for a transfer")
        to = ctx.session.get(Account, li.to_account_id)
        if to is None or not ctx.principal.sees(to.path):
            raise ValidationError(f"{field}.to_account_id", f"no account {li.to_account_id}")
        if to.id == buyer.id or seller_of(ctx, to).id != seller_of(ctx, buyer).id:
            raise ValidationError(
                f"{field}.to_account_id", "must be another customer of the same seller"
            )
        if to.currency != sub.currency or to.status != "active":
            raise ValidationError(
                f"{field}.to_account_id", "is not an active account in the subscription's currency"
            )
        return opricing.PricedLine(
            kind="transfer",
            description=f"Transfer subscription {sub.id} to account {to.id}",
            subscription=sub,
            detail={"to_account_id": to.id},
        )
    raise ValidationError("order_type", f"unknown order type {order_type!r}")


def _default_when(ctx: CallContext, sub: Subscription) -> str:
    v = ctx.session.get(PlanVersion, sub.plan_version_id)
    return "period_end" if v is not None and v.change_timing == "period_end" else "now"


# order types refused while the account is on credit hold (dunning): those that
# buy something; paying (a payment order), cancelling, downgrading and
# transfers stay possible
BUYING = frozenset({"sales", "renewal", "upgrade", "resource"})


def place(
    ctx: CallContext,
    *,
    account_id: int,
    order_type: str,
    lines: Sequence[OrderLineInput],
    promotion_code: str | None,
    payment_method_id: int | None,
    on_account: bool,
) -> Order:
    buyer = get_account(ctx, account_id, for_update=True)
    if buyer.type in ("provider",):
        raise ValidationError("account_id", "the provider buys from no one")
    if buyer.status != "active":
        raise InvalidState(f"account {buyer.id} is {buyer.status}")
    if order_type in BUYING and dunning.on_credit_hold(ctx.session, buyer.id):
        raise CreditLimitExceeded(
            f"account {buyer.id} is on credit hold: it has been over its credit limit too"
            " long; it places no new orders until it pays what it owes"
        )
    if not lines:
        raise ValidationError("lines", "an order has at least one line")
    if len(lines) > MAX_LINES:
        raise ValidationError("lines", f"at most {MAX_LINES} lines")
    if order_type not in ("sales", "resource", "payment") and len(lines) != 1:
        raise ValidationError("lines", f"a {order_type} order has one line")
    vendor = seller_of(ctx, buyer)
    code = _text(promotion_code, "promotion_code", 64)
    priced: list[opricing.PricedLine] = []
    promo_used: int | None = None
    for i, li in enumerate(lines):
        use_code = code if order_type == "sales" and promo_used is None else None
        try:
            p = price_line(ctx, buyer, order_type, li, f"lines[{i}]", use_code)
        except ValidationError as exc:
            if use_code is None or exc.field != "promotion_code" or len(lines) == 1:
                raise
            p = price_line(ctx, buyer, order_type, li, f"lines[{i}]", None)
        if p.quote is not None and p.quote.promotion_id is not None and use_code is not None:
            promo_used = p.quote.promotion_id
        priced.append(p)
    if order_type == "sales":
        _one_order_per_domain(ctx, priced)
    if code is not None and promo_used is None and order_type == "sales":
        raise ValidationError("promotion_code", "does not apply to any line of this order")
    subtotal = sum((p.subtotal for p in priced), Decimal(0))
    discount = sum((p.discount for p in priced), Decimal(0))
    total = subtotal - discount
    # how it is paid
    method: StoredPaymentMethod | None = None
    needs_card = any(p.detail.get("trial_requires_card") for p in priced)
    if on_account:
        if payment_method_id is not None:
            raise ValidationError(
                "payment_method_id", "give a payment method or on_account, not both"
            )
        if order_type == "payment":
            raise ValidationError("on_account", "a prepayment is paid by card")
        if total > 0:
            check_credit(ctx, buyer.id, total, pending=records.pending_on_account(ctx, buyer.id))
    else:
        if payment_method_id is not None:
            method = ctx.session.get(StoredPaymentMethod, payment_method_id)
            if method is None or method.account_id != buyer.id or method.status != "active":
                raise ValidationError(
                    "payment_method_id",
                    f"account {buyer.id} has no payment method {payment_method_id}",
                )
        elif total > 0 or needs_card:
            method = records.default_method(ctx, buyer.id)
            if method is None:
                raise ValidationError(
                    "payment_method_id",
                    "the account has no default payment method; give one or order on account",
                )
    flow, _owner = workflow_for(ctx, vendor, order_type)
    now = ctx.now()
    first = priced[0]
    o = Order(
        account_id=buyer.id,
        vendor_id=vendor.id,
        type=order_type,
        status="running",
        workflow=flow.to_json(),
        current_step=flow.start,
        next_run_at=now,
        attempts=0,
        currency=buyer.currency,
        subtotal=subtotal,
        discount=discount,
        total=total,
        promotion_id=promo_used,
        payment_method_id=method.id if method is not None else None,
        on_account=on_account,
        subscription_id=first.subscription.id if first.subscription is not None else None,
        applied=False,
        placed_by=ctx.principal.login[:128],
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(o)
    ctx.session.flush()
    for i, p in enumerate(priced):
        detail = dict(p.detail)
        if p.credit:
            detail["credit"] = str(p.credit)
        ctx.session.add(
            OrderLine(
                order_id=o.id,
                position=i + 1,
                kind=p.kind,
                plan_id=p.plan.id if p.plan is not None else None,
                plan_version_id=p.version.id if p.version is not None else None,
                period_count=p.period.count if p.period is not None else None,
                period_unit=p.period.unit if p.period is not None else None,
                subscription_id=p.subscription.id if p.subscription is not None else None,
                description=p.description[:255],
                detail=json.dumps(detail, sort_keys=True, default=str),
                charges=json.dumps([c.to_json() for c in p.charges]),
                amount=p.amount,
            )
        )
    if promo_used is not None:
        promotions.promotion_redeem(ctx, promo_used, buyer.id, reference=f"order {o.id}")
    records.history(ctx, o, "place", "placed", f"{order_type} order, total {total} {o.currency}")
    ctx.session.flush()
    records.order_event(ctx, o, "order.placed")
    audit.record(ctx, "order", o.id, buyer.path, {"placed": {"type": order_type, "total": total}})
    runner.kick_after_commit(ctx.uow)
    return o


@operation("OrderPlace", roles=SELLERS, mutating=True)
def order_place(
    ctx: CallContext,
    *,
    account_id: int,
    lines: Annotated[list[OrderLineInput], MinLen(1)],
    order_type: OrderType = "sales",
    promotion_code: str | None = None,
    payment_method_id: int | None = None,
    on_account: bool = False,
) -> OrderInfo:
    """Place an order for an account in the caller's subtree (or the caller's own).
    Validates that every plan is sellable to the account (its catalog owner's, published, in
    its currency, at its reseller's price list), the order parameters against the template
    (a domain plan's: a valid name under its TLD, not registered or being ordered here, once
    per order, a transfer with its ``auth_code``), resource amounts against the maxima, and
    for ``on_account`` orders the credit limit (Client.CreditLimitExceeded; so is any order
    that buys, whatever pays it, of an account on credit hold: over its limit for its seller's
    ``credit_hold_days``, until it pays). Totals come
    from the same pricing as PriceQuote (changes: prorated, see docs/proration.md). Paid by
    ``payment_method_id`` or else the account's default method, or ``on_account``. The order
    is committed and returned at once, ``running``; its workflow runs in the background:
    OrderGet shows the current step. Use ``idempotency_key``: a repeat returns the same
    order, never a second one."""
    o = place(
        ctx,
        account_id=account_id,
        order_type=order_type,
        lines=lines,
        promotion_code=promotion_code,
        payment_method_id=payment_method_id,
        on_account=on_account,
    )
    return order_info(ctx, o)


@operation("OrderGet", roles=ANY_ROLE)
def order_get(ctx: CallContext, *, order_id: int) -> OrderInfo:
    """One order: status, current step, lines, invoice and charge, history."""
    return order_info(ctx, _get_order(ctx, order_id))


@operation("OrderList", roles=ANY_ROLE)
def order_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: OrderStatus | None = None,
    order_type: OrderType | None = None,
    offset: int = 0,
    limit: int = 100,
) -> OrderPage:
    """Orders in the caller's subtree (or of one account), newest first."""
    check_page(offset, limit)
    q = select(Order).join(Account, Account.id == Order.account_id)
    if account_id is not None:
        acc = get_account(ctx, account_id)
        q = q.where(Order.account_id == acc.id)
    else:
        q = q.where(Account.path.like(visible_path(ctx, None) + "%"))
    if status is not None:
        q = q.where(Order.status == status)
    if order_type is not None:
        q = q.where(Order.type == order_type)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Order.id.desc()).offset(offset).limit(limit)).all()
    return OrderPage(
        items=[order_info(ctx, o, full=False) for o in rows],
        total=int(total),
        offset=offset,
        limit=limit,
    )


def _require_seller_side(ctx: CallContext, o: Order) -> None:
    vendor = ctx.session.get(Account, o.vendor_id)
    assert vendor is not None
    if ctx.principal.account_id == o.account_id or not ctx.principal.sees(vendor.path):
        raise Forbidden(f"only the seller of order {o.id} (or its parents) decides on it")


def _waiting_approval(o: Order) -> None:
    action = Flow.from_json(o.workflow).step(o.current_step).action
    if o.status != "waiting" or action != "wait_approval":
        raise InvalidState(
            f"order {o.id} is {o.status} at step {o.current_step}, not waiting for approval"
        )


@operation("OrderApprove", roles=SELLERS, mutating=True)
def order_approve(ctx: CallContext, *, order_id: int, note: str | None = None) -> OrderInfo:
    """Approve an order waiting for approval; its workflow goes on in the background."""
    o = _get_order(ctx, order_id, for_update=True)
    _require_seller_side(ctx, o)
    _waiting_approval(o)
    engine.advance_manual(ctx, o, "approved", _text(note, "note", 1000))
    records.order_event(ctx, o, "order.approved")
    return order_info(ctx, o)


@operation("OrderReject", roles=SELLERS, mutating=True)
def order_reject(ctx: CallContext, *, order_id: int, reason: str) -> OrderInfo:
    """Reject an order waiting for approval, with the reason the customer sees."""
    why = _text(reason, "reason", 1000)
    if why is None:
        raise ValidationError("reason", "is required")
    o = _get_order(ctx, order_id, for_update=True)
    _require_seller_side(ctx, o)
    _waiting_approval(o)
    o.reason = why
    engine.advance_manual(ctx, o, "rejected", why)
    return order_info(ctx, o)


@operation("OrderCancel", roles=SELLERS, mutating=True)
def order_cancel(ctx: CallContext, *, order_id: int, reason: str | None = None) -> OrderInfo:
    """Cancel an order that has not been charged or applied yet (by the buyer
    or its seller): its invoice is voided. Later, use a cancellation order."""
    o = _get_order(ctx, order_id, for_update=True)
    if o.status not in ("running", "waiting"):
        raise InvalidState(f"order {o.id} is {o.status}")
    action = Flow.from_json(o.workflow).step(o.current_step).action
    started = action in ("rollback", "complete", "reject") or (
        action == "charge" and o.attempts > 0
    )
    if o.charge_id is not None or o.applied or started:
        raise InvalidState(
            f"order {o.id} is at step {o.current_step}; it can no longer be cancelled"
        )
    why = _text(reason, "reason", 1000) or "cancelled"
    if o.invoice_id is not None:
        sysctx = records.order_ctx(ctx.uow, ctx.clock, o, secrets=ctx.secrets, runtime=ctx.runtime)
        steps.cancel_invoice(sysctx, o, why)
    o.status = "cancelled"
    o.reason = why
    o.next_run_at = None
    o.updated_at = ctx.now()
    records.history(ctx, o, "cancel", "cancelled", why)
    records.order_event(ctx, o, "order.rejected", reason=why)
    return order_info(ctx, o)


__all__ = ["Plan", "order_place"]


# ---------------------------------------------------------------- storefront


@operation("OrderPlaceWithSignup", roles=STOREFRONT, mutating=True)
def order_place_with_signup(
    ctx: CallContext,
    *,
    customer: SignupCustomer,
    user: SignupUser,
    card: SignupCard,
    lines: Annotated[list[OrderLineInput], MinLen(1)],
    promotion_code: str | None = None,
) -> SignupResult:
    """A storefront's one call: create the customer account (under the
    caller's account, or ``customer.parent_id``) and its first user (role
    admin), store the card's gateway token (checked by the gateway, as
    PaymentMethodAdd), and place the sales order paid by that card. All or
    nothing: any fault (login taken, token refused, plan not sellable, bad
    parameters) leaves nothing behind. The storefront authenticates as a user
    of the selling provider or reseller with the ``sales`` role (or admin).
    The charge runs in the order's workflow right after: a declined card
    rejects the order with the gateway's reason and provisions nothing
    (OrderGet tells; the account stays, to retry with another card)."""
    from pba_server.accounts import tree, users
    from pba_server.accounts.types import ContactInput
    from pba_server.payments import methods as payment_methods

    acc = tree.account_create(
        ctx,
        type=customer.type,
        name=customer.name,
        parent_id=customer.parent_id,
        country=customer.country,
        tax_id=customer.tax_id,
        contacts=[
            ContactInput(
                kind="billing",
                name=customer.name,
                email=customer.email,
                phone=customer.phone,
                address=customer.address,
                city=customer.city,
                postal_code=customer.postal_code,
                country=customer.country,
            )
        ],
    )
    u = users.user_create(
        ctx,
        account_id=acc.id,
        login=user.login,
        password=user.password,
        full_name=user.full_name,
        roles=["admin"],
        email=customer.email,
    )
    m = payment_methods.payment_method_add(
        ctx,
        account_id=acc.id,
        token=card.token,
        brand=card.brand,
        last4=card.last4,
        expiry_month=card.expiry_month,
        expiry_year=card.expiry_year,
        holder=card.holder,
        instance_id=card.instance_id,
        make_default=True,
    )
    o = place(
        ctx,
        account_id=acc.id,
        order_type="sales",
        lines=lines,
        promotion_code=promotion_code,
        payment_method_id=m.id,
        on_account=False,
    )
    return SignupResult(acc.id, u.id, m.id, order_info(ctx, o))
