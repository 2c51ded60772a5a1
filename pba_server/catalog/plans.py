"""Plans: their lifecycle (draft, published, unpublished, archived), their
terms, versioned once published, and the plans each may change to
(``Plan*`` operations but the migrations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, cast

from sqlalchemy import delete, func, select

from pba_server.accounts.models import Account
from pba_server.catalog import checks, owners
from pba_server.catalog.models import (
    Plan,
    PlanMigration,
    PlanPeriodRow,
    PlanRateRow,
    PlanUpgrade,
    PlanVersion,
    PromotionPlan,
    ResellerPrice,
    ServiceTemplate,
    WholesalePrice,
)
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.price_lists import reseller_prices
from pba_server.catalog.templates import default_limits
from pba_server.catalog.terms import (
    Terms,
    check_periods,
    check_rates,
    check_refund,
    check_trial,
    terms_dict,
)
from pba_server.catalog.types import (
    ChangeTiming,
    PlanInfo,
    PlanPage,
    PlanPeriod,
    PlanStatus,
    PlanTrial,
    PriceSource,
    RefundPolicy,
    ResourceRate,
)
from pba_server.catalog.versions import load_version, new_version, terms_for, terms_of, write_terms
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.money import check_currency, quantize
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.states import StateMachine

PLAN_STATES = StateMachine(
    "plan",
    {
        ("draft", "publish"): "published",
        ("unpublished", "publish"): "published",
        ("published", "unpublish"): "unpublished",
        ("draft", "archive"): "archived",
        ("published", "archive"): "archived",
        ("unpublished", "archive"): "archived",
    },
)


def _check_upgrades(ctx: CallContext, plan: Plan, targets: Sequence[int]) -> list[int]:
    out: list[int] = []
    for i, pid in enumerate(targets):
        f = f"upgrade_to[{i}]"
        other = ctx.session.get(Plan, pid)
        if other is None or other.owner_id != plan.owner_id:
            raise ValidationError(f, f"no plan {pid} of the same owner")
        if other.id == plan.id:
            raise ValidationError(f, "a plan cannot change to itself")
        if other.status == "archived":
            raise ValidationError(f, f"plan {pid} is archived")
        if pid in out:
            raise ValidationError(f, f"plan {pid} is listed twice")
        out.append(pid)
    return out


def _set_upgrades(ctx: CallContext, plan: Plan, targets: list[int]) -> None:
    ctx.session.execute(delete(PlanUpgrade).where(PlanUpgrade.plan_id == plan.id))
    ctx.session.add_all(PlanUpgrade(plan_id=plan.id, to_plan_id=t) for t in targets)
    ctx.session.flush()


def upgrades_of(ctx: CallContext, plan_id: int) -> list[int]:
    """The plans ``plan_id`` may change to, by id."""
    return list(
        ctx.session.scalars(
            select(PlanUpgrade.to_plan_id)
            .where(PlanUpgrade.plan_id == plan_id)
            .order_by(PlanUpgrade.to_plan_id)
        )
    )


def _plan_infos(
    ctx: CallContext,
    plans: Sequence[Plan],
    prices: dict[tuple[int, int, str], ResellerPrice] | None = None,
    versions: dict[int, PlanVersion] | None = None,
) -> list[PlanInfo]:
    """Plans with the terms of their current version (or the given ``versions``,
    by plan id), in a fixed number of queries; reseller ``prices`` replace the
    fees of the periods they cover."""
    if not plans:
        return []
    ids = [p.id for p in plans]
    if versions is None:
        versions = {
            v.plan_id: v
            for v in ctx.session.scalars(
                select(PlanVersion)
                .join(
                    Plan,
                    (Plan.id == PlanVersion.plan_id)
                    & (Plan.current_version == PlanVersion.version),
                )
                .where(Plan.id.in_(ids))
            )
        }
    terms_by_version = terms_for(ctx, list(versions.values()))
    upgrades: dict[int, list[int]] = {i: [] for i in ids}
    for up in ctx.session.scalars(
        select(PlanUpgrade).where(PlanUpgrade.plan_id.in_(ids)).order_by(PlanUpgrade.to_plan_id)
    ):
        upgrades[up.plan_id].append(up.to_plan_id)
    out = []
    for plan in plans:
        v = versions[plan.id]
        terms = terms_by_version[v.id]
        periods = list(terms.periods)
        source: PriceSource = "plan"
        inclusive = terms.tax_inclusive
        for i, p in enumerate(periods):
            rp = (prices or {}).get((plan.id, p.count, p.unit))
            if rp is not None:
                periods[i] = PlanPeriod(
                    p.count, p.unit, rp.setup_fee, rp.recurring_fee, rp.renewal_fee, p.is_default
                )
                source = "reseller_price"
                inclusive = rp.tax_inclusive
        out.append(
            PlanInfo(
                id=plan.id,
                owner_id=plan.owner_id,
                template_id=plan.template_id,
                name=plan.name,
                currency=plan.currency,
                status=plan.status,
                version=v.version,
                auto_renew=terms.auto_renew,
                billing_in_advance=terms.billing_in_advance,
                change_timing=terms.change_timing,
                refund_policy=terms.refund_policy,
                refund_days=terms.refund_days,
                created_at=plan.created_at,
                updated_at=plan.updated_at,
                price_source=source,
                tax_inclusive=inclusive,
                description=plan.description,
                trial=terms.trial,
                periods=[
                    PlanPeriod(
                        p.count,
                        p.unit,
                        quantize(p.setup_fee, plan.currency),
                        quantize(p.recurring_fee, plan.currency),
                        quantize(p.renewal_fee, plan.currency),
                        p.is_default,
                    )
                    for p in periods
                ],
                rates=[
                    ResourceRate(
                        r.resource_id,
                        r.included.normalize(),
                        None if r.maximum is None else r.maximum.normalize(),
                        r.unit_setup_price.normalize(),
                        r.unit_recurring_price.normalize(),
                        r.overage_price.normalize(),
                        r.optional,
                        r.complimentary,
                    )
                    for r in terms.rates
                ],
                upgrade_to=upgrades[plan.id],
                version_created_at=v.created_at,
            )
        )
    return out


def _plan_info(
    ctx: CallContext,
    plan: Plan,
    version: PlanVersion | None = None,
    prices: dict[tuple[int, int, str], ResellerPrice] | None = None,
) -> PlanInfo:
    v = version or load_version(ctx, plan)
    return _plan_infos(ctx, [plan], prices, {plan.id: v})[0]


def _plan_readable(ctx: CallContext, plan: Plan) -> bool:
    if owners.manages(ctx, plan.owner_id):
        return True
    return owners.above_or_self(ctx, plan.owner_id) and plan.status == "published"


def get_plan(ctx: CallContext, plan_id: int, *, for_update: bool = False) -> Plan:
    """A plan the caller may read (managed, or published above it), else NotFound."""
    q = select(Plan).where(Plan.id == plan_id)
    if for_update:
        q = q.with_for_update()
    plan = ctx.session.scalar(q)
    if plan is None or not _plan_readable(ctx, plan):
        raise NotFound(f"plan {plan_id} not found")
    return plan  # type: ignore[no-any-return]


def editable_plan(ctx: CallContext, plan_id: int) -> Plan:
    """A plan the caller may change, locked for update."""
    plan = get_plan(ctx, plan_id, for_update=True)
    owners.require_editor(ctx, plan.owner_id, "plan", plan_id)
    return plan


@operation("PlanCreate", roles=EDITORS, mutating=True)
def plan_create(
    ctx: CallContext,
    *,
    template_id: int,
    name: str,
    periods: Annotated[list[PlanPeriod], MinLen(1)],
    rates: list[ResourceRate] | None = None,
    currency: str | None = None,
    trial: PlanTrial | None = None,
    auto_renew: bool = True,
    billing_in_advance: bool = True,
    change_timing: ChangeTiming = "immediate",
    refund_policy: RefundPolicy = "none",
    refund_days: int = 0,
    tax_inclusive: bool = False,
    upgrade_to: list[int] | None = None,
    description: str | None = None,
    owner_id: int | None = None,
) -> PlanInfo:
    """Create a draft plan on a service template: its subscription periods with
    setup, recurring and renewal fees (one default; the first if none is
    marked), resource rates, trial, renewal, change and refund terms, whether
    its prices include tax (``tax_inclusive``; default: tax is added on top),
    and the plans it may change to. Template resources without a rate are
    included at the template's default limit. The owner (default: the caller's account) is
    the provider or an advanced reseller; a reseller may use its own templates
    and those its catalog owners share with resellers. Currency defaults to the
    owner's. Names are unique per owner."""
    owner = owners.owner_for_create(ctx, owner_id)
    t = ctx.session.get(ServiceTemplate, template_id)
    usable = t is not None and (
        t.owner_id == owner.id
        or (t.shared_with_resellers and t.owner_id in owners.ancestor_ids(owner.path))
    )
    if t is None or not usable:
        raise ValidationError("template_id", f"no template {template_id} this owner may use")
    cur = check_currency(currency) if currency else owner.currency
    terms = Terms(
        periods=check_periods(periods, cur),
        rates=check_rates(default_limits(ctx, t.id), rates or []),
        trial=check_trial(trial),
        auto_renew=auto_renew,
        billing_in_advance=billing_in_advance,
        change_timing=change_timing,
        refund_policy=refund_policy,
        refund_days=check_refund(refund_policy, refund_days),
        tax_inclusive=tax_inclusive,
    )
    now = ctx.now()
    plan = Plan(
        owner_id=owner.id,
        template_id=t.id,
        name=checks.text(name, "name"),
        description=checks.opt_text(description, "description"),
        currency=cur,
        status="draft",
        current_version=1,
        created_at=now,
        updated_at=now,
    )
    owners.savepoint_unique(
        ctx, plan, "name", f"account {owner.id} already has a plan {plan.name!r}"
    )
    new_version(ctx, plan, 1, terms)
    _set_upgrades(ctx, plan, _check_upgrades(ctx, plan, upgrade_to or []))
    info = _plan_info(ctx, plan)
    audit.record(ctx, "plan", plan.id, owner.path, {"created": info})
    return info


