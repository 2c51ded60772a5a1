"""Payments operations: plugin instances, stored payment methods, gateway
charges and their reconciliation.

A charge follows habit 4: the pending row, with our own gateway key, is
committed before the gateway is called; the outcome is written after. If the
process dies in between, or the gateway does not answer, the row stays
pending and :func:`reconcile` asks the gateway by that key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.accounts.service import get_account
from pba_server.billing import service as billing
from pba_server.billing.models import Invoice
from pba_server.core import audit, paging
from pba_server.core.carddata import refuse_card_data
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import (
    Conflict,
    InvalidState,
    NotFound,
    OperatorSetting,
    PaymentDeclined,
    Unavailable,
    ValidationError,
)
from pba_server.core.money import money
from pba_server.core.operations import operation
from pba_server.core.operator import is_operator
from pba_server.core.scope import visible_path
from pba_server.core.secrets import SecretBox
from pba_server.payments.models import (
    AutopaySetting,
    GatewayPayment,
    GatewayRefund,
    PluginInstance,
    RoutingRule,
    StoredPaymentMethod,
)
from pba_server.payments.plugin_objects import plugin_object
from pba_server.payments.types import (
    AutopayInfo,
    ChargeInfo,
    PaymentMethodInfo,
    PaymentMethodPage,
    PluginInfoItem,
    PluginInstanceInfo,
    PluginInstancePage,
    PluginPage,
    PluginSettingInfo,
    RefundInfo,
    RoutingRuleInfo,
    RoutingRuleInput,
    RoutingRulePage,
    SettingValue,
)
from pba_server.sdk import (
    CardDeclined,
    ConfigurationError,
    NotSupported,
    PaymentGateway,
    PluginError,
    RefundRejected,
    loader,
)

log = logging.getLogger("pba.payments")

ADMIN = frozenset({"admin"})
BILLING = frozenset({"billing"})
READERS = frozenset({"billing", "sales", "support", "readonly"})
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
# Test hook for the crash-in-the-middle test: die after the gateway captured
# and before our commit. Read at call time; never set in production.
CRASH_HOOK = "PBA_TEST_CRASH_AFTER_GATEWAY"

_box: SecretBox | None = None


def configure_runtime(box: SecretBox) -> None:
    """Give the scheduler's jobs (which have no call context) the secret box."""
    global _box
    _box = box


# ---------------------------------------------------------------- card data


# refuse_card_data lives in core.carddata; the dispatcher applies it to every call


# ---------------------------------------------------------------- plugins


def _plugin_item(p: loader.LoadedPlugin) -> PluginInfoItem:
    info = p.info
    return PluginInfoItem(
        name=p.name,
        status="ok" if p.status == "ok" else "broken",
        reason=p.reason,
        source=p.source,
        version=info.version if info else None,
        sdk_version=info.sdk_version if info else None,
        description=info.description if info else "",
        capabilities=sorted(info.capabilities) if info else [],
        settings=[
            PluginSettingInfo(
                f.name, f.type, f.required, f.secret, f.default, f.description, f.kind
            )
            for f in (info.settings if info else ())
        ],
        operator_only=not info.tenant_configurable() if info else False,
    )


@operation("PluginList", roles=ADMIN)
def plugin_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> PluginPage:
    """Every plugin this server found, loaded or broken (with the reason)."""
    found, total = paging.sliced(list(loader.plugins().values()), offset, limit)
    return PluginPage([_plugin_item(p) for p in found], total, offset, limit)


def _loaded(name: str) -> loader.LoadedPlugin:
    p = loader.plugins().get(name)
    if p is None:
        raise NotFound(f"plugin {name!r} not found")
    if p.status != "ok" or p.cls is None:
        raise InvalidState(f"plugin {name!r} is broken: {p.reason}")
    return p


def _instance_info(inst: PluginInstance) -> PluginInstanceInfo:
    plain = json.loads(inst.settings)
    return PluginInstanceInfo(
        id=inst.id,
        account_id=inst.account_id,
        plugin=inst.plugin,
        name=inst.name,
        status=inst.status,  # type: ignore[arg-type]
        settings=[SettingValue(k, v) for k, v in sorted(plain.items())],
        secret_settings_set=[],
        created_at=inst.created_at,
        updated_at=inst.updated_at,
    )


