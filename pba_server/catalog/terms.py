"""Plan terms: what a plan version fixes, and the checks of given terms.

Values in, values out, no session: the caller reads what a check needs (a
template's resources and default limits) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

from pba_server.catalog import checks, pricing
from pba_server.catalog.types import (
    ChangeTiming,
    PlanPeriod,
    PlanTrial,
    RefundPolicy,
    ResourceRate,
)
from pba_server.core.errors import ValidationError


@dataclass(frozen=True)
class Terms:
    """Everything a plan version fixes: what a subscriber signed up for."""

    periods: tuple[PlanPeriod, ...]
    rates: tuple[ResourceRate, ...]
    trial: PlanTrial | None
    auto_renew: bool
    billing_in_advance: bool
    change_timing: ChangeTiming
    refund_policy: RefundPolicy
    refund_days: int
    tax_inclusive: bool = False


def terms_dict(terms: Terms) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(terms).items()}


def check_periods(periods: Sequence[PlanPeriod], currency: str) -> tuple[PlanPeriod, ...]:
    if not periods:
        raise ValidationError("periods", "a plan needs at least one subscription period")
    seen: set[tuple[int, str]] = set()
    out = []
    for i, p in enumerate(periods):
        f = f"periods[{i}]"
        if p.count < 1:
            raise ValidationError(f"{f}.count", "must be at least 1")
        if p.count > 120:
            raise ValidationError(f"{f}.count", "must be at most 120")
        if p.unit not in pricing.PERIOD_UNITS:
            raise ValidationError(f"{f}.unit", f"must be one of: {', '.join(pricing.PERIOD_UNITS)}")
        if (p.count, p.unit) in seen:
            raise ValidationError(f"{f}", f"period {p.count} {p.unit} is given twice")
        seen.add((p.count, p.unit))
        out.append(
            PlanPeriod(
                count=p.count,
                unit=p.unit,
                setup_fee=checks.fee(p.setup_fee, currency, f"{f}.setup_fee"),
                recurring_fee=checks.fee(p.recurring_fee, currency, f"{f}.recurring_fee"),
                renewal_fee=checks.fee(p.renewal_fee, currency, f"{f}.renewal_fee"),
                is_default=p.is_default,
            )
        )
    defaults = [i for i, p in enumerate(out) if p.is_default]
    if len(defaults) > 1:
        raise ValidationError(f"periods[{defaults[1]}].is_default", "only one period is default")
    if not defaults:
        out[0].is_default = True
    return tuple(out)


def check_rates(
    in_template: Mapping[int, Decimal], rates: Sequence[ResourceRate]
) -> tuple[ResourceRate, ...]:
    """Rates as given; template resources without a rate are included at their
    default limit, free, with nothing more to buy. ``in_template`` maps the
    template's resource ids to their default limits, in the template's order."""
    out: dict[int, ResourceRate] = {}
    for i, r in enumerate(rates):
        f = f"rates[{i}]"
        if r.resource_id not in in_template:
            raise ValidationError(
                f"{f}.resource_id", f"resource {r.resource_id} is not in the plan's template"
            )
        if r.resource_id in out:
            raise ValidationError(f"{f}.resource_id", f"resource {r.resource_id} is rated twice")
        included = checks.amount(r.included, f"{f}.included")
        maximum = None if r.maximum is None else checks.amount(r.maximum, f"{f}.maximum")
        if maximum is not None and included > maximum:
            raise ValidationError(f"{f}.included", f"is above the maximum {maximum}")
        rate = ResourceRate(
            resource_id=r.resource_id,
            included=included,
            maximum=maximum,
            unit_setup_price=checks.amount(r.unit_setup_price, f"{f}.unit_setup_price"),
            unit_recurring_price=checks.amount(r.unit_recurring_price, f"{f}.unit_recurring_price"),
            overage_price=checks.amount(r.overage_price, f"{f}.overage_price"),
            optional=r.optional,
            complimentary=r.complimentary,
        )
        if rate.complimentary and (
            rate.unit_setup_price or rate.unit_recurring_price or rate.overage_price
        ):
            raise ValidationError(f"{f}.complimentary", "a complimentary resource has no prices")
        out[r.resource_id] = rate
    for rid, limit in in_template.items():
        if rid not in out:
            out[rid] = ResourceRate(resource_id=rid, included=limit, maximum=limit)
    order = list(in_template)
    return tuple(sorted(out.values(), key=lambda r: order.index(r.resource_id)))


def check_trial(trial: PlanTrial | None) -> PlanTrial | None:
    if trial is None:
        return None
    if trial.length < 1 or trial.length > 366:
        raise ValidationError("trial.length", "must be between 1 and 366")
    if trial.unit not in pricing.PERIOD_UNITS:
        raise ValidationError("trial.unit", f"must be one of: {', '.join(pricing.PERIOD_UNITS)}")
    return PlanTrial(trial.length, trial.unit, trial.requires_card)


def check_refund(policy: RefundPolicy, days: int) -> int:
    if days < 0 or days > 3650:
        raise ValidationError("refund_days", "must be between 0 and 3650")
    if policy == "full_within_days" and days == 0:
        raise ValidationError("refund_days", "full_within_days needs a number of days")
    return days
