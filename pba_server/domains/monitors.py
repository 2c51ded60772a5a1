"""The registrar balance monitor's settings: ``RegistrarBalanceMinimumSet``
and ``RegistrarMonitorList`` (the daily check itself is in :mod:`.jobs`).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.core.money import check_currency, money, quantize
from pba_server.core.operations import operation
from pba_server.domains.models import RegistrarMonitor
from pba_server.domains.types import RegistrarMonitorInfo, RegistrarMonitorPage
from pba_server.payments.models import PluginInstance
from pba_server.provisioning.models import Department
from pba_server.sdk import loader

ADMIN = frozenset({"admin"})


def _account_path(ctx: CallContext, account_id: int) -> str:
    acc = ctx.session.get(Account, account_id)
    assert acc is not None
    return str(acc.path)


def _monitor_info(m: RegistrarMonitor) -> RegistrarMonitorInfo:
    return RegistrarMonitorInfo(
        instance_id=m.instance_id,
        minimum=quantize(m.minimum, m.currency),
        currency=m.currency,
        updated_at=m.updated_at,
        last_balance=None if m.last_balance is None else quantize(m.last_balance, m.currency),
        last_checked_at=m.last_checked_at,
        last_error=m.last_error,
        alerted_on=m.alerted_on,
        department_id=m.department_id,
    )


@operation("RegistrarBalanceMinimumSet", roles=ADMIN, mutating=True)
def registrar_balance_minimum_set(
    ctx: CallContext,
    *,
    instance_id: int,
    minimum: Decimal,
    currency: str,
    department_id: int | None = None,
) -> RegistrarMonitorInfo:
    """Watch a registrar instance's prepaid balance: the daily monitor raises
    ``registrar.balance_low`` (at most once a day) while it is below
    ``minimum`` and opens a task to top it up (one at a time) for
    ``department_id`` -- a department of the instance's owner; empty: the
    owner's staff, no department. A minimum of 0 stops the warnings."""
    row = ctx.session.execute(
        select(PluginInstance, Account)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"plugin instance {instance_id} not found")
    inst, owner = row
    p = loader.plugins().get(inst.plugin)
    if p is None or p.info is None or p.info.kind != "domain_registrar":
        raise ValidationError("instance_id", f"instance {instance_id} is not a domain registrar")
    if "balance" not in p.info.capabilities:
        raise ValidationError("instance_id", f"plugin {inst.plugin} does not report a balance")
    cur = check_currency(currency)
    amount = money(minimum, cur, "minimum")
    if amount < 0:
        raise ValidationError("minimum", "must not be negative")
    if department_id is not None:
        dep = ctx.session.get(Department, department_id)
        if dep is None or not ctx.principal.sees(_account_path(ctx, dep.account_id)):
            raise NotFound(f"department {department_id} not found")
        if dep.account_id != inst.account_id:
            raise ValidationError(
                "department_id", "is not a department of the registrar instance's owner"
            )
    m = ctx.session.get(RegistrarMonitor, inst.id, with_for_update=True)
    old = (
        None
        if m is None
        else {"minimum": m.minimum, "currency": m.currency, "department_id": m.department_id}
    )
    if m is None:
        m = RegistrarMonitor(instance_id=inst.id)
        ctx.session.add(m)
    m.minimum, m.currency, m.updated_at = amount, cur, ctx.now()
    m.department_id = department_id
    ctx.session.flush()
    audit.record(
        ctx,
        "registrar_monitor",
        inst.id,
        owner.path,
        {
            "from": old,
            "to": {"minimum": amount, "currency": cur, "department_id": department_id},
        },
    )
    return _monitor_info(m)


@operation("RegistrarMonitorList", roles=ADMIN | frozenset({"billing", "readonly"}))
def registrar_monitor_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> RegistrarMonitorPage:
    """The balance monitors of the caller's subtree's registrar instances,
    with the balance seen last."""
    q = (
        select(RegistrarMonitor)
        .join(PluginInstance, PluginInstance.id == RegistrarMonitor.instance_id)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(Account.path.startswith(ctx.principal.account_path, autoescape=True))
        .order_by(RegistrarMonitor.instance_id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return RegistrarMonitorPage([_monitor_info(m) for m in rows], total, offset, limit)
