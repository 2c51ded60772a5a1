"""Service templates: resources with default limits, the provisioning module and
its settings, and the order parameters (``ServiceTemplate*`` operations)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal

from sqlalchemy import delete, func, select

from pba_server.accounts.models import Account
from pba_server.catalog import checks, owners, parameters
from pba_server.catalog.models import (
    Plan,
    PlanRateRow,
    PlanVersion,
    Resource,
    ServiceTemplate,
)
from pba_server.catalog.models import TemplateResource as TemplateResourceRow
from pba_server.catalog.owners import EDITORS
from pba_server.catalog.types import (
    ModuleSetting,
    OrderParameter,
    ServiceTemplateInfo,
    ServiceTemplatePage,
    ServiceType,
    TemplateResource,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page

MODULE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


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
        settings = json.loads(t.module_settings) if owners.manages(ctx, t.owner_id) else {}
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
    if t is None or not (owners.manages(ctx, t.owner_id) or owners.above_or_self(ctx, t.owner_id)):
        raise NotFound(f"service template {template_id} not found")
    return t  # type: ignore[no-any-return]


def template_parameters(ctx: CallContext, template_id: int) -> list[OrderParameter]:
    """The order parameters of a template (for ``OrderPlace``: parameters.check_values)."""
    t = ctx.session.get(ServiceTemplate, template_id)
    if t is None:
        raise NotFound(f"service template {template_id} not found")
    return [OrderParameter(**p) for p in json.loads(t.order_parameters)]


def default_limits(ctx: CallContext, template_id: int) -> dict[int, Decimal]:
    """A template's resources with their default limits, in the template's order."""
    return {
        r.resource_id: r.default_limit
        for r in ctx.session.scalars(
            select(TemplateResourceRow)
            .where(TemplateResourceRow.template_id == template_id)
            .order_by(TemplateResourceRow.position)
        )
    }


def _module_settings(settings: Sequence[ModuleSetting]) -> str:
    out: dict[str, str] = {}
    for i, s in enumerate(settings):
        key = checks.text(s.name, f"module_settings[{i}].name", 128)
        if key in out:
            raise ValidationError(f"module_settings[{i}].name", f"{key!r} is given twice")
        if len(s.value) > 4000:
            raise ValidationError(f"module_settings[{i}].value", "must be at most 4000 characters")
        out[key] = s.value
    return json.dumps(out, sort_keys=True)


def _template_resources(
    ctx: CallContext, owner: Account, items: Sequence[TemplateResource]
) -> list[tuple[int, Decimal]]:
    usable = set(owners.ancestor_ids(owner.path))
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
        out.append((r.id, checks.amount(item.default_limit, f"{f}.default_limit")))
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
    owner = owners.owner_for_create(ctx, owner_id)
    if not MODULE_RE.match(module.strip()):
        raise ValidationError("module", "must be a module name such as plesk or vps_manager")
    res = _template_resources(ctx, owner, resources or [])
    params = parameters.check_definitions(order_parameters or [], "order_parameters")
    now = ctx.now()
    t = ServiceTemplate(
        owner_id=owner.id,
        name=checks.text(name, "name"),
        description=checks.opt_text(description, "description"),
        service_type=service_type,
        module=module.strip(),
        module_settings=_module_settings(module_settings or []),
        order_parameters=json.dumps([asdict(p) for p in params]),
        shared_with_resellers=shared_with_resellers,
        created_at=now,
        updated_at=now,
    )
    owners.savepoint_unique(ctx, t, "name", f"account {owner.id} already has a template {t.name!r}")
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
        if not (owners.manages(ctx, owner_id) or owners.above_or_self(ctx, owner_id)):
            raise NotFound(f"account {owner_id} not found")
        owner_ids = [owner_id]
    else:
        owner_ids = owners.readable_owner_ids(ctx)
    q = select(ServiceTemplate).where(ServiceTemplate.owner_id.in_(owner_ids))
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
    owners.require_editor(ctx, t.owner_id, "service template", template_id)
    owner = owners.account(ctx, t.owner_id)
    before = _template_snapshot(_template_info(ctx, t))
    if name is not None:
        owners.rename(ctx, t, name, "template")
    if description is not None:
        t.description = checks.opt_text(description, "description")
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
