"""What the billing run reads: the shared :class:`~.data.RunData` (accounts,
catalog, tax rules, wholesale prices, plan migrations), filled as batches
need it, and one batch's due subscriptions with their resources and usage
(:func:`read_batch`) for :func:`pba_server.billing.run.plan.plan_batch`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account, Contact
from pba_server.billing.models import TaxRule
from pba_server.billing.ports import RenewalOrders
from pba_server.billing.run.data import (
    SUB_COLUMNS,
    Acc,
    PeriodPrice,
    PlanData,
    Res,
    ResellerPriceData,
    Rule,
    RunData,
    SubRow,
    Wholesale,
    WholesalePriceData,
)
from pba_server.billing.run.plan import BatchInput
from pba_server.billing.run.sql import in_ids
from pba_server.catalog import pricing
from pba_server.catalog.models import (
    Plan,
    PlanMigration,
    PlanPeriodRow,
    PlanRateRow,
    PlanVersion,
    Promotion,
    ResellerPrice,
    Resource,
    WholesalePrice,
)
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.usage.models import UsageRecord

ZERO = Decimal(0)


def load_accounts(session: Session, data: RunData, ids: Iterable[int]) -> None:
    """``ids`` and all their ancestors into ``data.accounts``."""
    want = {i for i in ids if i not in data.accounts}
    if not want:
        return
    rows = session.execute(
        select(
            Account.id,
            Account.type,
            Account.parent_id,
            Account.path,
            Account.currency,
            Account.partner_level,
            Account.tax_id,
            Account.country,
            Account.status,
        ).where(Account.id.in_(want))
    )
    for r in rows:
        data.accounts[r.id] = Acc(*r)
    parents = {a for i in want if i in data.accounts for a in data.accounts[i].ancestors()}
    load_accounts(session, data, parents)


def sellers_of(session: Session, account_ids: Iterable[int]) -> dict[int, Acc | None]:
    """Each account's seller (its nearest provider or reseller ancestor), or
    None; accounts that do not exist are left out."""
    data = RunData()
    ids = list(account_ids)
    load_accounts(session, data, ids)
    return {a: data.seller_of(data.accounts[a]) for a in ids if a in data.accounts}


def load_catalog(session: Session, data: RunData, subs: Sequence[Any]) -> None:
    """The plans, versions, period prices, promotions and reseller price lists
    of ``subs`` (their accounts already loaded)."""
    plan_ids = {s.plan_id for s in subs} - set(data.plans)
    if plan_ids:
        for p in session.execute(
            select(Plan.id, Plan.owner_id, Plan.name, Plan.currency).where(Plan.id.in_(plan_ids))
        ):
            data.plans[p.id] = PlanData(*p)
    vids = {s.plan_version_id for s in subs} - set(data.versions)
    if vids:
        for vid, incl in session.execute(
            select(PlanVersion.id, PlanVersion.tax_inclusive).where(PlanVersion.id.in_(vids))
        ):
            data.versions[vid] = bool(incl)
        for r in session.scalars(select(PlanPeriodRow).where(PlanPeriodRow.version_id.in_(vids))):
            data.periods[(r.version_id, r.count, r.unit)] = PeriodPrice(
                r.setup_fee, r.recurring_fee, r.renewal_fee
            )
    promo_ids = {s.promotion_id for s in subs if s.promotion_id} - set(data.promotions)
    if promo_ids:
        for pr in session.scalars(select(Promotion).where(Promotion.id.in_(promo_ids))):
            data.promotions[pr.id] = pricing.Discount(
                percent=pr.percent,
                amount=pr.amount,
                on_setup=pr.on_setup,
                on_recurring=pr.on_recurring,
                cycles=None,  # the subscription counts its cycles left
            )
    sellers = {a for a in (data.price_list_of(data.accounts[s.account_id]) for s in subs) if a}
    for rid in {a.id for a in sellers} - set(data.reseller_prices):
        data.reseller_prices[rid] = {
            (p.plan_id, p.period_count, p.period_unit): ResellerPriceData(
                p.id, p.setup_fee, p.recurring_fee, p.renewal_fee, p.tax_inclusive
            )
            for p in session.scalars(select(ResellerPrice).where(ResellerPrice.reseller_id == rid))
        }


def load_resources(session: Session, data: RunData, ids: Iterable[int]) -> None:
    want = set(ids) - set(data.resources)
    if want:
        for rid, name, unit in session.execute(
            select(Resource.id, Resource.name, Resource.unit).where(Resource.id.in_(want))
        ):
            data.resources[rid] = (name, unit)


def load_tax_rules(session: Session, data: RunData, issuer_ids: Iterable[int]) -> None:
    for issuer_id in set(issuer_ids) - set(data.tax_rules):
        data.tax_rules[issuer_id] = [
            Rule(r.id, r.name, r.buyer_country, r.buyer_region, r.rate, r.reverse_charge)
            for r in session.scalars(
                select(TaxRule).where(TaxRule.seller_id == issuer_id, TaxRule.active.is_(True))
            )
        ]


def load_wholesale(session: Session, data: RunData, reseller_ids: Iterable[int]) -> None:
    for reseller_id in set(reseller_ids) - set(data.wholesale):
        prices: Wholesale = ({}, {})
        for w in session.scalars(
            select(WholesalePrice).where(WholesalePrice.reseller_id == reseller_id)
        ):
            if w.plan_id is not None:
                prices[0][w.plan_id] = WholesalePriceData(w.recurring_fee, w.currency)
            elif w.resource_id is not None:
                prices[1][w.resource_id] = WholesalePriceData(w.recurring_fee, w.currency)
        data.wholesale[reseller_id] = prices


def migration_targets(session: Session, data: RunData, subs: Sequence[SubRow]) -> dict[int, int]:
    """Subscription id -> the plan version id it renews at, for subscriptions
    whose plan has a scheduled subscriber migration from their version (the
    chain of requests followed as :func:`pba_server.catalog.plan_migrations.renewal_version`
    does). A couple of small queries per batch; none when no plan has one."""
    want = {s.plan_id for s in subs} - set(data.migrations)
    if want:
        for pid in want:
            data.migrations[pid] = {}
        for pid, frm, to in session.execute(
            select(
                PlanMigration.plan_id, PlanMigration.from_version, PlanMigration.to_version
            ).where(PlanMigration.plan_id.in_(want))
        ):
            data.migrations[pid][frm] = to
    moving = [s for s in subs if data.migrations.get(s.plan_id)]
    if not moving:
        return {}
    pids = {s.plan_id for s in moving if s.plan_version_id not in data.version_number}
    if pids:
        for vid, pid, num in session.execute(
            select(PlanVersion.id, PlanVersion.plan_id, PlanVersion.version).where(
                PlanVersion.plan_id.in_(pids)
            )
        ):
            data.version_number[vid] = (pid, num)
            data.version_id[(pid, num)] = vid
    out: dict[int, int] = {}
    for s in moving:
        pid, num = data.version_number[s.plan_version_id]
        chain, seen = data.migrations[pid], {num}
        while num in chain and chain[num] not in seen:
            num = chain[num]
            seen.add(num)
        target = data.version_id.get((pid, num))
        if target is not None and target != s.plan_version_id:
            out[s.id] = target
    new = set(out.values()) - set(data.version_rates)
    if new:
        for vid in new:
            data.version_rates[vid] = []
        for r in session.scalars(
            select(PlanRateRow)
            .where(PlanRateRow.version_id.in_(new))
            .order_by(PlanRateRow.version_id, PlanRateRow.resource_id)
        ):
            data.version_rates[r.version_id].append(
                (r.resource_id, r.included, r.unit_recurring_price, r.overage_price)
            )
        load_catalog(
            session,
            data,
            [s._replace(plan_version_id=out[s.id]) for s in moving if out.get(s.id) in new],
        )
    return out


def read_batch(
    session: Session,
    data: RunData,
    account_ids: Sequence[int],
    as_of: date,
    now: datetime,
    renewals: RenewalOrders,
) -> BatchInput:
    """The claimed customers' due subscriptions and everything their plan
    needs; fills ``data`` with what the batch adds (accounts, catalog, the
    issuers' tax rules and wholesale prices). A subscription with a manual
    renewal order in flight (``renewals``) is left to that order."""
    load_accounts(session, data, account_ids)
    t = Subscription.__table__
    assert isinstance(t, Table)
    q = (
        select(*(t.c[name] for name in SUB_COLUMNS))
        .where(
            in_ids(session, t.c.account_id, account_ids),
            t.c.status == "active",
            t.c.next_billing_date <= as_of,
            ~renewals.in_flight(t.c.id),
        )
        .order_by(t.c.account_id, t.c.id)
    )
    # no row locks: the customers are claimed (locked) by this batch, and the
    # update checks that no subscription changed since it was read
    subs = [SubRow(*r) for r in session.execute(q)]
    batch = BatchInput(as_of, now, subs, {}, {}, {}, {}, {}, {})
    if not subs:
        return batch
    sub_ids = [s.id for s in subs]
    load_catalog(session, data, subs)
    migrate = migration_targets(session, data, subs)
    res_rows: dict[int, list[Res]] = defaultdict(list)
    rt = SubscriptionResource.__table__
    assert isinstance(rt, Table)
    for sid, *rest in session.execute(
        select(
            rt.c.subscription_id,
            rt.c.resource_id,
            rt.c.included,
            rt.c.bought,
            rt.c.unit_recurring_price,
            rt.c.overage_price,
        ).where(in_ids(session, rt.c.subscription_id, sub_ids))
    ).all():
        res_rows[sid].append(Res(*rest))
    load_resources(session, data, {r.resource_id for rs in res_rows.values() for r in rs})
    # unbilled usage, by record (ids are marked billed; later arrivals stay unbilled)
    unbilled: dict[tuple[int, int, date], Decimal] = defaultdict(lambda: ZERO)
    unbilled_ids: dict[tuple[int, date], list[int]] = defaultdict(list)
    for uid, sid, rid, ps, qty in session.execute(
        select(
            UsageRecord.id,
            UsageRecord.subscription_id,
            UsageRecord.resource_id,
            UsageRecord.period_start,
            UsageRecord.quantity,
        ).where(
            UsageRecord.billed.is_(False), in_ids(session, UsageRecord.subscription_id, sub_ids)
        )
    ).all():
        unbilled[(sid, rid, ps)] += qty
        unbilled_ids[(sid, ps)].append(uid)
    usage_by_sub: dict[int, list[tuple[int, date, Decimal]]] = defaultdict(list)
    for (sid, rid, ps), qty in sorted(unbilled.items()):
        usage_by_sub[sid].append((rid, ps, qty))
    by_sub_start = {s.id: s.period_start for s in subs}
    late_pairs = [(sid, ps) for (sid, ps) in unbilled_ids if ps < by_sub_start[sid]]
    billed_before: dict[tuple[int, int, date], Decimal] = defaultdict(lambda: ZERO)
    if late_pairs:
        for sid, rid, ps, qty in session.execute(
            select(
                UsageRecord.subscription_id,
                UsageRecord.resource_id,
                UsageRecord.period_start,
                func.sum(UsageRecord.quantity),
            )
            .where(
                UsageRecord.billed.is_(True),
                tuple_(UsageRecord.subscription_id, UsageRecord.period_start).in_(late_pairs),
            )
            .group_by(
                UsageRecord.subscription_id, UsageRecord.resource_id, UsageRecord.period_start
            )
        ):
            billed_before[(sid, rid, ps)] = Decimal(qty)
    regions: dict[int, str] = {}
    for aid, state in session.execute(
        select(Contact.account_id, Contact.state)
        .where(in_ids(session, Contact.account_id, account_ids))
        .order_by(Contact.account_id, Contact.id.desc())
    ):
        regions[aid] = (state or "").strip()  # the last wins: the first contact by id
    issuers = {data.seller_of(data.accounts[s.account_id]) for s in subs}
    load_tax_rules(session, data, {i.id for i in issuers if i is not None})
    load_wholesale(
        session,
        data,
        {
            i.id
            for i in issuers
            if i is not None and i.type == "reseller" and i.partner_level == "advanced"
        },
    )
    return BatchInput(
        as_of,
        now,
        subs,
        dict(res_rows),
        dict(usage_by_sub),
        dict(unbilled_ids),
        dict(billed_before),
        regions,
        migrate,
    )
