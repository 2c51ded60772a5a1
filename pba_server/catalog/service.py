"""The product catalog: resources, service templates, plans and their versions,
promotions, reseller price lists and price quotes.

Who owns what: the provider and advanced resellers own resources, templates,
plans and promotions. A basic reseller owns none; it sells its catalog
owner's plans (the nearest provider or advanced reseller above it) at the
prices that owner sets for it (``ResellerPriceSet``). Catalog objects are
managed only inside the caller's subtree; plans, templates and resources
owned above the caller are readable (they are what it sells or buys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account
from pba_server.catalog import parameters, pricing
from pba_server.catalog.models import (
    Plan,
    PlanMigration,
    PlanPeriodRow,
    PlanRateRow,
    PlanUpgrade,
    PlanVersion,
    Promotion,
    PromotionPlan,
    PromotionUse,
    ResellerPrice,
    Resource,
    ServiceTemplate,
    WholesalePrice,
)
from pba_server.catalog.models import TemplateResource as TemplateResourceRow
from pba_server.catalog.types import (
    ChangeTiming,
    CurrencyInfo,
    CurrencyPage,
    ModuleSetting,
    OrderParameter,
    PeriodChoice,
    PeriodUnit,
    PlanInfo,
    PlanMigrationInfo,
    PlanMigrationPage,
    PlanPage,
    PlanPeriod,
    PlanStatus,
    PlanTrial,
    PriceQuoteInfo,
    PriceSource,
    PromotionInfo,
    PromotionPage,
    PromotionStatus,
    QuoteLine,
    QuoteLineKind,
    RefundPolicy,
    ResellerPriceInfo,
    ResellerPricePage,
    ResourceInfo,
    ResourceKind,
    ResourcePage,
    ResourceQuantity,
    ResourceRate,
    ServiceTemplateInfo,
    ServiceTemplatePage,
    ServiceType,
    TemplateResource,
    UsageReporting,
    WholesalePriceInfo,
    WholesalePricePage,
)
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.money import MINOR_UNITS, check_currency, money, quantize, to_decimal
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.states import StateMachine

EDITORS = frozenset({"sales"})  # besides admin, who always may

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

UNIT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9 ._/-]{0,31}$")
MODULE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_QUANTITY_DECIMALS = 4  # resource amounts and unit prices: the Money column's scale


# ---------------------------------------------------------------- helpers


def _text(value: str, field: str, max_len: int = 255) -> str:
    value = value.strip()
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value


def _opt_text(value: str | None, field: str, max_len: int = 4000) -> str | None:
    if value is None or not value.strip():
        return None
    return _text(value, field, max_len)


def _amount(value: Decimal, field: str, *, positive: bool = False) -> Decimal:
    """A resource amount or unit price: not negative, at most 4 decimals."""
    d = to_decimal(value, field)
    if d < 0 or (positive and d == 0):
        raise ValidationError(field, "must be positive" if positive else "must not be negative")
    if d != d.quantize(Decimal(1).scaleb(-MAX_QUANTITY_DECIMALS)):
        raise ValidationError(field, f"must have at most {MAX_QUANTITY_DECIMALS} decimals")
    return d


def _fee(value: Decimal, currency: str, field: str) -> Decimal:
    d = money(value, currency, field)
    if d < 0:
        raise ValidationError(field, "must not be negative")
    return d


def _account(ctx: CallContext, account_id: int) -> Account:
    key = f"account:{account_id}"
    if key not in ctx.cache:
        ctx.cache[key] = ctx.session.get(Account, account_id)
    acc = ctx.cache[key]
    if acc is None:
        raise NotFound(f"account {account_id} not found")
    return cast(Account, acc)


def _visible_account(ctx: CallContext, account_id: int, field: str = "account_id") -> Account:
    acc = ctx.session.get(Account, account_id)
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"account {account_id} not found")
    return acc  # type: ignore[no-any-return]


def _ancestor_ids(path: str) -> list[int]:
    """Ids on a materialized path, root first, the account itself last."""
    return [int(p) for p in path.strip("/").split("/") if p]


def _is_catalog_owner(acc: Account) -> bool:
    return acc.type == "provider" or (acc.type == "reseller" and acc.partner_level == "advanced")


def catalog_owner_of(ctx: CallContext, buyer: Account) -> Account | None:
    """Whose plans ``buyer`` buys: the nearest provider or advanced reseller above it."""
    for aid in reversed(_ancestor_ids(buyer.path)[:-1]):
        acc = _account(ctx, aid)
        if _is_catalog_owner(acc):
            return acc
    return None


def price_list_of(ctx: CallContext, acc: Account) -> Account | None:
    """The basic reseller whose price list applies to ``acc``: itself, or its parent."""
    if acc.type == "reseller" and acc.partner_level == "basic":
        return acc
    if acc.parent_id is not None:
        parent = _account(ctx, acc.parent_id)
        if parent.type == "reseller" and parent.partner_level == "basic":
            return parent
    return None


def _owner_for_create(ctx: CallContext, owner_id: int | None) -> Account:
    owner = _visible_account(
        ctx, owner_id if owner_id is not None else ctx.principal.account_id, "owner_id"
    )
    if not _is_catalog_owner(owner):
        raise Forbidden(
            "only the provider and advanced resellers own catalog items; "
            "a basic reseller sells its parent's plans"
        )
    if owner.status != "active":
        raise InvalidState(f"account {owner.id} is {owner.status}")
    return owner


def _manages(ctx: CallContext, owner_id: int) -> bool:
    return ctx.principal.sees(_account(ctx, owner_id).path)


def _above_or_self(ctx: CallContext, owner_id: int) -> bool:
    return owner_id in _ancestor_ids(ctx.principal.account_path)


def _readable_owner_ids(ctx: CallContext) -> list[int]:
    return _ancestor_ids(ctx.principal.account_path)


def _require_editor(ctx: CallContext, owner_id: int, what: str, ident: int) -> None:
    if not _manages(ctx, owner_id):
        if _above_or_self(ctx, owner_id):
            raise Forbidden(f"{what} {ident} belongs to an account above yours")
        raise NotFound(f"{what} {ident} not found")


def _savepoint_unique(ctx: CallContext, obj: object, field: str, message: str) -> None:
    try:
        with ctx.session.begin_nested():
            ctx.session.add(obj)
            ctx.session.flush()
    except IntegrityError:
        raise ValidationError(field, message) from None


def _rename(ctx: CallContext, obj: Resource | ServiceTemplate | Plan, name: str, what: str) -> None:
    """Set a new name in a savepoint, so a duplicate is a fault naming the field
    (the database's unique constraint decides, not a check that could race)."""
    new = _text(name, "name")
    if new == obj.name:
        return
    ctx.session.flush()  # nothing else may ride into the savepoint
    try:
        with ctx.session.begin_nested():
            obj.name = new
            ctx.session.flush()
    except IntegrityError:
        raise ValidationError(
            "name", f"account {obj.owner_id} already has a {what} {new!r}"
        ) from None


# ---------------------------------------------------------------- currencies


@operation("CurrencyList", roles=ANY_ROLE)
def currency_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> CurrencyPage:
    """The ISO 4217 currencies plans, price lists and accounts may use, with the
    number of decimals amounts in each are rounded to (half-up, once per line)."""
    every = [CurrencyInfo(code, units) for code, units in sorted(MINOR_UNITS.items())]
    items, total = paging.sliced(every, offset, limit)
    return CurrencyPage(items, total, offset, limit)


# ---------------------------------------------------------------- resources


def _resource_info(r: Resource) -> ResourceInfo:
    return ResourceInfo(
        id=r.id,
        owner_id=r.owner_id,
        name=r.name,
        unit=r.unit,
        kind=r.kind,
        usage_reporting=r.usage_reporting,
        created_at=r.created_at,
        updated_at=r.updated_at,
        description=r.description,
    )


def _get_resource(ctx: CallContext, resource_id: int) -> Resource:
    r = ctx.session.get(Resource, resource_id)
    if r is None or not (_manages(ctx, r.owner_id) or _above_or_self(ctx, r.owner_id)):
        raise NotFound(f"resource {resource_id} not found")
    return r  # type: ignore[no-any-return]


def _unit(value: str) -> str:
    value = value.strip()
    if not UNIT_RE.match(value):
        raise ValidationError("unit", "must be a short unit name such as GB, mailbox, IP or item")
    return value


@operation("ResourceCreate", roles=EDITORS, mutating=True)
def resource_create(
    ctx: CallContext,
    *,
    name: str,
    unit: str,
    kind: ResourceKind,
    usage_reporting: UsageReporting = "per_period",
    description: str | None = None,
    owner_id: int | None = None,
) -> ResourceInfo:
    """Define a resource: something sold and metered. ``kind`` is ``allocated``
    (a limit that is handed out, such as mailboxes) or ``metered`` (a quantity
    used, such as traffic GB); ``usage_reporting`` says whether usage comes as
    a total per period or as a current value. Names are unique per owner."""
    owner = _owner_for_create(ctx, owner_id)
    now = ctx.now()
    r = Resource(
        owner_id=owner.id,
        name=_text(name, "name"),
        unit=_unit(unit),
        kind=kind,
        usage_reporting=usage_reporting,
        description=_opt_text(description, "description"),
        created_at=now,
        updated_at=now,
    )
    _savepoint_unique(ctx, r, "name", f"account {owner.id} already has a resource {r.name!r}")
    info = _resource_info(r)
    audit.record(ctx, "resource", r.id, owner.path, {"created": info})
    return info


@operation("ResourceList", roles=ANY_ROLE)
def resource_list(
    ctx: CallContext, *, owner_id: int | None = None, offset: int = 0, limit: int = 100
) -> ResourcePage:
    """Resources of one owner, or (default) those the caller's account may use:
    its own and its catalog owners' above it; ordered by id."""
    check_page(offset, limit)
    if owner_id is not None:
        if not (_manages(ctx, owner_id) or _above_or_self(ctx, owner_id)):
            raise NotFound(f"account {owner_id} not found")
        owners = [owner_id]
    else:
        owners = _readable_owner_ids(ctx)
    q = select(Resource).where(Resource.owner_id.in_(owners))
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Resource.id).offset(offset).limit(limit))
    return ResourcePage([_resource_info(r) for r in rows], total, offset, limit)


