"""Gateway charges and refunds.

A charge follows habit 4: the pending row, with our own gateway key, is
committed before the gateway is called; the outcome is written after. While
the call runs the request renews the row's lease (``lease_until``); if the
process dies in between the lease expires and
:mod:`pba_server.payments.reconcile` asks the gateway by that key at once. If
the gateway does not answer, the lease is released and the row is
reconciled after ``older_than``. ``sent_at`` is committed just before the
call: a row without it never reached the gateway. A refund follows the same
steps with its own lease and ``sent_at``.

A gateway the server did not call (its threads busy, the request budget for
plugin calls used up, its circuit breaker open: :class:`~pba_server.sdk.
PluginBusy`) moved no money: the pending row is removed (its idempotency key
is free for the retry) and the caller gets ``Server.Busy``, never a decline.

Public: the operations, and for reconciliation :func:`record_capture`,
:func:`record_decline`, :func:`record_refund`, :func:`charge_info`."""

from __future__ import annotations

import logging
import os
import uuid
from decimal import Decimal

from sqlalchemy import func, select

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.billing import payments as billing_payments
from pba_server.billing.common import seller_of
from pba_server.billing.invoices import invoice_get
from pba_server.billing.models import Invoice
from pba_server.core import audit
from pba_server.core.carddata import refuse_card_data
from pba_server.core.context import CallContext, system_context
from pba_server.core.errors import (
    Busy,
    Conflict,
    InvalidState,
    NotFound,
    PaymentDeclined,
    ValidationError,
)
from pba_server.core.leases import LeaseKeeper, lease_until
from pba_server.core.logsafe import mask_secrets
from pba_server.core.money import money
from pba_server.core.operations import operation
from pba_server.payments.methods import get_method
from pba_server.payments.models import (
    GatewayPayment,
    GatewayRefund,
    PluginInstance,
)
from pba_server.payments.plugins import gateway_for
from pba_server.payments.roles import BILLING, READERS
from pba_server.payments.types import (
    ChargeInfo,
    RefundInfo,
)
from pba_server.sdk import (
    CardDeclined,
    ConfigurationError,
    NotSupported,
    PluginBusy,
    PluginError,
    RefundRejected,
)
from pba_server.sdk import guard as plugincall

log = logging.getLogger("pba.payments")

# Test hooks for the crash tests: die after the gateway captured and before
# our commit, or after the pending row is committed and before the gateway
# hears of it. Read at call time; never set in production.
CRASH_HOOK = "PBA_TEST_CRASH_AFTER_GATEWAY"
CRASH_BEFORE_HOOK = "PBA_TEST_CRASH_BEFORE_GATEWAY"
# the same two windows for a refund
REFUND_CRASH_HOOK = "PBA_TEST_CRASH_AFTER_REFUND"
REFUND_CRASH_BEFORE_HOOK = "PBA_TEST_CRASH_BEFORE_REFUND"


def gateway_failed(
    what: str, inst: PluginInstance, exc: BaseException, secrets: tuple[str, ...] = ()
) -> str:
    """Log a gateway call whose outcome is unknown, with the four things the
    operator needs: the message (masked), the plugin, the instance and the
    traceback. What the guard raised carries the correlation id of its own
    record (the plugin's traceback); anything else is logged here with its
    traceback. Returns the tenant's text: never the exception's class."""
    if isinstance(exc, PluginError):
        # the guard masked the message and logged the plugin's side under the ref in it
        log.warning(
            "%s: plugin %s (instance %s): outcome unknown: %s; left pending",
            what,
            inst.plugin,
            inst.id,
            mask_secrets(str(exc), secrets),
            exc_info=exc,
        )
        return mask_secrets(str(exc), secrets)
    return plugincall.unexpected(
        log, f"{what}: plugin {inst.plugin} (instance {inst.id})", exc, secrets
    )


def charge_info(g: GatewayPayment) -> ChargeInfo:
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


def record_decline(ctx: CallContext, g: GatewayPayment, code: str, message: str) -> None:
    g.status, g.decline_code, g.message = "declined", code[:64], message[:255]
    g.updated_at, g.lease_until = ctx.now(), None
    _payment_event(ctx, "payment.failed", g, reason=g.decline_code)