@operation("PlanGet", roles=ANY_ROLE)
def plan_get(ctx: CallContext, *, plan_id: int, version: int | None = None) -> PlanInfo:
    """One plan with the terms of its current version (or of ``version``). A plan
    owned above the caller shows the prices that apply to the caller's account."""
    plan = get_plan(ctx, plan_id)
    v = load_version(ctx, plan, version)
    prices = None
    if not owners.manages(ctx, plan.owner_id):
        me = owners.account(ctx, ctx.principal.account_id)
        prices = reseller_prices(ctx, owners.price_list_of(ctx, me), [plan.id])
    return _plan_info(ctx, plan, v, prices)


@operation("PlanList", roles=ANY_ROLE)
def plan_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: PlanStatus | None = None,
    offset: int = 0,
    limit: int = 100,
) -> PlanPage:
    """The plans an account (default: the caller's) may sell or buy, with the
    prices that apply to it, ordered by id. For the provider or an advanced
    reseller: the plans it owns, in any status (filter with ``status``). For a
    basic reseller or a customer: the published plans of its catalog owner,
    priced by the basic reseller's price list where one applies."""
    check_page(offset, limit)
    acc = owners.visible_account(
        ctx, account_id if account_id is not None else ctx.principal.account_id
    )
    prices_from: Account | None = None
    if owners.is_catalog_owner(acc):
        q = select(Plan).where(Plan.owner_id == acc.id)
        if status:
            q = q.where(Plan.status == status)
    else:
        owner = owners.catalog_owner_of(ctx, acc)
        if owner is None or (status is not None and status != "published"):
            return PlanPage([], 0, offset, limit)
        q = select(Plan).where(Plan.owner_id == owner.id, Plan.status == "published")
        prices_from = owners.price_list_of(ctx, acc)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = list(ctx.session.scalars(q.order_by(Plan.id).offset(offset).limit(limit)))
    prices = reseller_prices(ctx, prices_from, [p.id for p in rows])
    return PlanPage(_plan_infos(ctx, rows, prices), total, offset, limit)