@operation("ResourceUpdate", roles=EDITORS, mutating=True)
def resource_update(
    ctx: CallContext,
    *,
    resource_id: int,
    name: str | None = None,
    unit: str | None = None,
    usage_reporting: UsageReporting | None = None,
    description: str | None = None,
) -> ResourceInfo:
    """Rename a resource or change its unit, usage reporting or description
    (an empty description clears it). Its kind never changes: plans bill by it."""
    r = _get_resource(ctx, resource_id)
    _require_editor(ctx, r.owner_id, "resource", resource_id)
    before = asdict(_resource_info(r))
    if name is not None:
        _rename(ctx, r, name, "resource")
    if unit is not None:
        r.unit = _unit(unit)
    if usage_reporting is not None:
        r.usage_reporting = usage_reporting
    if description is not None:
        r.description = _opt_text(description, "description")
    info = _resource_info(r)
    changes = audit.diff(before, asdict(info))
    if changes:
        r.updated_at = info.updated_at = ctx.now()
        audit.record(ctx, "resource", r.id, _account(ctx, r.owner_id).path, changes)
    return info


# ---------------------------------------------------------------- templates


def _template_infos(
    ctx: CallContext, templates: Sequence[ServiceTemplate]
) -> list[ServiceTemplateInfo]:
    res: dict[int, list[TemplateResource]] = {t.id: [] for t in templates}
    if res:
        for r in ctx.session.scalars(
            select(TemplateResourceRow)
            .where(TemplateResourceRow.template_id.in_(list(res)))
            .order_by(TemplateResourceRow.template_id, TemplateResourceRow.position)
        ):
            res[r.template_id].append(TemplateResource(r.resource_id, r.default_limit.normalize()))
    out = []
    for t in templates:
        # module settings are the provisioning side's (endpoints, credentials
        # references): only those who manage the template see them
        settings = json.loads(t.module_settings) if _manages(ctx, t.owner_id) else {}
        out.append(
            ServiceTemplateInfo(
                id=t.id,
                owner_id=t.owner_id,
                name=t.name,
                service_type=t.service_type,
                module=t.module,
                shared_with_resellers=t.shared_with_resellers,
                created_at=t.created_at,
                updated_at=t.updated_at,
                description=t.description,
                resources=res[t.id],
                module_settings=[ModuleSetting(k, v) for k, v in sorted(settings.items())],
                order_parameters=[OrderParameter(**p) for p in json.loads(t.order_parameters)],
            )
        )
    return out


def _template_info(ctx: CallContext, t: ServiceTemplate) -> ServiceTemplateInfo:
    return _template_infos(ctx, [t])[0]


def _get_template(ctx: CallContext, template_id: int) -> ServiceTemplate:
    t = ctx.session.get(ServiceTemplate, template_id)
    if t is None or not (_manages(ctx, t.owner_id) or _above_or_self(ctx, t.owner_id)):
        raise NotFound(f"service template {template_id} not found")
    return t  # type: ignore[no-any-return]


def template_parameters(ctx: CallContext, template_id: int) -> list[OrderParameter]:
    """The order parameters of a template (for ``OrderPlace``: parameters.check_values)."""
    t = ctx.session.get(ServiceTemplate, template_id)
    if t is None:
        raise NotFound(f"service template {template_id} not found")
    return [OrderParameter(**p) for p in json.loads(t.order_parameters)]


def _module_settings(settings: Sequence[ModuleSetting]) -> str:
    out: dict[str, str] = {}
    for i, s in enumerate(settings):
        key = _text(s.name, f"module_settings[{i}].name", 128)
        if key in out:
            raise ValidationError(f"module_settings[{i}].name", f"{key!r} is given twice")
        if len(s.value) > 4000:
            raise ValidationError(f"module_settings[{i}].value", "must be at most 4000 characters")
        out[key] = s.value
    return json.dumps(out, sort_keys=True)


def _template_resources(
    ctx: CallContext, owner: Account, items: Sequence[TemplateResource]
) -> list[tuple[int, Decimal]]:
    usable = set(_ancestor_ids(owner.path))
    seen: set[int] = set()
    out = []
    for i, item in enumerate(items):
        f = f"resources[{i}]"
        r = ctx.session.get(Resource, item.resource_id)
        if r is None or r.owner_id not in usable:
            raise ValidationError(f"{f}.resource_id", f"no resource {item.resource_id} to use")
        if r.id in seen:
            raise ValidationError(f"{f}.resource_id", f"resource {r.id} is listed twice")
        seen.add(r.id)
        out.append((r.id, _amount(item.default_limit, f"{f}.default_limit")))
    return out


def _template_snapshot(info: ServiceTemplateInfo) -> dict[str, object]:
    d = asdict(info)
    d.pop("updated_at")
    return d