def _secret_names(inst: PluginInstance) -> list[str]:
    p = loader.plugins().get(inst.plugin)
    if p is None or p.info is None:
        return []
    return [f.name for f in p.info.settings if f.secret]


def _info(inst: PluginInstance) -> PluginInstanceInfo:
    out = _instance_info(inst)
    out.secret_settings_set = _secret_names(inst)
    return out


def gateway_for(box: SecretBox, inst: PluginInstance, clock: Clock) -> PaymentGateway:
    """A payment gateway object for ``inst``, its secrets decrypted in memory only."""
    gateway: PaymentGateway = plugin_object(box, inst, "payment_gateway", clock)
    return gateway


@operation("PluginConfigure", roles=ADMIN, mutating=True)
def plugin_configure(
    ctx: CallContext,
    *,
    plugin: str,
    name: str,
    settings: list[SettingValue] | None = None,
) -> PluginInstanceInfo:
    """Create or reconfigure the caller's account's plugin instance ``name``.
    Secret settings are encrypted at rest and never returned; on a
    reconfiguration a secret left out keeps its stored value. ``settings``
    may be omitted (a plugin without required settings).

    Operator settings: only the provider's administrators configure a plugin
    that runs programs or writes files (``script``, ``log_channel``), or set
    a setting of kind url, host, port, path or program (``api_base``,
    ``url``, ``host``...); anyone else gets ``Client.OperatorSetting`` and
    their instances use those settings' defaults. Tenants use the instances
    the provider offers (its processing modules with ``use_for_new_orders``,
    its gateways in routing rules, its notification channels)."""
    p = _loaded(plugin)
    assert p.cls is not None
    info = p.cls.info
    operator = is_operator(ctx)
    if not operator and not info.tenant_configurable():
        raise OperatorSetting(
            f"plugin {plugin} runs programs or uses the server's files: only the "
            "provider's administrators configure it"
        )
    if not NAME_RE.match(name):
        raise ValidationError("name", "must be 1 to 64 letters, digits, spaces, _ . -")
    fields = {f.name: f for f in info.settings}
    given: dict[str, str] = {}
    for s in settings or []:
        if s.name not in fields:
            raise ValidationError("settings", f"plugin {plugin} has no setting {s.name!r}")
        if s.name in given:
            raise ValidationError("settings", f"{s.name!r} given twice")
        if fields[s.name].operator_only and not operator:
            raise OperatorSetting(
                f"setting {s.name!r} of plugin {plugin} is a {fields[s.name].kind}: "
                "only the provider's administrators set it"
            )
        given[s.name] = s.value
    inst = ctx.session.scalar(
        select(PluginInstance)
        .where(PluginInstance.account_id == ctx.principal.account_id, PluginInstance.name == name)
        .with_for_update()
    )
    if inst is not None and inst.plugin != plugin:
        raise Conflict(f"instance {name!r} is a {inst.plugin} instance")
    old_secret: dict[str, str] = (
        json.loads(ctx.secrets.decrypt(inst.secrets)) if inst is not None else {}
    )
    plain = {k: v for k, v in given.items() if not fields[k].secret}
    secret = {**old_secret, **{k: v for k, v in given.items() if fields[k].secret}}
    for f in fields.values():
        if f.required and f.default is None and f.name not in plain and f.name not in secret:
            if f.operator_only and not operator:
                raise OperatorSetting(
                    f"plugin {plugin} needs its {f.kind} setting {f.name!r}, which only the "
                    "provider's administrators set: use an instance the provider offers"
                )
            raise ValidationError("settings", f"{f.name!r} is required")
    try:  # the plugin checks its own settings; its message must not echo secrets
        loader.instantiate(
            p.cls,
            {**{f.name: f.default or "" for f in fields.values()}, **plain, **secret},
            clock=ctx.clock,
        )
    except ConfigurationError as exc:
        raise ValidationError("settings", str(exc)) from None
    now = ctx.now()
    if inst is None:
        inst = PluginInstance(
            account_id=ctx.principal.account_id,
            plugin=plugin,
            name=name,
            created_at=now,
        )
        ctx.session.add(inst)
    inst.settings = json.dumps(plain, sort_keys=True)
    inst.secrets = ctx.secrets.encrypt(json.dumps(secret, sort_keys=True))
    inst.status = "active"
    inst.updated_at = now
    ctx.session.flush()
    # the audit entry names the changed settings, never their values
    audit.record(
        ctx,
        "plugin_instance",
        inst.id,
        ctx.principal.account_path,
        {"plugin": plugin, "name": name, "settings": sorted(given)},
    )
    return _info(inst)