@operation("PlanUpdate", roles=EDITORS, mutating=True)
def plan_update(
    ctx: CallContext,
    *,
    plan_id: int,
    name: str | None = None,
    description: str | None = None,
    periods: list[PlanPeriod] | None = None,
    rates: list[ResourceRate] | None = None,
    trial: PlanTrial | None = None,
    remove_trial: bool = False,
    auto_renew: bool | None = None,
    billing_in_advance: bool | None = None,
    change_timing: ChangeTiming | None = None,
    refund_policy: RefundPolicy | None = None,
    refund_days: int | None = None,
    tax_inclusive: bool | None = None,
    upgrade_to: list[int] | None = None,
) -> PlanInfo:
    """Change a plan. Omitted fields stay; a given list replaces the old one.

    Name, description and change paths change in place. Terms (periods, fees,
    rates, trial, renewal, change and refund terms, ``tax_inclusive``) of a
    plan never published change in place too; once a plan has been published, changed terms make a
    new plan version that new subscriptions get, while existing subscriptions
    keep the version they were sold at. An archived plan does not change."""
    plan = editable_plan(ctx, plan_id)
    if plan.status == "archived":
        raise InvalidState(f"plan {plan.id} is archived")
    owner = owners.account(ctx, plan.owner_id)
    changes: dict[str, object] = {}
    if name is not None:
        old_name = plan.name
        owners.rename(ctx, plan, name, "plan")
        if plan.name != old_name:
            changes["name"] = {"from": old_name, "to": plan.name}
    if description is not None:
        new_desc = checks.opt_text(description, "description")
        if new_desc != plan.description:
            changes["description"] = {"from": plan.description, "to": new_desc}
            plan.description = new_desc
    if upgrade_to is not None:
        targets = _check_upgrades(ctx, plan, upgrade_to)
        old = upgrades_of(ctx, plan.id)
        if sorted(targets) != old:
            _set_upgrades(ctx, plan, targets)
            changes["upgrade_to"] = {"from": old, "to": sorted(targets)}
    if trial is not None and remove_trial:
        raise ValidationError("remove_trial", "give a trial or remove it, not both")
    v = load_version(ctx, plan)
    old_terms = terms_of(ctx, v)
    policy = refund_policy if refund_policy is not None else old_terms.refund_policy
    new_terms = Terms(
        periods=check_periods(periods, plan.currency) if periods is not None else old_terms.periods,
        rates=check_rates(default_limits(ctx, plan.template_id), rates)
        if rates is not None
        else old_terms.rates,
        trial=None if remove_trial else (check_trial(trial) if trial else old_terms.trial),
        auto_renew=auto_renew if auto_renew is not None else old_terms.auto_renew,
        billing_in_advance=billing_in_advance
        if billing_in_advance is not None
        else old_terms.billing_in_advance,
        change_timing=change_timing if change_timing is not None else old_terms.change_timing,
        refund_policy=policy,
        refund_days=check_refund(
            policy, refund_days if refund_days is not None else old_terms.refund_days
        ),
        tax_inclusive=tax_inclusive if tax_inclusive is not None else old_terms.tax_inclusive,
    )
    if new_terms != old_terms:
        terms_diff = audit.diff(terms_dict(old_terms), terms_dict(new_terms))
        if plan.first_published_at is None:
            write_terms(ctx, v, new_terms)
            changes["terms"] = terms_diff
        else:
            plan.current_version += 1
            new_version(ctx, plan, plan.current_version, new_terms)
            changes["version"] = {"from": v.version, "to": plan.current_version}
            changes["terms"] = terms_diff
    if changes:
        plan.updated_at = ctx.now()
        audit.record(ctx, "plan", plan.id, owner.path, changes)
    return _plan_info(ctx, plan)


