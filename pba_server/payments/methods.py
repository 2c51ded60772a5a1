"""Stored payment methods (gateway tokens of customers' cards) and each
account's auto-pay switch.

Public: :func:`get_method` (an active method the caller may see, with its
account's path), :func:`autopay_enabled`."""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.core import audit, paging
from pba_server.core.carddata import refuse_card_data
from pba_server.core.context import CallContext
from pba_server.core.errors import (
    Busy,
    InvalidState,
    NotFound,
    Unavailable,
    ValidationError,
)
from pba_server.core.operations import operation
from pba_server.payments.models import (
    AutopaySetting,
    StoredPaymentMethod,
)
from pba_server.payments.plugins import gateway_for, get_instance, route
from pba_server.payments.roles import BILLING, READERS
from pba_server.payments.types import (
    AutopayInfo,
    PaymentMethodInfo,
    PaymentMethodPage,
)
from pba_server.sdk import (
    CardDeclined,
    PluginBusy,
    PluginError,
)

log = logging.getLogger("pba.payments")


def _method_info(m: StoredPaymentMethod) -> PaymentMethodInfo:
    return PaymentMethodInfo(
        id=m.id,
        account_id=m.account_id,
        instance_id=m.instance_id,
        brand=m.brand,
        last4=m.last4,
        expiry_month=m.expiry_month,
        expiry_year=m.expiry_year,
        holder=m.holder,
        is_default=m.is_default,
        created_at=m.created_at,
    )


@operation("PaymentMethodAdd", roles=BILLING, mutating=True)
def payment_method_add(
    ctx: CallContext,
    *,
    account_id: int,
    token: str,
    brand: str,
    last4: str,
    expiry_month: int,
    expiry_year: int,
    holder: str,
    instance_id: int | None = None,
    make_default: bool = False,
) -> PaymentMethodInfo:
    """Store a gateway's token for an account's card, with what may be shown
    of it. Card numbers and security codes are refused, never stored. Without
    ``instance_id`` the sellers' routing rules choose the gateway."""
    for field, value in (("token", token), ("brand", brand), ("holder", holder)):
        refuse_card_data(field, value)
    if not re.fullmatch(r"\d{4}", last4):
        raise ValidationError("last4", "must be the last 4 digits")
    if not 1 <= expiry_month <= 12:
        raise ValidationError("expiry_month", "must be 1 to 12")
    if not 2000 <= expiry_year <= 2100:
        raise ValidationError("expiry_year", "must be a four-digit year")
    if not 1 <= len(token) <= 255 or not token.isprintable():
        raise ValidationError("token", "must be 1 to 255 printable characters")
    brand, holder = brand.strip(), holder.strip()
    if not 1 <= len(brand) <= 32:
        raise ValidationError("brand", "must be 1 to 32 characters")
    if len(holder) > 128:
        raise ValidationError("holder", "must be at most 128 characters")
    acc = get_account(ctx, account_id)
    inst = (
        route(ctx, acc, brand, acc.currency)
        if instance_id is None
        else get_instance(ctx, instance_id)
    )
    owner = ctx.session.get(Account, inst.account_id)
    assert owner is not None
    if not acc.path.startswith(owner.path) or acc.id == owner.id:
        raise ValidationError("instance_id", "is not a gateway of the account's seller")
    if inst.status != "active":
        raise InvalidState(f"plugin instance {inst.id} is disabled")
    gw = gateway_for(ctx.secrets, inst, ctx.clock)
    try:
        gw.validate_token(token)
    except CardDeclined as exc:
        raise ValidationError("token", f"the gateway refuses it ({exc.code})") from None
    except PluginBusy as exc:  # not called: nothing was stored
        raise Busy(f"the gateway is busy and cannot check the token now: {exc}") from None
    except PluginError as exc:  # the guard made its text fit for the tenant (masked, ref)
        raise Unavailable(f"the gateway cannot check the token now: {exc}") from None
    has_default = ctx.session.scalar(
        select(StoredPaymentMethod.id).where(
            StoredPaymentMethod.account_id == acc.id,
            StoredPaymentMethod.status == "active",
            StoredPaymentMethod.is_default.is_(True),
        )
    )
    if make_default and has_default is not None:
        _clear_default(ctx, acc.id)
    m = StoredPaymentMethod(
        account_id=acc.id,
        instance_id=inst.id,
        token=token,
        brand=brand,
        last4=last4,
        expiry_month=expiry_month,
        expiry_year=expiry_year,
        holder=holder,
        is_default=make_default or has_default is None,
        status="active",
        created_at=ctx.now(),
    )
    ctx.session.add(m)
    ctx.session.flush()
    audit.record(ctx, "payment_method", m.id, acc.path, {"brand": brand, "last4": last4})
    return _method_info(m)


