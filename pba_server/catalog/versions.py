"""Plan versions: reading and writing the terms a version fixes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from pba_server.catalog.models import (
    Plan,
    PlanPeriodRow,
    PlanRateRow,
    PlanVersion,
)
from pba_server.catalog.terms import Terms
from pba_server.catalog.types import (
    PlanPeriod,
    PlanTrial,
    ResourceRate,
)
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound


def load_version(ctx: CallContext, plan: Plan, version: int | None = None) -> PlanVersion:
    """A plan's current version (or ``version``), else NotFound."""
    v = ctx.session.scalar(
        select(PlanVersion).where(
            PlanVersion.plan_id == plan.id,
            PlanVersion.version == (version if version is not None else plan.current_version),
        )
    )
    if v is None:
        raise NotFound(f"plan {plan.id} has no version {version}")
    return v  # type: ignore[no-any-return]


def terms_for(ctx: CallContext, versions: Sequence[PlanVersion]) -> dict[int, Terms]:
    """The terms of several plan versions, in three queries: ``{version id: Terms}``."""
    ids = [v.id for v in versions]
    periods: dict[int, list[PlanPeriod]] = {i: [] for i in ids}
    rates: dict[int, list[ResourceRate]] = {i: [] for i in ids}
    if ids:
        for p in ctx.session.scalars(
            select(PlanPeriodRow)
            .where(PlanPeriodRow.version_id.in_(ids))
            .order_by(PlanPeriodRow.id)
        ):
            periods[p.version_id].append(
                PlanPeriod(
                    p.count, p.unit, p.setup_fee, p.recurring_fee, p.renewal_fee, p.is_default
                )
            )
        for r in ctx.session.scalars(
            select(PlanRateRow).where(PlanRateRow.version_id.in_(ids)).order_by(PlanRateRow.id)
        ):
            rates[r.version_id].append(
                ResourceRate(
                    r.resource_id,
                    r.included,
                    r.maximum,
                    r.unit_setup_price,
                    r.unit_recurring_price,
                    r.overage_price,
                    r.optional,
                    r.complimentary,
                )
            )
    return {
        v.id: Terms(
            periods=tuple(periods[v.id]),
            rates=tuple(rates[v.id]),
            trial=(
                PlanTrial(v.trial_length, v.trial_unit, v.trial_requires_card)
                if v.trial_length is not None and v.trial_unit is not None
                else None
            ),
            auto_renew=v.auto_renew,
            billing_in_advance=v.billing_in_advance,
            change_timing=v.change_timing,
            refund_policy=v.refund_policy,
            refund_days=v.refund_days,
            tax_inclusive=v.tax_inclusive,
        )
        for v in versions
    }


def terms_of(ctx: CallContext, v: PlanVersion) -> Terms:
    """The terms of one plan version."""
    return terms_for(ctx, [v])[v.id]


def write_terms(ctx: CallContext, v: PlanVersion, terms: Terms) -> None:
    """Replace the terms stored for version ``v`` with ``terms``."""
    v.trial_length = terms.trial.length if terms.trial else None
    v.trial_unit = terms.trial.unit if terms.trial else None
    v.trial_requires_card = terms.trial.requires_card if terms.trial else False
    v.auto_renew = terms.auto_renew
    v.billing_in_advance = terms.billing_in_advance
    v.change_timing = terms.change_timing
    v.refund_policy = terms.refund_policy
    v.refund_days = terms.refund_days
    v.tax_inclusive = terms.tax_inclusive
    ctx.session.execute(delete(PlanPeriodRow).where(PlanPeriodRow.version_id == v.id))
    ctx.session.execute(delete(PlanRateRow).where(PlanRateRow.version_id == v.id))
    ctx.session.add_all(
        PlanPeriodRow(
            version_id=v.id,
            count=p.count,
            unit=p.unit,
            setup_fee=p.setup_fee,
            recurring_fee=p.recurring_fee,
            renewal_fee=p.renewal_fee,
            is_default=p.is_default,
        )
        for p in terms.periods
    )
    ctx.session.add_all(
        PlanRateRow(
            version_id=v.id,
            resource_id=r.resource_id,
            included=r.included,
            maximum=r.maximum,
            unit_setup_price=r.unit_setup_price,
            unit_recurring_price=r.unit_recurring_price,
            overage_price=r.overage_price,
            optional=r.optional,
            complimentary=r.complimentary,
        )
        for r in terms.rates
    )
    ctx.session.flush()


def new_version(ctx: CallContext, plan: Plan, number: int, terms: Terms) -> PlanVersion:
    """Add version ``number`` of ``plan`` with ``terms``."""
    v = PlanVersion(
        plan_id=plan.id,
        version=number,
        trial_requires_card=False,
        auto_renew=terms.auto_renew,
        billing_in_advance=terms.billing_in_advance,
        change_timing=terms.change_timing,
        refund_policy=terms.refund_policy,
        refund_days=terms.refund_days,
        tax_inclusive=terms.tax_inclusive,
        created_at=ctx.now(),
    )
    ctx.session.add(v)
    ctx.session.flush()
    write_terms(ctx, v, terms)
    return v