def _plan_transition(ctx: CallContext, plan_id: int, event: str) -> PlanInfo:
    plan = editable_plan(ctx, plan_id)
    new = cast(PlanStatus, PLAN_STATES.next(plan.status, event))
    audit.record(
        ctx,
        "plan",
        plan.id,
        owners.account(ctx, plan.owner_id).path,
        {"status": {"from": plan.status, "to": new}},
    )
    plan.status = new
    now = ctx.now()
    if new == "published" and plan.first_published_at is None:
        plan.first_published_at = now
    plan.updated_at = now
    return _plan_info(ctx, plan)


@operation("PlanPublish", roles=EDITORS, mutating=True)
def plan_publish(ctx: CallContext, *, plan_id: int) -> PlanInfo:
    """Offer a draft or unpublished plan for sale. From now on its terms are
    versioned: changing them makes a new version."""
    return _plan_transition(ctx, plan_id, "publish")


@operation("PlanUnpublish", roles=EDITORS, mutating=True)
def plan_unpublish(ctx: CallContext, *, plan_id: int) -> PlanInfo:
    """Stop selling a published plan for now; its subscriptions go on as before."""
    return _plan_transition(ctx, plan_id, "unpublish")


@operation("PlanArchive", roles=EDITORS, mutating=True)
def plan_archive(ctx: CallContext, *, plan_id: int) -> PlanInfo:
    """Retire a plan for good: never sold again, its subscriptions still billed.
    A plan that was ever published cannot be deleted, only archived."""
    return _plan_transition(ctx, plan_id, "archive")


