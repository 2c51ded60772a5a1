"""Daily jobs of the domains feature (declared by :func:`jobs`).

- ``domains-expiry``: raises ``domain.expiring`` for each live domain that
  expires within ``domain_expiry_notice_days`` (setting, default 30), once per
  domain and expiry date (a renewal moves the date: the next one is warned
  about again); marks domains past their expiry date ``expired``.
- ``registrar-balance``: asks each watched registrar instance
  (``RegistrarBalanceMinimumSet``) for its balance; below the minimum it
  raises ``registrar.balance_low`` at most once a day and opens a task
  (kind ``registrar_balance``, event ``task.opened``) for the monitor's
  department -- one at a time per instance.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.config import Settings
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.core.jobs import JobSpec
from pba_server.core.money import quantize
from pba_server.core.runtime import Runtime
from pba_server.domains.models import Domain, RegistrarMonitor
from pba_server.events import emit
from pba_server.payments.models import PluginInstance
from pba_server.sdk import PluginError
from pba_server.sdk import guard as plugincall
from pba_server.sdk.registrar import Balance

log = logging.getLogger("pba.domains")

EXPIRY_NOTICE_DAYS = 30  # the setting's default


def jobs(settings: Settings) -> list[JobSpec]:
    notice = max(0, settings.domain_expiry_notice_days)
    return [
        JobSpec(
            "domains-expiry",
            timedelta(days=1),
            lambda j: expiry(j.uow, j.clock, j.runtime, days=notice),
        ),
        JobSpec(
            "registrar-balance",
            timedelta(days=1),
            lambda j: registrar_balance(j.uow, j.clock, j.runtime),
        ),
    ]


def expiry(
    uow: UnitOfWork, clock: Clock, runtime: Runtime, *, days: int = EXPIRY_NOTICE_DAYS
) -> str:
    notice = days
    today = clock.now().date()
    horizon = today + timedelta(days=notice)
    rows = uow.session.execute(
        select(Domain, Account)
        .join(Account, Account.id == Domain.account_id)
        .where(
            Domain.status.in_(("active", "expired")),
            Domain.expires_on.is_not(None),
            Domain.expires_on <= horizon,
        )
        .order_by(Domain.id)
        .with_for_update(of=Domain, skip_locked=True)
    ).all()
    warned = expired = 0
    for d, acc in rows:
        assert d.expires_on is not None
        if d.expires_on < today and d.status == "active":
            d.status = "expired"
            d.updated_at = clock.now()
            expired += 1
        if d.expires_on >= today and d.expiry_notice_for != d.expires_on:
            ctx = system_context(
                uow,
                clock,
                account_id=acc.id,
                account_path=acc.path,
                operation="domains-expiry",
                runtime=runtime,
            )
            emit(
                ctx,
                "domain.expiring",
                ("domain", d.id),
                {
                    "domain": d.name,
                    "subscription_id": d.subscription_id,
                    "expires_on": d.expires_on,
                    "days_left": (d.expires_on - today).days,
                },
                account_id=acc.id,
                account_path=acc.path,
            )
            d.expiry_notice_for = d.expires_on
            warned += 1
    return f"{warned} domain(s) expiring within {notice} days warned about, {expired} expired"


def _balance_low_task(ctx: CallContext, instance: PluginInstance, balance: Balance) -> None:
    """A task to top the balance up, for the department set on the instance's
    monitor (else the owner's staff): at most one open task per instance --
    while one is open or assigned, no second is opened."""
    from pba_server.provisioning.api import open_task

    m = ctx.session.get(RegistrarMonitor, instance.id)
    assert m is not None
    task_id, new = open_task(
        ctx,
        kind="registrar_balance",
        owner_id=instance.account_id,
        subject=f"top up the balance at registrar {instance.name} ({instance.plugin})"[:255],
        reason=(
            f"balance {quantize(Decimal(balance.amount), m.currency)} {m.currency} is below "
            f"the minimum {quantize(m.minimum, m.currency)} {m.currency}"
        ),
        department_id=m.department_id,
        instance_id=instance.id,
    )
    if new:
        log.info("registrar %s: balance low, task %s opened", instance.id, task_id)


def registrar_balance(uow: UnitOfWork, clock: Clock, runtime: Runtime) -> str:
    from pba_server.domains.registrars import registrar_for

    box = runtime.secrets
    today = clock.now().date()
    rows = uow.session.execute(
        select(RegistrarMonitor, PluginInstance, Account)
        .join(PluginInstance, PluginInstance.id == RegistrarMonitor.instance_id)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.status == "active")
        .order_by(RegistrarMonitor.instance_id)
        .with_for_update(of=RegistrarMonitor, skip_locked=True)
    ).all()
    low = checked = failed = 0
    for m, inst, owner in rows:
        now = clock.now()
        m.last_checked_at = now
        try:
            balance = registrar_for(box, inst, clock).get_balance()
        except PluginError as exc:  # the guard masked it (or made it generic, with a ref)
            m.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning(
                "registrar %s (instance %s) balance: %s", inst.plugin, inst.id, m.last_error
            )
            failed += 1
            continue
        except Exception as exc:
            m.last_error = plugincall.unexpected(
                log, f"the balance of registrar {inst.plugin} (instance {inst.id})", exc
            )[:2000]
            failed += 1
            continue
        checked += 1
        if balance.currency.upper() != m.currency:
            m.last_error = (
                f"the registrar reports {balance.currency}, the minimum is in {m.currency}"
            )
            failed += 1
            continue
        m.last_balance, m.last_error = Decimal(balance.amount), None
        if m.minimum <= 0 or balance.amount >= m.minimum or m.alerted_on == today:
            continue
        ctx = system_context(
            uow,
            clock,
            account_id=owner.id,
            account_path=owner.path,
            operation="registrar-balance",
            runtime=runtime,
        )
        emit(
            ctx,
            "registrar.balance_low",
            ("plugin_instance", inst.id),
            {
                "registrar": inst.plugin,
                "balance": quantize(Decimal(balance.amount), m.currency),
                "minimum": quantize(m.minimum, m.currency),
                "currency": m.currency,
            },
            account_id=owner.id,
            account_path=owner.path,
        )
        _balance_low_task(ctx, inst, balance)
        m.alerted_on = today
        low += 1
    return f"{checked} registrar balance(s) checked, {low} low, {failed} failed"
