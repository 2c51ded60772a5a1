"""Usage operations: report metered usage (one record or thousands), read a
period's usage; threshold events at 80 % and 100 % of the included amount.

A record belongs to the subscription period its timestamp falls in. Records
are never double counted: ``record_id`` is unique per subscription (a
repeated report is ignored and counted as a duplicate). The billing run bills
a period's usage above the included plus bought amount as overage when the
period ends; records arriving after that are billed on the next invoice as a
late line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pba_server import events
from pba_server.accounts.models import Account
from pba_server.catalog import pricing
from pba_server.catalog.models import Resource
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, NotFound, ValidationError
from pba_server.core.money import quantize, to_decimal
from pba_server.core.operations import operation
from pba_server.core.schema import MinLen
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods
from pba_server.usage.models import UsageRecord, UsageThreshold
from pba_server.usage.ports import BilledPeriods
from pba_server.usage.types import (
    ResourceUsageInfo,
    UsageInfo,
    UsageRecordInput,
    UsageReportResult,
)

REPORTERS = frozenset({"billing", "technical"})
READERS = frozenset({"billing", "sales", "support", "technical", "readonly"})
MAX_BATCH = 10_000
CHUNK = 1000
THRESHOLDS = (80, 100)
CLOCK_SKEW = timedelta(minutes=5)
MAX_QUANTITY = Decimal("1e14")
ZERO = Decimal(0)


def period_of(sub: Any, day: date) -> date | None:
    """Start of the subscription period ``day`` falls in; None before it started."""
    if day < sub.started_on:
        return None
    start, end = sub.period_start, sub.period_end
    for _ in range(10_000):
        if start <= day < end:
            return start  # type: ignore[no-any-return]
        if day < start:
            end = start
            start = add_periods(
                start, sub.period_count, sub.period_unit, -1, anchor_day=sub.anchor_day
            )
            if end <= sub.started_on:
                return None
            start = max(start, sub.started_on)
        else:
            start = end
            end = add_periods(start, sub.period_count, sub.period_unit, anchor_day=sub.anchor_day)
    return None


def _subscriptions(ctx: CallContext, ids: set[int]) -> dict[int, tuple[Any, str, str]]:
    """Subscription rows visible to the caller, with (account path, vendor path)."""
    vendor = Account.__table__.alias("vendor")
    rows = ctx.session.execute(
        select(Subscription, Account.path, vendor.c.path)
        .join(Account, Account.id == Subscription.account_id)
        .join(vendor, vendor.c.id == Subscription.vendor_id)
        .where(Subscription.id.in_(ids))
    ).all()
    return {s.id: (s, p, vp) for s, p, vp in rows if ctx.principal.sees(p)}


def _ins(ctx: CallContext) -> Any:
    return pg_insert if ctx.session.get_bind().dialect.name == "postgresql" else sqlite_insert


def record_usage(
    ctx: CallContext, records: Sequence[UsageRecordInput], *, field: str = "records"
) -> UsageReportResult:
    """Validate and store ``records`` (the caller has checked roles), raise
    threshold events; the one path every usage source goes through."""
    if len(records) > MAX_BATCH:
        raise ValidationError(field, f"at most {MAX_BATCH} records per call")
    subs = _subscriptions(ctx, {r.subscription_id for r in records})
    rates: dict[tuple[int, int], SubscriptionResource] = {}
    if subs:
        for sr in ctx.session.scalars(
            select(SubscriptionResource).where(SubscriptionResource.subscription_id.in_(subs))
        ):
            rates[(sr.subscription_id, sr.resource_id)] = sr
    latest = ctx.now() + CLOCK_SKEW
    now = ctx.now()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for i, r in enumerate(records):
        f = f"{field}[{i}]" if field == "records" else field
        got = subs.get(r.subscription_id)
        if got is None:
            raise NotFound(f"subscription {r.subscription_id} not found")
        sub, _path, vendor_path = got
        if not ctx.principal.sees(vendor_path):
            raise Forbidden(f"usage of subscription {sub.id} is reported by its seller")
        if (sub.id, r.resource_id) not in rates:
            raise ValidationError(
                f"{f}.resource_id", f"subscription {sub.id} has no resource {r.resource_id}"
            )
        qty = to_decimal(r.quantity, f"{f}.quantity")
        if qty < 0 or qty >= MAX_QUANTITY or qty != qty.quantize(Decimal("0.0001")):
            raise ValidationError(
                f"{f}.quantity", "must be zero or positive with at most 4 decimals"
            )
        rid = r.record_id.strip()
        if not 1 <= len(rid) <= 128:
            raise ValidationError(f"{f}.record_id", "must be 1 to 128 characters")
        ts = r.timestamp if r.timestamp.tzinfo else r.timestamp.replace(tzinfo=UTC)
        if ts > latest:
            raise ValidationError(f"{f}.timestamp", "is in the future")
        ps = period_of(sub, ts.astimezone(UTC).date())
        if ps is None:
            raise ValidationError(f"{f}.timestamp", "is before the subscription started")
        if (sub.id, rid) in seen:
            continue
        seen.add((sub.id, rid))
        rows.append(
            {
                "subscription_id": sub.id,
                "resource_id": r.resource_id,
                "record_id": rid,
                "quantity": qty,
                "at": ts,
                "period_start": ps,
                "received_at": now,
                "billed": False,
            }
        )
    accepted = 0
    ins = _ins(ctx)
    for k in range(0, len(rows), CHUNK):
        stmt = (
            ins(UsageRecord)
            .values(rows[k : k + CHUNK])
            .on_conflict_do_nothing(index_elements=["subscription_id", "record_id"])
            .returning(UsageRecord.id)
        )
        accepted += len(ctx.session.execute(stmt).all())
    _thresholds(
        ctx,
        subs,
        rates,
        {(r["subscription_id"], r["resource_id"], r["period_start"]) for r in rows},
    )
    return UsageReportResult(accepted=accepted, duplicates=len(records) - accepted)


def _thresholds(
    ctx: CallContext,
    subs: dict[int, tuple[Any, str, str]],
    rates: dict[tuple[int, int], SubscriptionResource],
    groups: set[tuple[int, int, date]],
) -> None:
    """Raise usage.threshold_reached once per subscription, resource, period
    and threshold (80 %, 100 % of the included amount)."""
    groups = {g for g in groups if rates[(g[0], g[1])].included > 0}
    if not groups:
        return
    keys = list(groups)
    used: dict[tuple[int, int, date], Decimal] = defaultdict(lambda: ZERO)
    for k in range(0, len(keys), CHUNK):
        part = keys[k : k + CHUNK]
        for sid, rid, ps, total in ctx.session.execute(
            select(
                UsageRecord.subscription_id,
                UsageRecord.resource_id,
                UsageRecord.period_start,
                func.sum(UsageRecord.quantity),
            )
            .where(
                tuple_(
                    UsageRecord.subscription_id, UsageRecord.resource_id, UsageRecord.period_start
                ).in_(part)
            )
            .group_by(
                UsageRecord.subscription_id, UsageRecord.resource_id, UsageRecord.period_start
            )
        ):
            used[(sid, rid, ps)] = Decimal(total)
    ins = _ins(ctx)
    for sid, rid, ps in sorted(groups):
        included = rates[(sid, rid)].included
        total = used[(sid, rid, ps)]
        for pct in THRESHOLDS:
            if total * 100 < included * pct:
                continue
            got = ctx.session.execute(
                ins(UsageThreshold)
                .values(
                    subscription_id=sid, resource_id=rid, period_start=ps, percent=pct, at=ctx.now()
                )
                .on_conflict_do_nothing()
                .returning(UsageThreshold.percent)
            ).first()
            if got is None:
                continue  # raised before
            sub, path, _vp = subs[sid]
            events.emit(
                ctx,
                "usage.threshold_reached",
                ("subscription", sid),
                {
                    "subscription_id": sid,
                    "resource_id": rid,
                    "threshold_percent": pct,
                    "used": total,
                    "included": included,
                },
                account_id=sub.account_id,
                account_path=path,
            )


@operation("UsageReport", roles=REPORTERS, mutating=True)
def usage_report(
    ctx: CallContext,
    *,
    subscription_id: int,
    resource_id: int,
    quantity: Decimal,
    timestamp: datetime,
    record_id: str,
) -> UsageReportResult:
    """Report ``quantity`` of a resource used by a subscription at ``timestamp``.
    ``record_id`` identifies the record at the source: reporting it again is
    ignored (``duplicates`` = 1), so a retry never bills twice. The usage
    counts in the subscription period the timestamp falls in; above the
    included plus bought amount it is billed as overage when that period ends,
    or as a late line on the next invoice if it arrives after."""
    return record_usage(
        ctx,
        [UsageRecordInput(subscription_id, resource_id, quantity, timestamp, record_id)],
        field="record",
    )


@operation("UsageReportBatch", roles=REPORTERS, mutating=True)
def usage_report_batch(
    ctx: CallContext, *, records: Annotated[list[UsageRecordInput], MinLen(1)]
) -> UsageReportResult:
    """Report up to 10,000 usage records at once (see UsageReport); all are
    stored or, if one is invalid, none (the fault names it)."""
    result = record_usage(ctx, records)
    return result


@operation("UsageGet", roles=READERS)
def usage_get(
    ctx: CallContext, *, subscription_id: int, period_start: date | None = None
) -> UsageInfo:
    """A subscription's usage in one period (default: the current one; give
    any day of the period): per resource the amount used, included, bought,
    and billable (above included + bought) with what it costs."""
    got = _subscriptions(ctx, {subscription_id})
    if subscription_id not in got:
        raise NotFound(f"subscription {subscription_id} not found")
    sub, _path, _vp = got[subscription_id]
    ps = sub.period_start
    if period_start is not None:
        ps = period_of(sub, period_start)
        if ps is None:
            raise ValidationError("period_start", "is before the subscription started")
    pe = add_periods(ps, sub.period_count, sub.period_unit, anchor_day=sub.anchor_day)
    months = pricing.months_in(pricing.Period(sub.period_count, sub.period_unit))
    used = dict(
        ctx.session.execute(
            select(UsageRecord.resource_id, func.sum(UsageRecord.quantity))
            .where(UsageRecord.subscription_id == sub.id, UsageRecord.period_start == ps)
            .group_by(UsageRecord.resource_id)
        ).all()
    )
    billed = ctx.rt.port(BilledPeriods).billed_after(ctx, sub.id, ps) or ps < sub.period_start
    out: list[ResourceUsageInfo] = []
    for sr, name, unit in ctx.session.execute(
        select(SubscriptionResource, Resource.name, Resource.unit)
        .join(Resource, Resource.id == SubscriptionResource.resource_id)
        .where(SubscriptionResource.subscription_id == sub.id)
        .order_by(SubscriptionResource.resource_id)
    ):
        u = Decimal(used.get(sr.resource_id, 0))
        billable = max(u - sr.included - sr.bought, ZERO)
        out.append(
            ResourceUsageInfo(
                resource_id=sr.resource_id,
                name=name,
                unit=unit,
                used=_plain(u),
                included=_plain(sr.included),
                bought=_plain(sr.bought),
                billable=_plain(billable),
                overage_price=_plain(sr.overage_price),
                overage_amount=quantize(billable * sr.overage_price * months, sub.currency),
            )
        )
    return UsageInfo(
        subscription_id=sub.id,
        period_start=ps,
        period_end=pe,
        currency=sub.currency,
        billed=bool(billed),
        resources=out,
    )


def _plain(v: Decimal) -> Decimal:
    return v.quantize(Decimal(1)) if v == v.to_integral_value() else v.normalize()


def sync_usage_sink(
    ctx: CallContext, subscription_id: int, usage: dict[str, Decimal], at: datetime
) -> None:
    """A provisioning USAGE_SINKS entry (bootstrap registers it): a module's
    ``sync`` read the usage *to date* of each resource (by name) from the
    platform; the difference from what is recorded for the period is recorded
    like a UsageReport (record id ``sync:<time>:<resource>``)."""
    sub = ctx.session.get(Subscription, subscription_id)
    if sub is None:
        return
    ps = period_of(sub, at.astimezone(UTC).date())
    if ps is None:
        return
    ids = dict(
        ctx.session.execute(
            select(Resource.name, Resource.id)
            .join(SubscriptionResource, SubscriptionResource.resource_id == Resource.id)
            .where(SubscriptionResource.subscription_id == subscription_id)
        ).all()
    )
    have = dict(
        ctx.session.execute(
            select(UsageRecord.resource_id, func.sum(UsageRecord.quantity))
            .where(UsageRecord.subscription_id == subscription_id, UsageRecord.period_start == ps)
            .group_by(UsageRecord.resource_id)
        ).all()
    )
    records = []
    for name, value in sorted(usage.items()):
        rid = ids.get(name)
        if rid is None:
            continue
        delta = to_decimal(value, "usage") - Decimal(have.get(rid, 0))
        if delta > 0:
            records.append(
                UsageRecordInput(
                    subscription_id,
                    rid,
                    delta.quantize(Decimal("0.0001")),
                    at,
                    f"sync:{at.astimezone(UTC).isoformat()}:{rid}",
                )
            )
    if records:
        record_usage(ctx, records)
        sub_path = ctx.session.scalar(select(Account.path).where(Account.id == sub.account_id))
        audit.record(
            ctx, "usage", subscription_id, str(sub_path), {"synced": [r.record_id for r in records]}
        )