@operation("PlanDelete", roles=EDITORS, mutating=True)
def plan_delete(ctx: CallContext, *, plan_id: int) -> bool:
    """Delete a draft plan that was never published (nothing can use it yet).
    Any other plan can only be archived. Returns true."""
    plan = editable_plan(ctx, plan_id)
    if plan.status != "draft" or plan.first_published_at is not None:
        raise InvalidState(f"plan {plan.id} has been offered for sale; archive it instead")
    referrers = ctx.session.scalar(
        select(func.count()).select_from(PlanUpgrade).where(PlanUpgrade.to_plan_id == plan.id)
    )
    if referrers:
        raise InvalidState(f"plan {plan.id} is an upgrade target of {referrers} plan(s)")
    versions = select(PlanVersion.id).where(PlanVersion.plan_id == plan.id)
    ctx.session.execute(delete(PlanPeriodRow).where(PlanPeriodRow.version_id.in_(versions)))
    ctx.session.execute(delete(PlanRateRow).where(PlanRateRow.version_id.in_(versions)))
    ctx.session.execute(delete(PlanVersion).where(PlanVersion.plan_id == plan.id))
    ctx.session.execute(delete(PlanUpgrade).where(PlanUpgrade.plan_id == plan.id))
    ctx.session.execute(delete(PlanMigration).where(PlanMigration.plan_id == plan.id))
    ctx.session.execute(delete(PromotionPlan).where(PromotionPlan.plan_id == plan.id))
    ctx.session.execute(delete(ResellerPrice).where(ResellerPrice.plan_id == plan.id))
    ctx.session.execute(delete(WholesalePrice).where(WholesalePrice.plan_id == plan.id))
    audit.record(
        ctx, "plan", plan.id, owners.account(ctx, plan.owner_id).path, {"deleted": plan.name}
    )
    ctx.session.delete(plan)
    ctx.session.flush()
    return True