def record_capture(ctx: CallContext, g: GatewayPayment, reference: str) -> None:
    """Into the ledger through billing's offline-payment path, allocated to the
    invoice charged (or kept as prepaid credit). The money is recorded even if
    the invoice was paid or voided meanwhile (a late reconciliation): what it
    cannot settle stays on the account as credit."""
    if ctx.principal.account_id == g.account_id:
        # a customer paying its own invoice: its seller books the money (a
        # customer does not record payments to itself)
        acc = get_account(ctx, g.account_id)
        seller = seller_of(ctx, acc)
        ctx = system_context(
            ctx.uow,
            ctx.clock,
            account_id=seller.id,
            account_path=seller.path,
            operation=ctx.operation or "PaymentCharge",
            secrets=ctx.secrets,
            runtime=ctx.runtime,
        )
    payable = False
    if g.invoice_id is not None:
        inv = invoice_get(ctx, invoice_id=g.invoice_id)
        payable = inv.status in ("issued", "partially_paid", "overdue") and inv.outstanding > 0
    paid = billing_payments.payment_record(
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
    g.updated_at, g.lease_until = ctx.now(), None
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
    m, path = get_method(ctx, payment_method_id)
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
        return charge_info(seen)
    acc = get_account(ctx, m.account_id)
    if invoice_id is not None:
        # one charge of an invoice at a time: lock it, and count charges still
        # pending against what is outstanding (two charges racing never both
        # take the full amount)
        ctx.session.get(Invoice, invoice_id, with_for_update=True, populate_existing=True)
        inv = invoice_get(ctx, invoice_id=invoice_id)
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
        lease_until=lease_until(ctx.clock),  # ours while we are at the gateway
    )
    ctx.session.add(g)
    ctx.session.flush()
    audit.record(ctx, "gateway_payment", g.id, path, {"amount": amt, "status": "pending"})
    ctx.uow.commit()  # the intent is durable before the gateway hears of it
    if os.environ.get(CRASH_BEFORE_HOOK) == "1":
        os._exit(87)
    # durable before the call too: a row without it was never sent (recovery
    # declines it not_found at once); with it, a not_found from a lagging
    # lookup is trusted only lookup_settles_seconds later
    g.sent_at = ctx.now()
    ctx.uow.commit()
    bind = ctx.session.get_bind()
    try:
        with LeaseKeeper(bind, ctx.clock, GatewayPayment, g.id, GatewayPayment.status == "pending"):
            result = gw.charge(
                key=g.gateway_key,
                amount=amt,
                currency=acc.currency,
                token=m.token,
                description=f"payment {g.id}",
            )
    except PluginBusy as exc:  # not called: no money moved, the key is free again
        _not_called(ctx, g, inst, path, exc)
        raise Busy(
            f"the payment gateway is busy: nothing was charged; try again shortly "
            f"(with the same idempotency_key): {exc}"
        ) from None
    except CardDeclined as exc:
        record_decline(ctx, g, exc.code, exc.message)
        ctx.uow.commit()
        raise PaymentDeclined(exc.code, exc.message) from None
    except (ConfigurationError, NotSupported) as exc:
        g.status, g.message = "error", f"{type(exc).__name__}: {exc}"[:255]
        g.updated_at, g.lease_until = ctx.now(), None
        _payment_event(ctx, "payment.failed", g, reason=type(exc).__name__)
        ctx.uow.commit()
        return charge_info(g)
    except Exception as exc:  # timeout or anything else: outcome unknown
        why = gateway_failed(f"charge {g.id}", inst, exc)
        g.message = f"outcome unknown: {why}"[:255]
        g.updated_at = ctx.now()
        # no worker owns it now: reconciled after the age threshold, which
        # gives the gateway time to settle a request it may still be working on
        g.lease_until = None
        ctx.uow.commit()
        return charge_info(g)
    if os.environ.get(CRASH_HOOK) == "1":
        os._exit(86)
    record_capture(ctx, g, result.reference)
    return charge_info(g)


