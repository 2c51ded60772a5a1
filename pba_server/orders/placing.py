"""Placing an order: :func:`place` (the buyer's state and credit hold, the
lines priced, one order per domain name, how it is paid, the order and its
lines written, the runner woken), ``OrderPlace`` and the storefront's
``OrderPlaceWithSignup``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.billing.balances import check_credit
from pba_server.billing.common import seller_of
from pba_server.catalog import promotions
from pba_server.catalog.models import Plan
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import CreditLimitExceeded, InvalidState, ValidationError
from pba_server.core.operations import operation
from pba_server.core.schema import MinLen
from pba_server.domains import names
from pba_server.dunning import service as dunning
from pba_server.orders import checks, records, runner
from pba_server.orders import pricing as opricing
from pba_server.orders.checks import SELLERS
from pba_server.orders.models import Order, OrderLine
from pba_server.orders.order_lines import price_line
from pba_server.orders.queries import order_info
from pba_server.orders.types import (
    OrderInfo,
    OrderLineInput,
    OrderType,
    SignupCard,
    SignupCustomer,
    SignupResult,
    SignupUser,
)
from pba_server.orders.workflows import workflow_for
from pba_server.payments.models import StoredPaymentMethod

STOREFRONT = frozenset({"sales"})  # besides admin
MAX_LINES = 50


def _one_order_per_domain(ctx: CallContext, priced: Sequence[opricing.PricedLine]) -> None:
    """A domain name ordered twice (on two lines, or while another order for
    it is still open: not registered yet, so check_order does not see it)
    would be charged twice and fail once."""
    from pba_server.catalog.models import ServiceTemplate
    from pba_server.domains.names import normalize_domain

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
                else names.taken_message(other, False),
            )


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
    code = checks.text(promotion_code, "promotion_code", 64)
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