@operation("ServiceTemplateCreate", roles=EDITORS, mutating=True)
def service_template_create(
    ctx: CallContext,
    *,
    name: str,
    service_type: ServiceType,
    module: str,
    resources: list[TemplateResource] | None = None,
    order_parameters: list[OrderParameter] | None = None,
    module_settings: list[ModuleSetting] | None = None,
    description: str | None = None,
    shared_with_resellers: bool = False,
    owner_id: int | None = None,
) -> ServiceTemplateInfo:
    """Define a service template: resources with default limits, the processing
    module that provisions it and its settings, and the order parameters a
    storefront must collect. ``shared_with_resellers`` lets advanced resellers
    below the owner build their own plans on it."""
    owner = _owner_for_create(ctx, owner_id)
    if not MODULE_RE.match(module.strip()):
        raise ValidationError("module", "must be a module name such as plesk or vps_manager")
    res = _template_resources(ctx, owner, resources or [])
    params = parameters.check_definitions(order_parameters or [], "order_parameters")
    now = ctx.now()
    t = ServiceTemplate(
        owner_id=owner.id,
        name=_text(name, "name"),
        description=_opt_text(description, "description"),
        service_type=service_type,
        module=module.strip(),
        module_settings=_module_settings(module_settings or []),
        order_parameters=json.dumps([asdict(p) for p in params]),
        shared_with_resellers=shared_with_resellers,
        created_at=now,
        updated_at=now,
    )
    _savepoint_unique(ctx, t, "name", f"account {owner.id} already has a template {t.name!r}")
    ctx.session.add_all(
        TemplateResourceRow(template_id=t.id, resource_id=rid, position=i, default_limit=lim)
        for i, (rid, lim) in enumerate(res)
    )
    ctx.session.flush()
    info = _template_info(ctx, t)
    audit.record(ctx, "service_template", t.id, owner.path, {"created": info})
    return info


@operation("ServiceTemplateGet", roles=ANY_ROLE)
def service_template_get(ctx: CallContext, *, template_id: int) -> ServiceTemplateInfo:
    """One service template, with its resources and order parameters."""
    return _template_info(ctx, _get_template(ctx, template_id))


@operation("ServiceTemplateList", roles=ANY_ROLE)
def service_template_list(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    service_type: ServiceType | None = None,
    offset: int = 0,
    limit: int = 100,
) -> ServiceTemplatePage:
    """Templates of one owner, or (default) those owned by the caller's account
    and the accounts above it; ordered by id."""
    check_page(offset, limit)
    if owner_id is not None:
        if not (_manages(ctx, owner_id) or _above_or_self(ctx, owner_id)):
            raise NotFound(f"account {owner_id} not found")
        owners = [owner_id]
    else:
        owners = _readable_owner_ids(ctx)
    q = select(ServiceTemplate).where(ServiceTemplate.owner_id.in_(owners))
    if service_type:
        q = q.where(ServiceTemplate.service_type == service_type)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(ServiceTemplate.id).offset(offset).limit(limit))
    return ServiceTemplatePage(_template_infos(ctx, list(rows)), total, offset, limit)


@operation("ServiceTemplateUpdate", roles=EDITORS, mutating=True)
def service_template_update(
    ctx: CallContext,
    *,
    template_id: int,
    name: str | None = None,
    description: str | None = None,
    module: str | None = None,
    module_settings: list[ModuleSetting] | None = None,
    order_parameters: list[OrderParameter] | None = None,
    resources: list[TemplateResource] | None = None,
    shared_with_resellers: bool | None = None,
) -> ServiceTemplateInfo:
    """Change a template. A given list replaces the old one whole. A resource
    that any plan version rates cannot be removed (subscribers are billed by it)."""
    t = _get_template(ctx, template_id)
    _require_editor(ctx, t.owner_id, "service template", template_id)
    owner = _account(ctx, t.owner_id)
    before = _template_snapshot(_template_info(ctx, t))
    if name is not None:
        _rename(ctx, t, name, "template")
    if description is not None:
        t.description = _opt_text(description, "description")
    if module is not None:
        if not MODULE_RE.match(module.strip()):
            raise ValidationError("module", "must be a module name such as plesk or vps_manager")
        t.module = module.strip()
    if module_settings is not None:
        t.module_settings = _module_settings(module_settings)
    if order_parameters is not None:
        params = parameters.check_definitions(order_parameters, "order_parameters")
        t.order_parameters = json.dumps([asdict(p) for p in params])
    if shared_with_resellers is not None:
        t.shared_with_resellers = shared_with_resellers
    if resources is not None:
        new = _template_resources(ctx, owner, resources)
        kept = {rid for rid, _lim in new}
        rated = set(
            ctx.session.scalars(
                select(PlanRateRow.resource_id)
                .join(PlanVersion, PlanRateRow.version_id == PlanVersion.id)
                .join(Plan, PlanVersion.plan_id == Plan.id)
                .where(Plan.template_id == t.id)
            )
        )
        dropped = sorted(rated - kept)
        if dropped:
            raise ValidationError(
                "resources", f"resource {dropped[0]} is rated in plans on this template; keep it"
            )
        ctx.session.execute(
            delete(TemplateResourceRow).where(TemplateResourceRow.template_id == t.id)
        )
        ctx.session.add_all(
            TemplateResourceRow(template_id=t.id, resource_id=rid, position=i, default_limit=lim)
            for i, (rid, lim) in enumerate(new)
        )
    ctx.session.flush()
    info = _template_info(ctx, t)
    changes = audit.diff(before, _template_snapshot(info))
    if changes:
        t.updated_at = info.updated_at = ctx.now()
        audit.record(ctx, "service_template", t.id, owner.path, changes)
    return info


# ---------------------------------------------------------------- plans


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


def _terms_dict(terms: Terms) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(terms).items()}


def _check_periods(periods: Sequence[PlanPeriod], currency: str) -> tuple[PlanPeriod, ...]:
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
                setup_fee=_fee(p.setup_fee, currency, f"{f}.setup_fee"),
                recurring_fee=_fee(p.recurring_fee, currency, f"{f}.recurring_fee"),
                renewal_fee=_fee(p.renewal_fee, currency, f"{f}.renewal_fee"),
                is_default=p.is_default,
            )
        )
    defaults = [i for i, p in enumerate(out) if p.is_default]
    if len(defaults) > 1:
        raise ValidationError(f"periods[{defaults[1]}].is_default", "only one period is default")
    if not defaults:
        out[0].is_default = True
    return tuple(out)