def _not_called(
    ctx: CallContext, g: GatewayPayment, inst: PluginInstance, path: str, exc: PluginBusy
) -> None:
    """The gateway was not called for charge ``g``: drop the pending row."""
    log.warning(
        "charge %s: plugin %s (instance %s) not called: %s; removed",
        g.id,
        inst.plugin,
        inst.id,
        exc,
    )
    audit.record(ctx, "gateway_payment", g.id, path, {"status": "not called (gateway busy)"})
    ctx.session.delete(g)
    ctx.uow.commit()


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
    return charge_info(row[0])


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


def record_refund(ctx: CallContext, g: GatewayPayment, r: GatewayRefund, reference: str) -> None:
    assert g.payment_id is not None
    billing_payments.payment_refund_entries(
        ctx, g.payment_id, r.amount, f"card refund {reference}: {r.reason}"[:255]
    )
    r.status, r.gateway_reference, r.updated_at = "refunded", reference[:128], ctx.now()
    r.lease_until = None
    _payment_event(ctx, "payment.refunded", g, amount=r.amount, reason=r.reason)


def record_refund_rejected(
    ctx: CallContext, g: GatewayPayment, r: GatewayRefund, code: str
) -> None:
    """No money moved: the refund is rejected and its reservation released."""
    r.status, r.decline_code = "rejected", code[:64]
    r.updated_at, r.lease_until = ctx.now(), None
    g.refunded -= r.amount


@operation("PaymentRefund", roles=BILLING, mutating=True)
def payment_refund(
    ctx: CallContext, *, charge_id: int, amount: Decimal, reason: str, idempotency_key: str
) -> RefundInfo:
    """Refund all or part of a captured charge, never more than is left. The
    ledger gives the money back; an invoice it paid becomes unpaid again by
    that much. A repeat with the same ``idempotency_key`` is the same refund.
    No answer from the gateway: ``pending``, settled by reconciliation."""
    # the gateway not called (busy, circuit open): Server.Busy, nothing
    # refunded, the key free for the retry (docs/api.md; the docstring is
    # the WSDL's documentation, kept as released)
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
        lease_until=lease_until(ctx.clock),  # ours while we are at the gateway
    )
    ctx.session.add(r)
    g.refunded += amt  # reserved while pending
    ctx.session.flush()
    path = get_account(ctx, g.account_id).path
    audit.record(ctx, "gateway_refund", r.id, path, {"charge": g.id, "amount": amt})
    ctx.uow.commit()  # the intent is durable before the gateway hears of it
    if os.environ.get(REFUND_CRASH_BEFORE_HOOK) == "1":
        os._exit(88)
    r.sent_at = ctx.now()  # as for a charge: a row without it was never sent
    ctx.uow.commit()
    bind = ctx.session.get_bind()
    try:
        with LeaseKeeper(bind, ctx.clock, GatewayRefund, r.id, GatewayRefund.status == "pending"):
            result = gw.refund(
                key=r.gateway_key, charge_reference=g.gateway_reference or "", amount=amt
            )
    except PluginBusy as exc:  # not called: nothing refunded, the key is free again
        log.warning(
            "refund %s: plugin %s (instance %s) not called: %s; removed",
            r.id,
            inst.plugin,
            inst.id,
            exc,
        )
        audit.record(ctx, "gateway_refund", r.id, path, {"status": "not called (gateway busy)"})
        g.refunded -= amt
        ctx.session.delete(r)
        ctx.uow.commit()
        raise Busy(
            f"the payment gateway is busy: nothing was refunded; try again shortly "
            f"(with the same idempotency_key): {exc}"
        ) from None
    except (RefundRejected, NotSupported) as exc:
        record_refund_rejected(ctx, g, r, str(getattr(exc, "code", type(exc).__name__)))
        ctx.uow.commit()
        raise InvalidState(f"the gateway refused the refund: {r.decline_code}") from None
    except Exception as exc:
        gateway_failed(f"refund {r.id}", inst, exc)
        # no worker owns it now: reconciled after the age threshold
        r.updated_at, r.lease_until = ctx.now(), None
        ctx.uow.commit()
        return _refund_info(r, g.currency)
    if os.environ.get(REFUND_CRASH_HOOK) == "1":
        os._exit(89)
    record_refund(ctx, g, r, result.reference)
    return _refund_info(r, g.currency)
