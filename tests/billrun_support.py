"""Builders for the billing run tests: a plan with a metered resource,
customers and subscriptions made with new_subscription (no orders)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from pba_server.billing import run as billing_run
from pba_server.billing.models import Invoice, InvoiceLine
from pba_server.billing.ports import RenewalOrders
from pba_server.catalog.models import PlanVersion
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import PlanPeriod, ResourceRate, TemplateResource
from pba_server.core.db import UnitOfWork
from pba_server.subscriptions.models import Subscription
from pba_server.subscriptions.store import new_subscription
from tests.catalog_support import service_ctx


@dataclass
class Catalog:
    plan_id: int
    version_id: int
    disk: int  # resource id: GB, 10 included, overage 0.50 / GB / month


def make_plan(
    env: Any,
    *,
    login: str = "admin",
    name: str = "Hosting M",
    recurring: str = "10.00",
    renewal: str = "0",
    auto_renew: bool = True,
    tax_inclusive: bool = False,
    unit_recurring: str = "2.00",
    resource_name: str = "Disk",
) -> Catalog:
    with service_ctx(env, login) as ctx:
        r = resource_create(ctx, name=resource_name, unit="GB", kind="allocated")
        t = service_template_create(
            ctx,
            name=f"T {name}",
            service_type="hosting",
            module="manual",
            resources=[TemplateResource(r.id, Decimal(10))],
            shared_with_resellers=True,
        )
        p = plan_create(
            ctx,
            template_id=t.id,
            name=name,
            periods=[
                PlanPeriod(1, "month", Decimal(0), Decimal(recurring), Decimal(renewal)),
                PlanPeriod(1, "year", Decimal(0), Decimal(recurring) * 10, Decimal(renewal)),
            ],
            rates=[
                ResourceRate(
                    r.id,
                    Decimal(10),
                    unit_recurring_price=Decimal(unit_recurring),
                    overage_price=Decimal("0.50"),
                )
            ],
            auto_renew=auto_renew,
            tax_inclusive=tax_inclusive,
        )
        plan_publish(ctx, plan_id=p.id)
        vid = ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == p.id))
        return Catalog(p.id, int(vid), r.id)


def subscribe(
    env: Any,
    cat: Catalog,
    account_id: int,
    vendor_id: int,
    start: date,
    *,
    unit: str = "month",
    bought: dict[int, Decimal] | None = None,
    promotion_id: int | None = None,
    promotion_cycles: int | None = None,
) -> int:
    with UnitOfWork(env.app.engine) as uow:
        s = new_subscription(
            uow.session,
            env.clock,
            account_id=account_id,
            vendor_id=vendor_id,
            plan_version_id=cat.version_id,
            period_count=1,
            period_unit=unit,
            start=start,
            bought=bought,
            promotion_id=promotion_id,
            promotion_cycles=promotion_cycles,
        )
        uow.commit()
        return int(s.id)


def at(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 6, 0, tzinfo=UTC)


def run(env: Any, as_of: date, **kw: Any) -> billing_run.RunSummary:
    env.clock.freeze(at(as_of))
    renewals = env.app.runtime.port(RenewalOrders)
    return billing_run.run(env.app.engine, env.clock, as_of=as_of, renewals=renewals, **kw)


def invoices(env: Any, account_id: int | None = None) -> list[tuple[Invoice, list[InvoiceLine]]]:
    with UnitOfWork(env.app.engine) as uow:
        q = select(Invoice).order_by(Invoice.id)
        if account_id is not None:
            q = q.where(Invoice.account_id == account_id)
        out = []
        for inv in uow.session.scalars(q):
            lines = list(
                uow.session.scalars(
                    select(InvoiceLine)
                    .where(InvoiceLine.invoice_id == inv.id)
                    .order_by(InvoiceLine.position)
                )
            )
            out.append((inv, lines))
        uow.commit()
        return out


def sub(env: Any, sub_id: int) -> Subscription:
    with UnitOfWork(env.app.engine) as uow:
        s = uow.session.get(Subscription, sub_id)
        assert s is not None
        uow.commit()
        return s


def line_key(lines: list[InvoiceLine]) -> list[tuple[str, Decimal, Decimal]]:
    return [(ln.description, ln.total, ln.tax) for ln in lines]