def _clear_default(ctx: CallContext, account_id: int) -> None:
    for other in ctx.session.scalars(
        select(StoredPaymentMethod).where(
            StoredPaymentMethod.account_id == account_id,
            StoredPaymentMethod.is_default.is_(True),
        )
    ):
        other.is_default = False
    ctx.session.flush()


def get_method(ctx: CallContext, method_id: int) -> tuple[StoredPaymentMethod, str]:
    row = ctx.session.execute(
        select(StoredPaymentMethod, Account.path)
        .join(Account, Account.id == StoredPaymentMethod.account_id)
        .where(StoredPaymentMethod.id == method_id, StoredPaymentMethod.status == "active")
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"payment method {method_id} not found")
    return row[0], row[1]


@operation("PaymentMethodList", roles=READERS)
def payment_method_list(
    ctx: CallContext, *, account_id: int, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> PaymentMethodPage:
    """An account's stored payment methods, the default first."""
    acc = get_account(ctx, account_id)
    q = (
        select(StoredPaymentMethod)
        .where(StoredPaymentMethod.account_id == acc.id, StoredPaymentMethod.status == "active")
        .order_by(StoredPaymentMethod.is_default.desc(), StoredPaymentMethod.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return PaymentMethodPage([_method_info(m) for m in rows], total, offset, limit)


@operation("PaymentMethodRemove", roles=BILLING, mutating=True)
def payment_method_remove(ctx: CallContext, *, payment_method_id: int) -> bool:
    """Forget a stored payment method (its token is erased)."""
    m, path = get_method(ctx, payment_method_id)
    m.status = "removed"
    m.token = ""
    m.is_default = False
    audit.record(ctx, "payment_method", m.id, path, {"status": "removed"})
    return True


@operation("PaymentMethodSetDefault", roles=BILLING, mutating=True)
def payment_method_set_default(ctx: CallContext, *, payment_method_id: int) -> PaymentMethodInfo:
    """Make a stored payment method its account's default (for auto-pay)."""
    m, path = get_method(ctx, payment_method_id)
    _clear_default(ctx, m.account_id)
    m.is_default = True
    audit.record(ctx, "payment_method", m.id, path, {"is_default": True})
    return _method_info(m)


def _default_method_id(ctx: CallContext, account_id: int) -> int | None:
    return ctx.session.scalar(  # type: ignore[no-any-return]
        select(StoredPaymentMethod.id).where(
            StoredPaymentMethod.account_id == account_id,
            StoredPaymentMethod.status == "active",
            StoredPaymentMethod.is_default.is_(True),
        )
    )


def autopay_enabled(session: Any, account_id: int) -> bool:
    row = session.get(AutopaySetting, account_id)
    return row is None or bool(row.enabled)


@operation("PaymentAutopayGet", roles=READERS)
def payment_autopay_get(ctx: CallContext, *, account_id: int) -> AutopayInfo:
    """Whether invoices issued to the account are charged to its default
    payment method (on unless turned off), and which method that is."""
    acc = get_account(ctx, account_id)
    return AutopayInfo(
        account_id=acc.id,
        enabled=autopay_enabled(ctx.session, acc.id),
        default_payment_method_id=_default_method_id(ctx, acc.id),
    )


@operation("PaymentAutopaySet", roles=BILLING, mutating=True)
def payment_autopay_set(ctx: CallContext, *, account_id: int, enabled: bool) -> AutopayInfo:
    """Turn auto-pay on or off for the account: when off, its invoices are not
    charged automatically (neither when issued nor by dunning's retries)."""
    acc = get_account(ctx, account_id)
    row = ctx.session.get(AutopaySetting, acc.id, with_for_update=True)
    before = row is None or row.enabled
    if row is None:
        row = AutopaySetting(account_id=acc.id, enabled=enabled, updated_at=ctx.now())
        ctx.session.add(row)
    row.enabled, row.updated_at = enabled, ctx.now()
    ctx.session.flush()
    if before != enabled:
        audit.record(ctx, "account", acc.id, acc.path, {"autopay": {"from": before, "to": enabled}})
    return payment_autopay_get(ctx, account_id=acc.id)
