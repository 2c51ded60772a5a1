"""Reconciliation: asking the gateway, by our key, what happened to charges
and refunds left pending (a crash, a timeout).

Two kinds of pending charge are recovered:

- one whose lease expired (:mod:`pba_server.core.leases`): the request that
  made it died (``kill -9``, a crash) -- asked about at once, by the
  ``payments-recover`` job every 15 s and by an order waiting on it;
- one with no lease: the gateway did not answer in time and the request gave
  up -- asked about once it is ``older_than`` (2 minutes), so that the gateway
  has settled a request it may still be working on, by ``payments-reconcile``.

A key the gateway never saw means no money moved: the charge is declined
with the code ``not_found`` (a caller may charge again with a new key). A
``not_found`` is taken as that only when it can be trusted: a charge whose
call was never sent (``sent_at`` is None: the process died before it) is
declined at once without asking; one whose call was sent is declined only if
the call started at least the gateway's ``lookup_settles_seconds`` ago (a
lookup that searches an index lagging behind writes, as Stripe's does, may
not see a charge made a moment ago). Before that the charge stays pending
and is asked about again at the next run: charging again with a new key
then could charge twice.

Refunds are recovered the same way: one whose lease expired at once (by
``payments-recover``), one nobody owns once it is ``older_than``. A refund
never sent (``sent_at`` is None: the request died before the call) moved no
money: it is rejected with ``not_found`` at once and its amount is free to be
refunded again. One that was sent is asked about by repeating the call with
the same key (the gateway's refunds are idempotent by key: a repeat answers
what the first call did, or makes it if it never arrived).

Public: :func:`reconcile` (the jobs), :func:`settle_charge` (one charge, for a
workflow that waits on it), :func:`lookup_settles`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.runtime import Runtime
from pba_server.payments.charges import (
    gateway_failed,
    record_capture,
    record_decline,
    record_refund,
    record_refund_rejected,
)
from pba_server.payments.models import GatewayPayment, GatewayRefund, PluginInstance
from pba_server.payments.plugins import gateway_for
from pba_server.sdk import MAX_LOOKUP_SETTLES, PaymentGateway, RefundRejected

log = logging.getLogger("pba.payments")

OLDER_THAN = timedelta(minutes=2)
NOT_FOUND = "not_found"  # the decline code of a key the gateway never saw


def _system_ctx(uow: UnitOfWork, runtime: Runtime, owner: Account) -> CallContext:
    return system_context(
        uow,
        runtime.clock,
        account_id=owner.id,
        account_path=owner.path,
        operation="PaymentReconcile",
        runtime=runtime,
    )


def lookup_settles(gw: PaymentGateway) -> timedelta:
    """How long after a charge call ``gw``'s ``not_found`` is "not yet
    known" (the SDK's ``lookup_settles_seconds``). A value that is not an int
    from 0 to the SDK's maximum counts as the maximum: waiting too long delays
    a retry, trusting too early may charge twice."""
    declared = getattr(gw, "lookup_settles_seconds", 0)
    if isinstance(declared, bool) or not isinstance(declared, int):
        declared = -1
    if not 0 <= declared <= MAX_LOOKUP_SETTLES:
        log.warning(
            "gateway %s declares lookup_settles_seconds=%r; taken as %d",
            type(gw).__name__,
            getattr(gw, "lookup_settles_seconds", None),
            MAX_LOOKUP_SETTLES,
        )
        declared = MAX_LOOKUP_SETTLES
    return timedelta(seconds=declared)


def _reconcile_charge(uow: UnitOfWork, runtime: Runtime, g: GatewayPayment) -> str:
    inst = uow.session.get(PluginInstance, g.instance_id)
    assert inst is not None
    owner = uow.session.get(Account, inst.account_id)
    assert owner is not None
    ctx = _system_ctx(uow, runtime, owner)
    if g.sent_at is None:  # the request died before the call: no money moved
        record_decline(ctx, g, NOT_FOUND, "never sent to the gateway")
        return g.status
    gw = gateway_for(runtime.secrets, inst, runtime.clock)
    try:
        found = gw.lookup(key=g.gateway_key)
    except Exception as exc:
        gateway_failed(f"reconcile charge {g.id}: lookup", inst, exc)
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
        record_capture(ctx, g, found.reference or g.gateway_key)
    elif found.status == "not_found" and runtime.clock.now() < g.sent_at + lookup_settles(gw):
        # the gateway's lookup may not show a charge made this recently
        log.info("reconcile charge %s: not found yet; still pending", g.id)
        return "pending"
    else:
        record_decline(ctx, g, found.decline_code or NOT_FOUND, g.message or "")
    return g.status


def _reconcile_refund(uow: UnitOfWork, runtime: Runtime, r: GatewayRefund) -> str | None:
    charge = uow.session.get(GatewayPayment, r.charge_id)
    assert charge is not None
    inst = uow.session.get(PluginInstance, charge.instance_id)
    assert inst is not None
    owner = uow.session.get(Account, inst.account_id)
    assert owner is not None
    ctx = _system_ctx(uow, runtime, owner)
    if r.sent_at is None:  # the request died before the call: no money moved
        record_refund_rejected(ctx, charge, r, NOT_FOUND)
        return r.status
    try:  # refunds are idempotent by key: asking again is asking what happened
        done = gateway_for(runtime.secrets, inst, runtime.clock).refund(
            key=r.gateway_key, charge_reference=charge.gateway_reference or "", amount=r.amount
        )
    except RefundRejected as exc:
        record_refund_rejected(ctx, charge, r, exc.code)
    except Exception as exc:
        gateway_failed(f"reconcile refund {r.id}", inst, exc)
        if r.lease_until is not None:  # nobody owns it now: the age threshold applies
            r.lease_until, r.updated_at = None, runtime.clock.now()
        return None
    else:
        record_refund(ctx, charge, r, done.reference)
    return r.status


def _refunds_due(runtime: Runtime, older_than: timedelta, expired_only: bool) -> Any:
    now = runtime.clock.now()
    lost = and_(GatewayRefund.lease_until.is_not(None), GatewayRefund.lease_until <= now)
    if expired_only:
        return lost
    unowned = and_(
        GatewayRefund.lease_until.is_(None), GatewayRefund.updated_at <= now - older_than
    )
    return or_(lost, unowned)


def _charges_due(runtime: Runtime, older_than: timedelta, expired_only: bool) -> Any:
    now = runtime.clock.now()
    lost = and_(GatewayPayment.lease_until.is_not(None), GatewayPayment.lease_until <= now)
    if expired_only:
        return lost
    unowned = and_(
        GatewayPayment.lease_until.is_(None), GatewayPayment.updated_at <= now - older_than
    )
    return or_(lost, unowned)


def reconcile(
    uow: UnitOfWork,
    runtime: Runtime,
    *,
    older_than: timedelta = OLDER_THAN,
    expired_only: bool = False,
) -> str:
    """Ask the gateway, by our key, about every charge left pending whose
    lease expired or that nobody owns and is ``older_than``: record a capture
    (once), a decline, or leave it pending if the gateway cannot tell yet;
    the same for refunds. ``expired_only``: only charges and refunds whose
    lease expired (the fast job)."""
    pending: Sequence[GatewayPayment] = uow.session.scalars(
        select(GatewayPayment)
        .where(
            GatewayPayment.status == "pending",
            _charges_due(runtime, older_than, expired_only),
        )
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
                count(_reconcile_charge(uow, runtime, g))
        except Exception:
            log.exception("reconcile charge %s failed; still pending", g.id)
            count("failed")
    for r in uow.session.scalars(
        select(GatewayRefund)
        .where(
            GatewayRefund.status == "pending",
            _refunds_due(runtime, older_than, expired_only),
        )
        .order_by(GatewayRefund.id)
        .with_for_update(skip_locked=True)
    ).all():
        try:
            with uow.session.begin_nested():
                outcome = _reconcile_refund(uow, runtime, r)
        except Exception:
            log.exception("reconcile refund %s failed; still pending", r.id)
            count("refund failed")
            continue
        if outcome is not None:
            count(f"refund {outcome}")
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing pending"


def settle_charge(uow: UnitOfWork, runtime: Runtime, charge_id: int) -> str | None:
    """Reconcile one pending charge now if its lease expired (its request
    died); the charge's status afterwards, or None if it is not ours to
    settle (not pending, still leased, or locked by someone settling it)."""
    g = uow.session.scalar(
        select(GatewayPayment)
        .where(
            GatewayPayment.id == charge_id,
            GatewayPayment.status == "pending",
            _charges_due(runtime, OLDER_THAN, expired_only=True),
        )
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if g is None:
        return None
    try:
        with uow.session.begin_nested():
            return _reconcile_charge(uow, runtime, g)
    except Exception:
        log.exception("settling charge %s failed; still pending", charge_id)
        return None