def _get_instance(ctx: CallContext, instance_id: int) -> PluginInstance:
    row = ctx.session.execute(
        select(PluginInstance, Account.path)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"plugin instance {instance_id} not found")
    return row[0]  # type: ignore[no-any-return]


@operation("PluginInstanceList", roles=ADMIN | READERS)
def plugin_instance_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> PluginInstancePage:
    """Plugin instances of an account's subtree (default: the caller's)."""
    path = visible_path(ctx, account_id)
    q = (
        select(PluginInstance)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(Account.path.startswith(path, autoescape=True))
        .order_by(PluginInstance.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return PluginInstancePage([_info(i) for i in rows], total, offset, limit)


@operation("PluginInstanceGet", roles=ADMIN | READERS)
def plugin_instance_get(ctx: CallContext, *, instance_id: int) -> PluginInstanceInfo:
    """One plugin instance (secret settings: names only)."""
    return _info(_get_instance(ctx, instance_id))


@operation("PluginInstanceDisable", roles=ADMIN, mutating=True)
def plugin_instance_disable(ctx: CallContext, *, instance_id: int) -> PluginInstanceInfo:
    """Stop using an instance: no new payment methods or charges go through it.
    Pending charges are still reconciled."""
    inst = _get_instance(ctx, instance_id)
    inst.status = "disabled"
    inst.updated_at = ctx.now()
    audit.record(
        ctx, "plugin_instance", inst.id, ctx.principal.account_path, {"status": "disabled"}
    )
    return _info(inst)


# ---------------------------------------------------------------- payment methods


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


@operation("PaymentMethodAdd", roles=BILLING, idempotent=True)
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
        else _get_instance(ctx, instance_id)
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
    except PluginError as exc:
        raise Unavailable(f"the gateway cannot check the token: {type(exc).__name__}") from None
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


def _get_method(ctx: CallContext, method_id: int) -> tuple[StoredPaymentMethod, str]:
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
    m, path = _get_method(ctx, payment_method_id)
    m.status = "removed"
    m.token = ""
    m.is_default = False
    audit.record(ctx, "payment_method", m.id, path, {"status": "removed"})
    return True


@operation("PaymentMethodSetDefault", roles=BILLING, mutating=True)
def payment_method_set_default(ctx: CallContext, *, payment_method_id: int) -> PaymentMethodInfo:
    """Make a stored payment method its account's default (for auto-pay)."""
    m, path = _get_method(ctx, payment_method_id)
    _clear_default(ctx, m.account_id)
    m.is_default = True
    audit.record(ctx, "payment_method", m.id, path, {"is_default": True})
    return _method_info(m)


# ---------------------------------------------------------------- auto-pay


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


# ---------------------------------------------------------------- charges


def _charge_info(g: GatewayPayment) -> ChargeInfo:
    return ChargeInfo(
        id=g.id,
        account_id=g.account_id,
        invoice_id=g.invoice_id,
        payment_method_id=g.method_id,
        currency=g.currency,
        amount=money(g.amount, g.currency, "amount"),
        status=g.status,  # type: ignore[arg-type]
        decline_code=g.decline_code,
        message=g.message,
        gateway_reference=g.gateway_reference,
        payment_id=g.payment_id,
        refunded=money(g.refunded, g.currency, "refunded"),
        created_at=g.created_at,
    )


def _payment_event(
    ctx: CallContext,
    type: str,
    g: GatewayPayment,
    *,
    amount: Decimal | None = None,
    reason: str | None = None,
) -> None:
    """payment.succeeded / failed / refunded about a card charge, in the
    transaction that records it."""
    acc = ctx.session.get(Account, g.account_id)
    assert acc is not None
    events.emit(
        ctx,
        type,
        ("gateway_payment", g.id),
        {
            "payment_id": g.payment_id,
            "charge_id": g.id,
            "invoice_id": g.invoice_id,
            "amount": money(amount if amount is not None else g.amount, g.currency, "amount"),
            "currency": g.currency,
            "method": "card",
            "reason": reason,
        },
        account_id=acc.id,
        account_path=acc.path,
    )


def _record_decline(ctx: CallContext, g: GatewayPayment, code: str, message: str) -> None:
    g.status, g.decline_code, g.message = "declined", code[:64], message[:255]
    g.updated_at = ctx.now()
    _payment_event(ctx, "payment.failed", g, reason=g.decline_code)


def _record_capture(ctx: CallContext, g: GatewayPayment, reference: str) -> None:
    """Into the ledger through billing's offline-payment path, allocated to the
    invoice charged (or kept as prepaid credit). The money is recorded even if
    the invoice was paid or voided meanwhile (a late reconciliation): what it
    cannot settle stays on the account as credit."""
    if ctx.principal.account_id == g.account_id:
        # a customer paying its own invoice: its seller books the money (a
        # customer does not record payments to itself)
        acc = get_account(ctx, g.account_id)
        seller = billing.seller_of(ctx, acc)
        ctx = system_context(
            ctx.uow,
            ctx.clock,
            account_id=seller.id,
            account_path=seller.path,
            operation=ctx.operation or "PaymentCharge",
            secrets=ctx.secrets,
        )
    payable = False
    if g.invoice_id is not None:
        inv = billing.invoice_get(ctx, invoice_id=g.invoice_id)
        payable = inv.status in ("issued", "partially_paid", "overdue") and inv.outstanding > 0
    paid = billing.payment_record(
        ctx,
        account_id=g.account_id,
        amount=g.amount,
        method="card",
        reference=reference[:128],
        received_on=ctx.now().date(),
        invoice_ids=[g.invoice_id] if payable and g.invoice_id is not None else None,
        allocate=payable,
    )
    g.status = "captured"
    g.gateway_reference = reference
    g.payment_id = paid.id
    g.updated_at = ctx.now()
    _payment_event(ctx, "payment.succeeded", g)


@operation("PaymentCharge", roles=BILLING, mutating=True)
def payment_charge(
    ctx: CallContext,
    *,
    payment_method_id: int,
    idempotency_key: str,
    invoice_id: int | None = None,
    amount: Decimal | None = None,
) -> ChargeInfo:
    """Charge a stored payment method: an invoice's outstanding amount (or
    ``amount`` of it), or, without an invoice, ``amount`` as prepaid credit.

    A customer's own user (role billing) may pay its own invoices with its
    own stored methods; the payment is booked by its seller.

    ``idempotency_key`` (required) makes a repeat the same charge. Declined:
    fault ``Client.PaymentDeclined`` with the gateway's reason code, the
    invoice stays unpaid. No answer from the gateway: the charge is returned
    ``pending`` and the reconciliation job settles it."""
    if not 1 <= len(idempotency_key) <= 128 or not idempotency_key.isprintable():
        raise ValidationError("idempotency_key", "must be 1 to 128 printable characters")
    m, path = _get_method(ctx, payment_method_id)
    seen = ctx.session.scalar(
        select(GatewayPayment).where(
            GatewayPayment.account_id == m.account_id,
            GatewayPayment.client_key == idempotency_key,
        )
    )
    if seen is not None:
        if seen.method_id != m.id or seen.invoice_id != invoice_id:
            raise Conflict(f"idempotency key {idempotency_key!r} was used for another charge")
        if seen.status == "declined":
            raise PaymentDeclined(seen.decline_code or "declined", seen.message or "")
        return _charge_info(seen)
    acc = get_account(ctx, m.account_id)
    if invoice_id is not None:
        # one charge of an invoice at a time: lock it, and count charges still
        # pending against what is outstanding (two charges racing never both
        # take the full amount)
        ctx.session.get(Invoice, invoice_id, with_for_update=True, populate_existing=True)
        inv = billing.invoice_get(ctx, invoice_id=invoice_id)
        if inv.account_id != acc.id:
            raise ValidationError("invoice_id", "is not an invoice of the payment method's account")
        if inv.status not in ("issued", "partially_paid", "overdue"):
            raise InvalidState(f"invoice {invoice_id} is {inv.status}")
        inflight = ctx.session.scalar(
            select(func.coalesce(func.sum(GatewayPayment.amount), 0)).where(
                GatewayPayment.invoice_id == invoice_id, GatewayPayment.status == "pending"
            )
        )
        payable = inv.outstanding - money(inflight or 0, acc.currency, "amount")
        if payable <= 0:
            raise InvalidState(f"a charge of invoice {invoice_id} is pending; it settles first")
        amt = payable if amount is None else money(amount, acc.currency, "amount")
        if amt > payable:
            raise ValidationError(
                "amount", f"is more than the {payable} outstanding and not being charged"
            )
    else:
        if amount is None:
            raise ValidationError("amount", "is required without an invoice")
        amt = money(amount, acc.currency, "amount")
    if amt <= 0:
        raise ValidationError("amount", "must be positive")
    inst = ctx.session.get(PluginInstance, m.instance_id)
    assert inst is not None
    if inst.status != "active":
        raise InvalidState(f"plugin instance {inst.id} is disabled")
    gw = gateway_for(ctx.secrets, inst, ctx.clock)
    now = ctx.now()
    g = GatewayPayment(
        account_id=acc.id,
        invoice_id=invoice_id,
        method_id=m.id,
        instance_id=inst.id,
        client_key=idempotency_key,
        gateway_key=f"pba_{uuid.uuid4().hex}",
        currency=acc.currency,
        amount=amt,
        status="pending",
        refunded=Decimal(0),
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(g)
    ctx.session.flush()
    audit.record(ctx, "gateway_payment", g.id, path, {"amount": amt, "status": "pending"})
    ctx.uow.commit()  # the intent is durable before the gateway hears of it
    try:
        result = gw.charge(
            key=g.gateway_key,
            amount=amt,
            currency=acc.currency,
            token=m.token,
            description=f"payment {g.id}",
        )
    except CardDeclined as exc:
        _record_decline(ctx, g, exc.code, exc.message)
        ctx.uow.commit()
        raise PaymentDeclined(exc.code, exc.message) from None
    except (ConfigurationError, NotSupported) as exc:
        g.status, g.message = "error", f"{type(exc).__name__}: {exc}"[:255]
        g.updated_at = ctx.now()
        _payment_event(ctx, "payment.failed", g, reason=type(exc).__name__)
        ctx.uow.commit()
        return _charge_info(g)
    except Exception as exc:  # timeout or anything else: outcome unknown
        # the guard logged the plugin's detail (masked, traceback) under the ref in exc
        log.warning(
            "charge %s (instance %s): outcome unknown (%s: %s); left pending",
            g.id,
            inst.id,
            type(exc).__name__,
            exc,
        )
        g.message = f"outcome unknown: {type(exc).__name__}"
        g.updated_at = ctx.now()
        ctx.uow.commit()
        return _charge_info(g)
    if os.environ.get(CRASH_HOOK) == "1":
        os._exit(86)
    _record_capture(ctx, g, result.reference)
    return _charge_info(g)


@operation("PaymentChargeGet", roles=READERS)
def payment_charge_get(ctx: CallContext, *, charge_id: int) -> ChargeInfo:
    """One gateway charge and its state."""
    row = ctx.session.execute(
        select(GatewayPayment, Account.path)
        .join(Account, Account.id == GatewayPayment.account_id)
        .where(GatewayPayment.id == charge_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"charge {charge_id} not found")
    return _charge_info(row[0])


# ---------------------------------------------------------------- refunds


def _refund_info(r: GatewayRefund, currency: str) -> RefundInfo:
    return RefundInfo(
        id=r.id,
        charge_id=r.charge_id,
        amount=money(r.amount, currency, "amount"),
        reason=r.reason,
        status=r.status,  # type: ignore[arg-type]
        decline_code=r.decline_code,
        gateway_reference=r.gateway_reference,
        created_at=r.created_at,
    )


def _record_refund(ctx: CallContext, g: GatewayPayment, r: GatewayRefund, reference: str) -> None:
    assert g.payment_id is not None
    billing.payment_refund_entries(
        ctx, g.payment_id, r.amount, f"card refund {reference}: {r.reason}"[:255]
    )
    r.status, r.gateway_reference, r.updated_at = "refunded", reference[:128], ctx.now()
    _payment_event(ctx, "payment.refunded", g, amount=r.amount, reason=r.reason)


@operation("PaymentRefund", roles=BILLING, mutating=True)
def payment_refund(
    ctx: CallContext, *, charge_id: int, amount: Decimal, reason: str, idempotency_key: str
) -> RefundInfo:
    """Refund all or part of a captured charge, never more than is left. The
    ledger gives the money back; an invoice it paid becomes unpaid again by
    that much. A repeat with the same ``idempotency_key`` is the same refund.
    No answer from the gateway: ``pending``, settled by reconciliation."""
    if not 1 <= len(idempotency_key) <= 128 or not idempotency_key.isprintable():
        raise ValidationError("idempotency_key", "must be 1 to 128 printable characters")
    reason = reason.strip()
    if not 1 <= len(reason) <= 255:
        raise ValidationError("reason", "must be 1 to 255 characters")
    refuse_card_data("reason", reason)
    payment_charge_get(ctx, charge_id=charge_id)  # visible to the caller
    g = ctx.session.get(GatewayPayment, charge_id, with_for_update=True, populate_existing=True)
    assert g is not None
    seen = ctx.session.scalar(
        select(GatewayRefund).where(
            GatewayRefund.charge_id == g.id, GatewayRefund.client_key == idempotency_key
        )
    )
    if seen is not None:
        return _refund_info(seen, g.currency)
    if g.status != "captured":
        raise InvalidState(f"charge {g.id} is {g.status}, not captured")
    amt = money(amount, g.currency, "amount")
    if amt <= 0:
        raise ValidationError("amount", "must be positive")
    left = g.amount - g.refunded
    if amt > left:
        raise ValidationError(
            "amount", f"is more than the {money(left, g.currency, 'amount')} left to refund"
        )
    inst = ctx.session.get(PluginInstance, g.instance_id)
    assert inst is not None
    gw = gateway_for(ctx.secrets, inst, ctx.clock)
    now = ctx.now()
    r = GatewayRefund(
        charge_id=g.id,
        client_key=idempotency_key,
        gateway_key=f"pba_{uuid.uuid4().hex}",
        amount=amt,
        reason=reason,
        status="pending",
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(r)
    g.refunded += amt  # reserved while pending
    ctx.session.flush()
    path = get_account(ctx, g.account_id).path
    audit.record(ctx, "gateway_refund", r.id, path, {"charge": g.id, "amount": amt})
    ctx.uow.commit()  # the intent is durable before the gateway hears of it
    try:
        result = gw.refund(
            key=r.gateway_key, charge_reference=g.gateway_reference or "", amount=amt
        )
    except (RefundRejected, NotSupported) as exc:
        r.status = "rejected"
        r.decline_code = str(getattr(exc, "code", type(exc).__name__))[:64]
        g.refunded -= amt
        r.updated_at = ctx.now()
        ctx.uow.commit()
        raise InvalidState(f"the gateway refused the refund: {r.decline_code}") from None
    except Exception as exc:
        log.warning(
            "refund %s (instance %s): outcome unknown (%s: %s); left pending",
            r.id,
            inst.id,
            type(exc).__name__,
            exc,
        )
        ctx.uow.commit()
        return _refund_info(r, g.currency)
    _record_refund(ctx, g, r, result.reference)
    return _refund_info(r, g.currency)


# ---------------------------------------------------------------- reconciliation


def _system_ctx(uow: UnitOfWork, clock: Clock, box: SecretBox, owner: Account) -> CallContext:
    return system_context(
        uow,
        clock,
        account_id=owner.id,
        account_path=owner.path,
        operation="PaymentReconcile",
        secrets=box,
    )


def _reconcile_charge(uow: UnitOfWork, clock: Clock, box: SecretBox, g: GatewayPayment) -> str:
    inst = uow.session.get(PluginInstance, g.instance_id)
    assert inst is not None
    owner = uow.session.get(Account, inst.account_id)
    assert owner is not None
    ctx = _system_ctx(uow, clock, box, owner)
    try:
        found = gateway_for(box, inst, clock).lookup(key=g.gateway_key)
    except Exception as exc:
        log.warning("reconcile charge %s: %s: %s; still pending", g.id, type(exc).__name__, exc)
        return "pending"
    if found.status == "captured" and found.amount is not None and found.amount != g.amount:
        # never book another amount than the one asked for: a person looks
        log.error(
            "reconcile charge %s: plugin %s (instance %s) reports %s captured, not the %s "
            "asked for; left pending",
            g.id,
            inst.plugin,
            inst.id,
            found.amount,
            g.amount,
        )
        return "pending"
    if found.status == "captured":
        _record_capture(ctx, g, found.reference or g.gateway_key)
    else:
        _record_decline(ctx, g, found.decline_code or "not_found", g.message or "")
    return g.status


def _reconcile_refund(
    uow: UnitOfWork, clock: Clock, box: SecretBox, r: GatewayRefund
) -> str | None:
    charge = uow.session.get(GatewayPayment, r.charge_id)
    assert charge is not None
    inst = uow.session.get(PluginInstance, charge.instance_id)
    assert inst is not None
    owner = uow.session.get(Account, inst.account_id)
    assert owner is not None
    try:  # refunds are idempotent by key: asking again is asking what happened
        done = gateway_for(box, inst, clock).refund(
            key=r.gateway_key, charge_reference=charge.gateway_reference or "", amount=r.amount
        )
    except RefundRejected as exc:
        r.status, r.decline_code, r.updated_at = "rejected", exc.code[:64], clock.now()
        charge.refunded -= r.amount
    except Exception as exc:
        log.warning("reconcile refund %s: %s: %s; still pending", r.id, type(exc).__name__, exc)
        return None
    else:
        _record_refund(_system_ctx(uow, clock, box, owner), charge, r, done.reference)
    return r.status


def reconcile(
    uow: UnitOfWork, clock: Clock, *, older_than: timedelta = timedelta(minutes=2)
) -> str:
    """Ask the gateway, by our key, about every charge left pending: record a
    capture (once), a decline, or leave it pending if the gateway cannot tell
    yet. A key the gateway never saw means no money moved: declined."""
    if _box is None:
        return "not configured"
    box = _box
    cutoff = clock.now() - older_than
    pending: Sequence[GatewayPayment] = uow.session.scalars(
        select(GatewayPayment)
        .where(GatewayPayment.status == "pending", GatewayPayment.updated_at <= cutoff)
        .order_by(GatewayPayment.id)
        .with_for_update(skip_locked=True)
    ).all()
    counts: dict[str, int] = {}

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    for g in pending:
        # one savepoint per row: a row that fails to record stays pending and
        # is logged; the others are recorded
        try:
            with uow.session.begin_nested():
                count(_reconcile_charge(uow, clock, box, g))
        except Exception:
            log.exception("reconcile charge %s failed; still pending", g.id)
            count("failed")
    for r in uow.session.scalars(
        select(GatewayRefund)
        .where(GatewayRefund.status == "pending", GatewayRefund.updated_at <= cutoff)
        .order_by(GatewayRefund.id)
        .with_for_update(skip_locked=True)
    ).all():
        try:
            with uow.session.begin_nested():
                outcome = _reconcile_refund(uow, clock, box, r)
        except Exception:
            log.exception("reconcile refund %s failed; still pending", r.id)
            count("refund failed")
            continue
        if outcome is not None:
            count(f"refund {outcome}")
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing pending"


# ---------------------------------------------------------------- routing


def _rule_info(r: RoutingRule) -> RoutingRuleInfo:
    return RoutingRuleInfo(
        account_id=r.account_id,
        position=r.position,
        brand=r.brand,
        currency=r.currency,
        instance_id=r.instance_id,
    )


@operation("PaymentRoutingSet", roles=ADMIN, mutating=True)
def payment_routing_set(
    ctx: CallContext, *, rules: list[RoutingRuleInput] | None = None
) -> list[RoutingRuleInfo]:
    """Replace the caller's account's routing rules. For a new payment method
    of one of its customers, the first rule (in the order given) whose brand
    and currency match (empty matches any) names the gateway instance; with
    no match, the parent account's rules are asked, and so on up. No rules
    (omitted or empty) clears them."""
    rules = rules or []
    if len(rules) > 100:
        raise ValidationError("rules", "at most 100")
    for i, rule in enumerate(rules):
        inst = _get_instance(ctx, rule.instance_id)
        if inst.account_id != ctx.principal.account_id:
            owner = ctx.session.get(Account, inst.account_id)
            assert owner is not None
            if not ctx.principal.account_path.startswith(owner.path):
                raise ValidationError(f"rules[{i}].instance_id", "is not a gateway of yours")
        if rule.currency is not None and not re.fullmatch(r"[A-Z]{3}", rule.currency):
            raise ValidationError(f"rules[{i}].currency", "must be an ISO 4217 code")
    for old in ctx.session.scalars(
        select(RoutingRule).where(RoutingRule.account_id == ctx.principal.account_id)
    ):
        ctx.session.delete(old)
    ctx.session.flush()
    made = [
        RoutingRule(
            account_id=ctx.principal.account_id,
            position=i,
            brand=(rule.brand or "").strip().lower() or None,
            currency=rule.currency,
            instance_id=rule.instance_id,
        )
        for i, rule in enumerate(rules)
    ]
    ctx.session.add_all(made)
    ctx.session.flush()
    audit.record(
        ctx,
        "payment_routing",
        ctx.principal.account_id,
        ctx.principal.account_path,
        {"rules": [[r.brand, r.currency, r.instance_id] for r in made]},
    )
    return [_rule_info(r) for r in made]


@operation("PaymentRoutingList", roles=ADMIN | READERS)
def payment_routing_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> RoutingRulePage:
    """An account's routing rules in order (default: the caller's)."""
    acc = get_account(ctx, account_id if account_id is not None else ctx.principal.account_id)
    q = select(RoutingRule).where(RoutingRule.account_id == acc.id).order_by(RoutingRule.position)
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return RoutingRulePage([_rule_info(r) for r in rows], total, offset, limit)


def route(ctx: CallContext, customer: Account, brand: str, currency: str) -> PluginInstance:
    """The gateway instance for a customer's card: its sellers' rules, nearest first."""
    ids = [int(x) for x in customer.path.strip("/").split("/") if x][:-1]
    for seller_id in reversed(ids):
        for rule in ctx.session.scalars(
            select(RoutingRule)
            .where(RoutingRule.account_id == seller_id)
            .order_by(RoutingRule.position)
        ):
            if rule.brand not in (None, brand.strip().lower()):
                continue
            if rule.currency not in (None, currency):
                continue
            inst: PluginInstance | None = ctx.session.get(PluginInstance, rule.instance_id)
            if inst is not None and inst.status == "active":
                return inst
    raise ValidationError("instance_id", f"no routing rule for {brand} in {currency}: name one")