def _check_rates(
    ctx: CallContext, template_id: int, rates: Sequence[ResourceRate]
) -> tuple[ResourceRate, ...]:
    """Rates as given; template resources without a rate are included at their
    default limit, free, with nothing more to buy."""
    in_template = {
        r.resource_id: r.default_limit
        for r in ctx.session.scalars(
            select(TemplateResourceRow)
            .where(TemplateResourceRow.template_id == template_id)
            .order_by(TemplateResourceRow.position)
        )
    }
    out: dict[int, ResourceRate] = {}
    for i, r in enumerate(rates):
        f = f"rates[{i}]"
        if r.resource_id not in in_template:
            raise ValidationError(
                f"{f}.resource_id", f"resource {r.resource_id} is not in the plan's template"
            )
        if r.resource_id in out:
            raise ValidationError(f"{f}.resource_id", f"resource {r.resource_id} is rated twice")
        included = _amount(r.included, f"{f}.included")
        maximum = None if r.maximum is None else _amount(r.maximum, f"{f}.maximum")
        if maximum is not None and included > maximum:
            raise ValidationError(f"{f}.included", f"is above the maximum {maximum}")
        rate = ResourceRate(
            resource_id=r.resource_id,
            included=included,
            maximum=maximum,
            unit_setup_price=_amount(r.unit_setup_price, f"{f}.unit_setup_price"),
            unit_recurring_price=_amount(r.unit_recurring_price, f"{f}.unit_recurring_price"),
            overage_price=_amount(r.overage_price, f"{f}.overage_price"),
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


def _check_trial(trial: PlanTrial | None) -> PlanTrial | None:
    if trial is None:
        return None
    if trial.length < 1 or trial.length > 366:
        raise ValidationError("trial.length", "must be between 1 and 366")
    if trial.unit not in pricing.PERIOD_UNITS:
        raise ValidationError("trial.unit", f"must be one of: {', '.join(pricing.PERIOD_UNITS)}")
    return PlanTrial(trial.length, trial.unit, trial.requires_card)


def _check_refund(policy: RefundPolicy, days: int) -> int:
    if days < 0 or days > 3650:
        raise ValidationError("refund_days", "must be between 0 and 3650")
    if policy == "full_within_days" and days == 0:
        raise ValidationError("refund_days", "full_within_days needs a number of days")
    return days


def _load_version(ctx: CallContext, plan: Plan, version: int | None = None) -> PlanVersion:
    v = ctx.session.scalar(
        select(PlanVersion).where(
            PlanVersion.plan_id == plan.id,
            PlanVersion.version == (version if version is not None else plan.current_version),
        )
    )
    if v is None:
        raise NotFound(f"plan {plan.id} has no version {version}")
    return v  # type: ignore[no-any-return]


def _terms_for(ctx: CallContext, versions: Sequence[PlanVersion]) -> dict[int, Terms]:
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


def _terms_of(ctx: CallContext, v: PlanVersion) -> Terms:
    return _terms_for(ctx, [v])[v.id]


def _write_terms(ctx: CallContext, v: PlanVersion, terms: Terms) -> None:
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


def _new_version(ctx: CallContext, plan: Plan, number: int, terms: Terms) -> PlanVersion:
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
    _write_terms(ctx, v, terms)
    return v


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


def _upgrades_of(ctx: CallContext, plan_id: int) -> list[int]:
    return list(
        ctx.session.scalars(
            select(PlanUpgrade.to_plan_id)
            .where(PlanUpgrade.plan_id == plan_id)
            .order_by(PlanUpgrade.to_plan_id)
        )
    )


def _reseller_prices(
    ctx: CallContext, reseller: Account | None, plan_ids: Sequence[int]
) -> dict[tuple[int, int, str], ResellerPrice]:
    if reseller is None or not plan_ids:
        return {}
    rows = ctx.session.scalars(
        select(ResellerPrice).where(
            ResellerPrice.reseller_id == reseller.id, ResellerPrice.plan_id.in_(plan_ids)
        )
    )
    return {(r.plan_id, r.period_count, r.period_unit): r for r in rows}


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
    terms_by_version = _terms_for(ctx, list(versions.values()))
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
    v = version or _load_version(ctx, plan)
    return _plan_infos(ctx, [plan], prices, {plan.id: v})[0]


def _plan_readable(ctx: CallContext, plan: Plan) -> bool:
    if _manages(ctx, plan.owner_id):
        return True
    return _above_or_self(ctx, plan.owner_id) and plan.status == "published"


def _get_plan(ctx: CallContext, plan_id: int, *, for_update: bool = False) -> Plan:
    q = select(Plan).where(Plan.id == plan_id)
    if for_update:
        q = q.with_for_update()
    plan = ctx.session.scalar(q)
    if plan is None or not _plan_readable(ctx, plan):
        raise NotFound(f"plan {plan_id} not found")
    return plan  # type: ignore[no-any-return]


def _editable_plan(ctx: CallContext, plan_id: int) -> Plan:
    plan = _get_plan(ctx, plan_id, for_update=True)
    _require_editor(ctx, plan.owner_id, "plan", plan_id)
    return plan


@operation("PlanCreate", roles=EDITORS, mutating=True)
def plan_create(
    ctx: CallContext,
    *,
    template_id: int,
    name: str,
    periods: list[PlanPeriod],
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
    owner = _owner_for_create(ctx, owner_id)
    t = ctx.session.get(ServiceTemplate, template_id)
    usable = t is not None and (
        t.owner_id == owner.id
        or (t.shared_with_resellers and t.owner_id in _ancestor_ids(owner.path))
    )
    if t is None or not usable:
        raise ValidationError("template_id", f"no template {template_id} this owner may use")
    cur = check_currency(currency) if currency else owner.currency
    terms = Terms(
        periods=_check_periods(periods, cur),
        rates=_check_rates(ctx, t.id, rates or []),
        trial=_check_trial(trial),
        auto_renew=auto_renew,
        billing_in_advance=billing_in_advance,
        change_timing=change_timing,
        refund_policy=refund_policy,
        refund_days=_check_refund(refund_policy, refund_days),
        tax_inclusive=tax_inclusive,
    )
    now = ctx.now()
    plan = Plan(
        owner_id=owner.id,
        template_id=t.id,
        name=_text(name, "name"),
        description=_opt_text(description, "description"),
        currency=cur,
        status="draft",
        current_version=1,
        created_at=now,
        updated_at=now,
    )
    _savepoint_unique(ctx, plan, "name", f"account {owner.id} already has a plan {plan.name!r}")
    _new_version(ctx, plan, 1, terms)
    _set_upgrades(ctx, plan, _check_upgrades(ctx, plan, upgrade_to or []))
    info = _plan_info(ctx, plan)
    audit.record(ctx, "plan", plan.id, owner.path, {"created": info})
    return info


@operation("PlanGet", roles=ANY_ROLE)
def plan_get(ctx: CallContext, *, plan_id: int, version: int | None = None) -> PlanInfo:
    """One plan with the terms of its current version (or of ``version``). A plan
    owned above the caller shows the prices that apply to the caller's account."""
    plan = _get_plan(ctx, plan_id)
    v = _load_version(ctx, plan, version)
    prices = None
    if not _manages(ctx, plan.owner_id):
        me = _account(ctx, ctx.principal.account_id)
        prices = _reseller_prices(ctx, price_list_of(ctx, me), [plan.id])
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
    acc = _visible_account(ctx, account_id if account_id is not None else ctx.principal.account_id)
    prices_from: Account | None = None
    if _is_catalog_owner(acc):
        q = select(Plan).where(Plan.owner_id == acc.id)
        if status:
            q = q.where(Plan.status == status)
    else:
        owner = catalog_owner_of(ctx, acc)
        if owner is None or (status is not None and status != "published"):
            return PlanPage([], 0, offset, limit)
        q = select(Plan).where(Plan.owner_id == owner.id, Plan.status == "published")
        prices_from = price_list_of(ctx, acc)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = list(ctx.session.scalars(q.order_by(Plan.id).offset(offset).limit(limit)))
    prices = _reseller_prices(ctx, prices_from, [p.id for p in rows])
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
    plan = _editable_plan(ctx, plan_id)
    if plan.status == "archived":
        raise InvalidState(f"plan {plan.id} is archived")
    owner = _account(ctx, plan.owner_id)
    changes: dict[str, object] = {}
    if name is not None:
        old_name = plan.name
        _rename(ctx, plan, name, "plan")
        if plan.name != old_name:
            changes["name"] = {"from": old_name, "to": plan.name}
    if description is not None:
        new_desc = _opt_text(description, "description")
        if new_desc != plan.description:
            changes["description"] = {"from": plan.description, "to": new_desc}
            plan.description = new_desc
    if upgrade_to is not None:
        targets = _check_upgrades(ctx, plan, upgrade_to)
        old = _upgrades_of(ctx, plan.id)
        if sorted(targets) != old:
            _set_upgrades(ctx, plan, targets)
            changes["upgrade_to"] = {"from": old, "to": sorted(targets)}
    if trial is not None and remove_trial:
        raise ValidationError("remove_trial", "give a trial or remove it, not both")
    v = _load_version(ctx, plan)
    old_terms = _terms_of(ctx, v)
    policy = refund_policy if refund_policy is not None else old_terms.refund_policy
    new_terms = Terms(
        periods=_check_periods(periods, plan.currency)
        if periods is not None
        else old_terms.periods,
        rates=_check_rates(ctx, plan.template_id, rates) if rates is not None else old_terms.rates,
        trial=None if remove_trial else (_check_trial(trial) if trial else old_terms.trial),
        auto_renew=auto_renew if auto_renew is not None else old_terms.auto_renew,
        billing_in_advance=billing_in_advance
        if billing_in_advance is not None
        else old_terms.billing_in_advance,
        change_timing=change_timing if change_timing is not None else old_terms.change_timing,
        refund_policy=policy,
        refund_days=_check_refund(
            policy, refund_days if refund_days is not None else old_terms.refund_days
        ),
        tax_inclusive=tax_inclusive if tax_inclusive is not None else old_terms.tax_inclusive,
    )
    if new_terms != old_terms:
        terms_diff = audit.diff(_terms_dict(old_terms), _terms_dict(new_terms))
        if plan.first_published_at is None:
            _write_terms(ctx, v, new_terms)
            changes["terms"] = terms_diff
        else:
            plan.current_version += 1
            _new_version(ctx, plan, plan.current_version, new_terms)
            changes["version"] = {"from": v.version, "to": plan.current_version}
            changes["terms"] = terms_diff
    if changes:
        plan.updated_at = ctx.now()
        audit.record(ctx, "plan", plan.id, owner.path, changes)
    return _plan_info(ctx, plan)


def _plan_transition(ctx: CallContext, plan_id: int, event: str) -> PlanInfo:
    plan = _editable_plan(ctx, plan_id)
    new = cast(PlanStatus, PLAN_STATES.next(plan.status, event))
    audit.record(
        ctx,
        "plan",
        plan.id,
        _account(ctx, plan.owner_id).path,
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
    plan = _editable_plan(ctx, plan_id)
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
    audit.record(ctx, "plan", plan.id, _account(ctx, plan.owner_id).path, {"deleted": plan.name})
    ctx.session.delete(plan)
    ctx.session.flush()
    return True


def _migration_info(m: PlanMigration) -> PlanMigrationInfo:
    return PlanMigrationInfo(
        id=m.id,
        plan_id=m.plan_id,
        from_version=m.from_version,
        to_version=m.to_version,
        requested_at=m.requested_at,
        requested_by=m.requested_by,
    )


@operation("PlanMigrateSubscribers", roles=EDITORS, mutating=True)
def plan_migrate_subscribers(
    ctx: CallContext, *, plan_id: int, from_version: int, to_version: int | None = None
) -> PlanMigrationInfo:
    """Move the subscriptions of a plan that are on ``from_version`` to
    ``to_version`` (default: the current version) at their next renewal; until
    then they keep paying what they were sold at. Asking again for the same
    ``from_version`` replaces the earlier request. Subscriptions that renew
    look the request up (``renewal_version``)."""
    plan = _editable_plan(ctx, plan_id)
    target = to_version if to_version is not None else plan.current_version
    if from_version == target:
        raise ValidationError("to_version", "must differ from from_version")
    for field, number in (("from_version", from_version), ("to_version", target)):
        if number < 1 or number > plan.current_version:
            raise ValidationError(field, f"plan {plan.id} has no version {number}")
    row = ctx.session.scalar(
        select(PlanMigration)
        .where(PlanMigration.plan_id == plan.id, PlanMigration.from_version == from_version)
        .with_for_update()
    )
    before = None if row is None else row.to_version
    if row is None:
        row = PlanMigration(plan_id=plan.id, from_version=from_version)
        ctx.session.add(row)
    row.to_version = target
    row.requested_at = ctx.now()
    row.requested_by = ctx.principal.login
    ctx.session.flush()
    audit.record(
        ctx,
        "plan",
        plan.id,
        _account(ctx, plan.owner_id).path,
        {"migrate_subscribers": {"from_version": from_version, "to": target, "was": before}},
    )
    return _migration_info(row)


@operation("PlanMigrationList", roles=ANY_ROLE)
def plan_migration_list(
    ctx: CallContext, *, plan_id: int, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> PlanMigrationPage:
    """The version migrations requested for a plan, by from_version."""
    plan = _get_plan(ctx, plan_id)
    _require_editor(ctx, plan.owner_id, "plan", plan_id)
    q = (
        select(PlanMigration)
        .where(PlanMigration.plan_id == plan.id)
        .order_by(PlanMigration.from_version)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return PlanMigrationPage([_migration_info(m) for m in rows], total, offset, limit)


def renewal_version(ctx: CallContext, plan_id: int, version: int) -> int:
    """The plan version a subscription on ``version`` renews at (for subscriptions)."""
    seen = {version}
    while True:
        nxt = ctx.session.scalar(
            select(PlanMigration.to_version).where(
                PlanMigration.plan_id == plan_id, PlanMigration.from_version == version
            )
        )
        if nxt is None or nxt in seen:
            return version
        seen.add(nxt)
        version = nxt


# ---------------------------------------------------------------- promotions


def _promotion_plan_ids(ctx: CallContext, ids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for row in ctx.session.scalars(
            select(PromotionPlan)
            .where(PromotionPlan.promotion_id.in_(ids))
            .order_by(PromotionPlan.plan_id)
        ):
            out[row.promotion_id].append(row.plan_id)
    return out


def _promotion_info(
    ctx: CallContext, p: Promotion, plan_ids: list[int] | None = None
) -> PromotionInfo:
    if plan_ids is None:
        plan_ids = _promotion_plan_ids(ctx, [p.id])[p.id]
    return PromotionInfo(
        id=p.id,
        owner_id=p.owner_id,
        name=p.name,
        status=p.status,
        on_setup=p.on_setup,
        on_recurring=p.on_recurring,
        once_per_account=p.once_per_account,
        used_count=p.used_count,
        created_at=p.created_at,
        code=p.code,
        percent=None if p.percent is None else p.percent.normalize(),
        amount=None if p.amount is None or p.currency is None else quantize(p.amount, p.currency),
        currency=p.currency,
        cycles=p.cycles,
        plan_ids=plan_ids,
        periods=[PeriodChoice(c, cast(PeriodUnit, u)) for c, u in json.loads(p.periods)],
        valid_from=p.valid_from,
        valid_to=p.valid_to,
        max_uses=p.max_uses,
    )


def _promotion_terms(
    ctx: CallContext, p: Promotion, buyer_id: int | None = None
) -> pricing.PromotionTerms:
    info = _promotion_info(ctx, p)
    used = False
    if p.once_per_account and buyer_id is not None:
        used = (
            ctx.session.scalar(
                select(PromotionUse.id).where(
                    PromotionUse.promotion_id == p.id, PromotionUse.once_key == buyer_id
                )
            )
            is not None
        )
    return pricing.PromotionTerms(
        status=p.status,
        plan_ids=frozenset(info.plan_ids),
        periods=frozenset(pricing.Period(c.count, c.unit) for c in info.periods),
        valid_from=p.valid_from,
        valid_to=p.valid_to,
        max_uses=p.max_uses,
        used_count=p.used_count,
        currency=p.currency if p.amount is not None else None,
        used_by_account=used,
        once_per_account=p.once_per_account,
    )


def _discount_of(p: Promotion) -> pricing.Discount:
    return pricing.Discount(
        percent=p.percent,
        amount=p.amount,
        on_setup=p.on_setup,
        on_recurring=p.on_recurring,
        cycles=p.cycles,
    )


@operation("PromotionCreate", roles=EDITORS, mutating=True)
def promotion_create(
    ctx: CallContext,
    *,
    name: str,
    code: str | None = None,
    percent: Decimal | None = None,
    amount: Decimal | None = None,
    currency: str | None = None,
    on_setup: bool = False,
    on_recurring: bool = True,
    cycles: int | None = None,
    plan_ids: list[int] | None = None,
    periods: list[PeriodChoice] | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    max_uses: int | None = None,
    once_per_account: bool = False,
    owner_id: int | None = None,
) -> PromotionInfo:
    """Create a promotion of the owner's plans: ``percent`` off (0-100] or a
    fixed ``amount`` off (in ``currency``, default the owner's; never below
    zero), on setup and/or recurring fees, for ``cycles`` billing periods
    (omitted: forever). With a ``code`` the customer must give it (codes are
    case-insensitive and unique per owner); without one it applies by itself.
    Limited to ``plan_ids`` and ``periods`` when given, valid in
    [valid_from, valid_to), at most ``max_uses`` uses in all, and once per
    account if ``once_per_account``."""
    owner = _owner_for_create(ctx, owner_id)
    if percent is not None and amount is not None:
        raise ValidationError("amount", "give a percent or an amount, not both")
    if percent is None and amount is None:
        raise ValidationError("percent", "give a percent or an amount")
    cur: str | None = None
    if percent is not None:
        pct = to_decimal(percent, "percent")
        if not 0 < pct <= 100:
            raise ValidationError("percent", "must be above 0 and at most 100")
        if pct != pct.quantize(Decimal("0.0001")):
            raise ValidationError("percent", "must have at most 4 decimals")
        if currency is not None:
            raise ValidationError("currency", "only a fixed amount has a currency")
    else:
        cur = check_currency(currency) if currency else owner.currency
        amt = money(amount, cur, "amount")
        if amt <= 0:
            raise ValidationError("amount", "must be positive")
    if not (on_setup or on_recurring):
        raise ValidationError("on_recurring", "a promotion applies to setup or recurring fees")
    if cycles is not None and not 1 <= cycles <= 1000:
        raise ValidationError("cycles", "must be between 1 and 1000 (omit it for forever)")
    if valid_from and valid_to and valid_to <= valid_from:
        raise ValidationError("valid_to", "must be after valid_from")
    if max_uses is not None and max_uses < 1:
        raise ValidationError("max_uses", "must be at least 1")
    norm_code: str | None = None
    if code is not None and code.strip():
        if not CODE_RE.match(code.strip()):
            raise ValidationError("code", "must be 1-64 letters, digits, - or _")
        norm_code = code.strip().upper()
    pids: list[int] = []
    for i, pid in enumerate(plan_ids or []):
        plan = ctx.session.get(Plan, pid)
        if plan is None or plan.owner_id != owner.id:
            raise ValidationError(f"plan_ids[{i}]", f"no plan {pid} of account {owner.id}")
        if pid not in pids:
            pids.append(pid)
    pers: list[list[object]] = []
    for i, per in enumerate(periods or []):
        if per.count < 1:
            raise ValidationError(f"periods[{i}].count", "must be at least 1")
        if per.unit not in pricing.PERIOD_UNITS:
            raise ValidationError(f"periods[{i}].unit", "must be day, month or year")
        if [per.count, per.unit] not in pers:
            pers.append([per.count, per.unit])
    now = ctx.now()
    p = Promotion(
        owner_id=owner.id,
        code=norm_code,
        name=_text(name, "name"),
        status="active",
        percent=to_decimal(percent, "percent") if percent is not None else None,
        amount=money(amount, cur, "amount") if amount is not None and cur else None,
        currency=cur,
        on_setup=on_setup,
        on_recurring=on_recurring,
        cycles=cycles,
        periods=json.dumps(pers),
        valid_from=valid_from,
        valid_to=valid_to,
        max_uses=max_uses,
        once_per_account=once_per_account,
        used_count=0,
        created_at=now,
        updated_at=now,
    )
    _savepoint_unique(ctx, p, "code", f"account {owner.id} already has a promotion {norm_code}")
    ctx.session.add_all(PromotionPlan(promotion_id=p.id, plan_id=pid) for pid in pids)
    ctx.session.flush()
    info = _promotion_info(ctx, p)
    audit.record(ctx, "promotion", p.id, owner.path, {"created": info})
    return info


def _get_promotion(ctx: CallContext, promotion_id: int) -> Promotion:
    p = ctx.session.get(Promotion, promotion_id)
    if p is None or not _manages(ctx, p.owner_id):
        raise NotFound(f"promotion {promotion_id} not found")
    return p  # type: ignore[no-any-return]


@operation("PromotionGet", roles=EDITORS | {"billing", "support", "readonly"})
def promotion_get(ctx: CallContext, *, promotion_id: int) -> PromotionInfo:
    """One promotion of an owner in the caller's subtree."""
    return _promotion_info(ctx, _get_promotion(ctx, promotion_id))


@operation("PromotionList", roles=EDITORS | {"billing", "support", "readonly"})
def promotion_list(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    status: PromotionStatus | None = None,
    offset: int = 0,
    limit: int = 100,
) -> PromotionPage:
    """The promotions of one owner (default: the caller's account), ordered by id."""
    check_page(offset, limit)
    oid = owner_id if owner_id is not None else ctx.principal.account_id
    _visible_account(ctx, oid, "owner_id")
    q = select(Promotion).where(Promotion.owner_id == oid)
    if status:
        q = q.where(Promotion.status == status)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(Promotion.id).offset(offset).limit(limit))
    promos = list(rows)
    plans = _promotion_plan_ids(ctx, [p.id for p in promos])
    return PromotionPage(
        [_promotion_info(ctx, p, plans[p.id]) for p in promos], total, offset, limit
    )


@operation("PromotionDisable", roles=EDITORS, mutating=True)
def promotion_disable(ctx: CallContext, *, promotion_id: int) -> PromotionInfo:
    """Stop a promotion for new orders. Subscriptions that already have its
    discount keep it for the cycles they were promised."""
    p = _get_promotion(ctx, promotion_id)
    if p.status != "disabled":
        audit.record(
            ctx,
            "promotion",
            p.id,
            _account(ctx, p.owner_id).path,
            {"status": {"from": p.status, "to": "disabled"}},
        )
        p.status = "disabled"
        p.updated_at = ctx.now()
    return _promotion_info(ctx, p)


def promotion_redeem(
    ctx: CallContext, promotion_id: int, account_id: int, reference: str | None = None
) -> None:
    """Count one use of a promotion by an order (for orders, in the order's
    transaction). The database decides: the use count rises only while below
    ``max_uses``, and a once-per-account promotion takes one use per account."""
    counted = ctx.session.execute(
        update(Promotion)
        .where(
            Promotion.id == promotion_id,
            Promotion.status == "active",
            (Promotion.max_uses.is_(None)) | (Promotion.used_count < Promotion.max_uses),
        )
        .values(used_count=Promotion.used_count + 1)
        .execution_options(synchronize_session="fetch")
    )
    if counted.rowcount != 1:
        raise ValidationError("promotion_code", "this promotion has been used up or disabled")
    p = ctx.session.get(Promotion, promotion_id)
    use = PromotionUse(
        promotion_id=promotion_id,
        account_id=account_id,
        once_key=account_id if p is not None and p.once_per_account else None,
        reference=reference,
        used_at=ctx.now(),
    )
    _savepoint_unique(ctx, use, "promotion_code", "this account has already used this promotion")


# ---------------------------------------------------------------- reseller prices


def _reseller_price_info(r: ResellerPrice) -> ResellerPriceInfo:
    return ResellerPriceInfo(
        id=r.id,
        reseller_id=r.reseller_id,
        plan_id=r.plan_id,
        period_count=r.period_count,
        period_unit=r.period_unit,
        currency=r.currency,
        setup_fee=quantize(r.setup_fee, r.currency),
        recurring_fee=quantize(r.recurring_fee, r.currency),
        renewal_fee=quantize(r.renewal_fee, r.currency),
        updated_at=r.updated_at,
        tax_inclusive=r.tax_inclusive,
    )


@operation("ResellerPriceSet", roles=EDITORS, mutating=True)
def reseller_price_set(
    ctx: CallContext,
    *,
    reseller_id: int,
    plan_id: int,
    period_count: int,
    period_unit: PeriodUnit,
    currency: str,
    setup_fee: Decimal,
    recurring_fee: Decimal,
    renewal_fee: Decimal = Decimal(0),
    tax_inclusive: bool | None = None,
) -> ResellerPriceInfo:
    """Set what a basic reseller's customers pay for one period of a plan of
    its catalog owner (replacing an earlier price). Only an account above the
    reseller sets it. ``currency`` must be the plan's.

    ``tax_inclusive`` says whether the reseller's prices for the plan include
    tax; it is one value per reseller and plan, so setting it sets it for the
    reseller's other periods of the plan too. Omitted: the value the reseller's
    other periods of the plan have, else the plan's."""
    reseller = _visible_account(ctx, reseller_id, "reseller_id")
    if reseller.id == ctx.principal.account_id:
        raise Forbidden("a reseller's prices are set by the account above it")
    if reseller.type != "reseller" or reseller.partner_level != "basic":
        raise ValidationError(
            "reseller_id", "price lists are for basic resellers; advanced ones make own plans"
        )
    plan = ctx.session.get(Plan, plan_id)
    owner = catalog_owner_of(ctx, reseller)
    if plan is None or not _manages(ctx, plan.owner_id):
        raise NotFound(f"plan {plan_id} not found")
    if owner is None or plan.owner_id != owner.id:
        raise ValidationError("plan_id", f"reseller {reseller.id} does not sell plan {plan.id}")
    if plan.status == "archived":
        raise InvalidState(f"plan {plan.id} is archived")
    cur = check_currency(currency)
    if cur != plan.currency:
        raise ValidationError("currency", f"plan {plan.id} is priced in {plan.currency}")
    terms = _terms_of(ctx, _load_version(ctx, plan))
    siblings = list(
        ctx.session.scalars(
            select(ResellerPrice)
            .where(ResellerPrice.reseller_id == reseller.id, ResellerPrice.plan_id == plan.id)
            .with_for_update()
        )
    )
    if tax_inclusive is None:
        tax_inclusive = siblings[0].tax_inclusive if siblings else terms.tax_inclusive
    if not any(p.count == period_count and p.unit == period_unit for p in terms.periods):
        raise ValidationError(
            "period_count", f"plan {plan.id} has no period of {period_count} {period_unit}"
        )
    fees = (
        _fee(setup_fee, cur, "setup_fee"),
        _fee(recurring_fee, cur, "recurring_fee"),
        _fee(renewal_fee, cur, "renewal_fee"),
    )
    row = ctx.session.scalar(
        select(ResellerPrice)
        .where(
            ResellerPrice.reseller_id == reseller.id,
            ResellerPrice.plan_id == plan.id,
            ResellerPrice.period_count == period_count,
            ResellerPrice.period_unit == period_unit,
        )
        .with_for_update()
    )
    before = None if row is None else _reseller_price_info(row)
    if row is None:
        row = ResellerPrice(
            reseller_id=reseller.id,
            plan_id=plan.id,
            period_count=period_count,
            period_unit=period_unit,
            currency=cur,
        )
        ctx.session.add(row)
    row.setup_fee, row.recurring_fee, row.renewal_fee = fees
    row.tax_inclusive = tax_inclusive
    row.updated_at = ctx.now()
    for other in siblings:
        if other is not row and other.tax_inclusive != tax_inclusive:
            other.tax_inclusive = tax_inclusive
            other.updated_at = row.updated_at
            audit.record(
                ctx,
                "reseller_price",
                other.id,
                reseller.path,
                {"tax_inclusive": {"from": not tax_inclusive, "to": tax_inclusive}},
            )
    ctx.session.flush()
    info = _reseller_price_info(row)
    audit.record(
        ctx,
        "reseller_price",
        row.id,
        reseller.path,
        {"set": info} if before is None else audit.diff(asdict(before), asdict(info)),
    )
    return info


@operation("ResellerPriceList", roles=ANY_ROLE)
def reseller_price_list(
    ctx: CallContext,
    *,
    reseller_id: int,
    plan_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ResellerPricePage:
    """A basic reseller's price list (the reseller itself may read it too)."""
    reseller = _visible_account(ctx, reseller_id, "reseller_id")
    q = select(ResellerPrice).where(ResellerPrice.reseller_id == reseller.id)
    if plan_id is not None:
        q = q.where(ResellerPrice.plan_id == plan_id)
    rows, total = paging.scalars(
        ctx.session,
        q.order_by(ResellerPrice.plan_id, ResellerPrice.period_unit, ResellerPrice.period_count),
        offset,
        limit,
    )
    return ResellerPricePage([_reseller_price_info(r) for r in rows], total, offset, limit)


# ---------------------------------------------------------------- wholesale prices


def _wholesale_info(w: WholesalePrice) -> WholesalePriceInfo:
    return WholesalePriceInfo(
        id=w.id,
        reseller_id=w.reseller_id,
        currency=w.currency,
        setup_fee=quantize(w.setup_fee, w.currency),
        recurring_fee=w.recurring_fee.normalize(),
        updated_at=w.updated_at,
        plan_id=w.plan_id,
        resource_id=w.resource_id,
    )


@operation("WholesalePriceSet", roles=EDITORS, mutating=True)
def wholesale_price_set(
    ctx: CallContext,
    *,
    reseller_id: int,
    currency: str,
    setup_fee: Decimal,
    recurring_fee: Decimal,
    plan_id: int | None = None,
    resource_id: int | None = None,
) -> WholesalePriceInfo:
    """Set what an advanced reseller pays its parent (replacing an earlier price):
    for each subscription of one of its own plans (``plan_id``: a setup fee and
    a recurring fee per month), or for a resource its subscriptions use
    (``resource_id``: setup and recurring price per unit, the latter per month).
    Only an account above the reseller sets it, in the reseller's currency."""
    reseller = _visible_account(ctx, reseller_id, "reseller_id")
    if reseller.id == ctx.principal.account_id:
        raise Forbidden("a reseller's wholesale prices are set by the account above it")
    if reseller.type != "reseller" or reseller.partner_level != "advanced":
        raise ValidationError(
            "reseller_id", "wholesale prices are for advanced resellers; basic ones get price lists"
        )
    if (plan_id is None) == (resource_id is None):
        raise ValidationError("plan_id", "give a plan_id or a resource_id, not both or neither")
    cur = check_currency(currency)
    if cur != reseller.currency:
        raise ValidationError(
            "currency", f"reseller {reseller.id} is billed in {reseller.currency}"
        )
    if plan_id is not None:
        plan = ctx.session.get(Plan, plan_id)
        if plan is None or plan.owner_id != reseller.id:
            raise ValidationError("plan_id", f"reseller {reseller.id} has no plan {plan_id}")
        setup = _fee(setup_fee, cur, "setup_fee")
        recurring = _fee(recurring_fee, cur, "recurring_fee")
    else:
        res = ctx.session.get(Resource, resource_id)
        if res is None or res.owner_id not in _ancestor_ids(reseller.path)[:-1]:
            raise ValidationError(
                "resource_id", f"no resource {resource_id} of an account above the reseller"
            )
        setup = _amount(setup_fee, "setup_fee")
        recurring = _amount(recurring_fee, "recurring_fee")
    q = select(WholesalePrice).where(WholesalePrice.reseller_id == reseller.id)
    q = q.where(
        WholesalePrice.plan_id == plan_id
        if plan_id is not None
        else WholesalePrice.resource_id == resource_id
    )
    row = ctx.session.scalar(q.with_for_update())
    before = None if row is None else _wholesale_info(row)
    if row is None:
        row = WholesalePrice(
            reseller_id=reseller.id, plan_id=plan_id, resource_id=resource_id, currency=cur
        )
        ctx.session.add(row)
    row.setup_fee, row.recurring_fee = setup, recurring
    row.updated_at = ctx.now()
    ctx.session.flush()
    info = _wholesale_info(row)
    audit.record(
        ctx,
        "wholesale_price",
        row.id,
        reseller.path,
        {"set": info} if before is None else audit.diff(asdict(before), asdict(info)),
    )
    return info


@operation("WholesalePriceList", roles=ANY_ROLE)
def wholesale_price_list(
    ctx: CallContext, *, reseller_id: int, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> WholesalePricePage:
    """What an advanced reseller pays its parent (the reseller itself may read it)."""
    reseller = _visible_account(ctx, reseller_id, "reseller_id")
    q = (
        select(WholesalePrice)
        .where(WholesalePrice.reseller_id == reseller.id)
        .order_by(WholesalePrice.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return WholesalePricePage([_wholesale_info(w) for w in rows], total, offset, limit)


# ---------------------------------------------------------------- quotes


def _find_promotion(
    ctx: CallContext, plan: Plan, period: pricing.Period, code: str | None, buyer_id: int
) -> Promotion | None:
    now = ctx.now()
    if code is not None and code.strip():
        p = ctx.session.scalar(
            select(Promotion).where(
                Promotion.owner_id == plan.owner_id, Promotion.code == code.strip().upper()
            )
        )
        if p is None:
            raise ValidationError("promotion_code", "unknown promotion code")
        pricing.check_promotion(
            _promotion_terms(ctx, p, buyer_id),
            plan_id=plan.id,
            period=period,
            currency=plan.currency,
            now=now,
        )
        return p  # type: ignore[no-any-return]
    automatic = ctx.session.scalars(
        select(Promotion)
        .where(
            Promotion.owner_id == plan.owner_id,
            Promotion.code.is_(None),
            Promotion.status == "active",
        )
        .order_by(Promotion.id)
    )
    for p in automatic:
        try:
            pricing.check_promotion(
                _promotion_terms(ctx, p, buyer_id),
                plan_id=plan.id,
                period=period,
                currency=plan.currency,
                now=now,
            )
        except ValidationError:
            continue
        return p  # type: ignore[no-any-return]
    return None


@operation("PriceQuote", roles=ANY_ROLE)
def price_quote(
    ctx: CallContext,
    *,
    plan_id: int,
    account_id: int | None = None,
    period_count: int | None = None,
    period_unit: PeriodUnit | None = None,
    options: list[int] | None = None,
    resources: list[ResourceQuantity] | None = None,
    promotion_code: str | None = None,
) -> PriceQuoteInfo:
    """The itemised price of a new subscription to a plan for an account
    (default: the caller's) without creating anything: setup, the first period,
    optional resources picked in ``options``, extra units bought in
    ``resources``, the discount of a promotion (by code, or an automatic one)
    and the total, before tax is added or, when ``tax_inclusive`` (the plan's,
    or the reseller price list's where its price applies), with tax included.
    The period defaults to the plan's default.
    Orders price subscriptions with the same function, so the first invoice
    equals the quote. Each line is rounded half-up to the currency's minor unit
    and the total is the sum of the lines."""
    buyer = _visible_account(
        ctx, account_id if account_id is not None else ctx.principal.account_id
    )
    if buyer.status == "closed":
        raise InvalidState(f"account {buyer.id} is closed")
    plan = _get_plan(ctx, plan_id)
    owner = catalog_owner_of(ctx, buyer)
    if owner is None:
        raise ValidationError(
            "account_id", f"account {buyer.id} buys from no one; give the buying account's id"
        )
    if plan.owner_id != owner.id:
        raise ValidationError("plan_id", f"account {buyer.id} cannot buy plan {plan.id}")
    if plan.status != "published":
        raise InvalidState(f"plan {plan.id} is {plan.status}, not for sale")
    return quote(
        ctx,
        buyer=buyer,
        plan=plan,
        period_count=period_count,
        period_unit=period_unit,
        options=options or [],
        resources=resources or [],
        promotion_code=promotion_code,
    )


def quote(
    ctx: CallContext,
    *,
    buyer: Account,
    plan: Plan,
    period_count: int | None,
    period_unit: str | None,
    options: Sequence[int],
    resources: Sequence[ResourceQuantity],
    promotion_code: str | None,
) -> PriceQuoteInfo:
    """Price the first period of ``plan`` for ``buyer`` (checked by the caller)."""
    v = _load_version(ctx, plan)
    terms = _terms_of(ctx, v)
    if period_count is None and period_unit is None:
        chosen = next(p for p in terms.periods if p.is_default)
    else:
        if period_count is None or period_unit is None:
            raise ValidationError(
                "period_count" if period_count is None else "period_unit",
                "give both period_count and period_unit, or neither for the default",
            )
        match = [p for p in terms.periods if p.count == period_count and p.unit == period_unit]
        if not match:
            raise ValidationError(
                "period_count", f"plan {plan.id} has no period of {period_count} {period_unit}"
            )
        chosen = match[0]
    period = pricing.Period(chosen.count, chosen.unit)
    fees = pricing.Fees(chosen.setup_fee, chosen.recurring_fee, chosen.renewal_fee)
    source: PriceSource = "plan"
    inclusive = terms.tax_inclusive
    prices = _reseller_prices(ctx, price_list_of(ctx, buyer), [plan.id])
    rp = prices.get((plan.id, chosen.count, chosen.unit))
    if rp is not None:
        fees = pricing.Fees(rp.setup_fee, rp.recurring_fee, rp.renewal_fee)
        source = "reseller_price"
        inclusive = rp.tax_inclusive
    names = dict(
        ctx.session.execute(
            select(Resource.id, Resource.name).where(
                Resource.id.in_([r.resource_id for r in terms.rates])
            )
        ).all()
    )
    rates = [
        pricing.Rate(
            resource_id=r.resource_id,
            name=names.get(r.resource_id, str(r.resource_id)),
            included=r.included,
            maximum=r.maximum,
            unit_setup=r.unit_setup_price,
            unit_recurring=r.unit_recurring_price,
            overage=r.overage_price,
            optional=r.optional,
            complimentary=r.complimentary,
        )
        for r in terms.rates
    ]
    extra: dict[int, Decimal] = {}
    for i, rq in enumerate(resources):
        if rq.resource_id in extra:
            raise ValidationError(f"resources[{i}].resource_id", "is given twice")
        extra[rq.resource_id] = _amount(rq.quantity, f"resources[{i}].quantity")
    promo = _find_promotion(ctx, plan, period, promotion_code, buyer.id)
    priced = pricing.price_period(
        currency=plan.currency,
        period=period,
        fees=fees,
        rates=rates,
        options=options,
        extra=extra,
        discount=_discount_of(promo) if promo else None,
    )
    return PriceQuoteInfo(
        account_id=buyer.id,
        plan_id=plan.id,
        plan_version=v.version,
        currency=plan.currency,
        period_count=chosen.count,
        period_unit=chosen.unit,
        price_source=source,
        lines=[
            QuoteLine(
                kind=cast(QuoteLineKind, ln.kind),
                description=ln.description,
                quantity=ln.quantity.normalize(),
                unit_price=ln.unit_price.normalize(),
                amount=ln.amount,
                resource_id=ln.resource_id,
            )
            for ln in priced.lines
        ],
        subtotal=priced.subtotal,
        discount=priced.discount,
        total=priced.total,
        tax_inclusive=inclusive,
        promotion_id=promo.id if promo else None,
        discount_cycles=promo.cycles if promo else None,
        trial=terms.trial,
    )
