"""The TLD catalog: ``TldCreate``, ``TldUpdate``, ``TldList``.

How a TLD is sold: :func:`tld_create` makes, for the TLD's owner, a service
template of type ``domain`` whose module is ``domains`` (module settings
``tld`` and ``action``) and a published plan with one yearly period per
priced number of years: the first period costs the register price, each
renewal the renew price. When transfer prices are given a second template
and plan sell transfers in (first period: the transfer price). Orders sell
domains with that ``plan_id`` and the parameters ``domain`` (required),
``action`` (``register`` | ``transfer``; the plan's own by default),
``auth_code`` (transfers) and ``nameservers`` (comma-separated). The
provisioning engine then calls the builtin module ``domains``
(:mod:`pba_server.domains.module`, registered by :mod:`.service`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Literal

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.catalog import owners, plans, templates
from pba_server.catalog.types import ModuleSetting, OrderParameter
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Conflict, InvalidState, NotFound, ValidationError
from pba_server.core.money import check_currency, quantize
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.schema import MinLen
from pba_server.domains import (
    checks,
    module,  # noqa: F401  (registers the builtin module "domains")
)
from pba_server.domains.models import Tld, TldPrice
from pba_server.domains.names import normalize_tld
from pba_server.domains.registrars import ancestor_ids
from pba_server.domains.types import TldInfo, TldPage, TldStatus
from pba_server.domains.types import TldPrice as TldPriceValue
from pba_server.payments.models import PluginInstance
from pba_server.sdk import loader

EDITORS = frozenset({"sales"})


def _registrar_instance(ctx: CallContext, instance_id: int, owner: Account) -> PluginInstance:
    row = ctx.session.execute(
        select(PluginInstance, Account.path)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise ValidationError("instance_id", f"no plugin instance {instance_id}")
    inst: PluginInstance = row[0]
    if inst.account_id != owner.id:
        raise ValidationError("instance_id", "must be a registrar instance of the TLD's owner")
    p = loader.plugins().get(inst.plugin)
    if p is None or p.info is None or p.info.kind != "domain_registrar":
        raise ValidationError("instance_id", f"instance {instance_id} is not a domain registrar")
    if inst.status != "active":
        raise InvalidState(f"plugin instance {instance_id} is disabled")
    return inst


def _tld_info(ctx: CallContext, t: Tld) -> TldInfo:
    inst = ctx.session.get(PluginInstance, t.instance_id)
    prices = ctx.session.scalars(
        select(TldPrice).where(TldPrice.tld_id == t.id).order_by(TldPrice.years)
    ).all()
    return TldInfo(
        id=t.id,
        owner_id=t.owner_id,
        name=t.name,
        instance_id=t.instance_id,
        registrar=inst.plugin if inst is not None else "",
        currency=t.currency,
        status=t.status,  # type: ignore[arg-type]
        plan_id=t.plan_id,
        transfer_plan_id=t.transfer_plan_id,
        prices=[
            TldPriceValue(
                p.years,
                quantize(p.register, t.currency),
                quantize(p.renew, t.currency),
                None if p.transfer is None else quantize(p.transfer, t.currency),
            )
            for p in prices
        ],
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def _order_parameters() -> list[OrderParameter]:
    return [
        OrderParameter("domain", "domain", True, None, "Domain name"),
        OrderParameter("action", "string", False, "register|transfer", "register or transfer"),
        OrderParameter("auth_code", "string", False, None, "Transfer authorization code"),
        OrderParameter("nameservers", "string", False, None, "Name servers, comma-separated"),
    ]


def _make_plan(
    ctx: CallContext,
    owner: Account,
    tld: str,
    action: Literal["register", "transfer"],
    prices: Sequence[TldPriceValue],
    currency: str,
) -> int:
    what = "registration" if action == "register" else "transfer"
    template = templates.service_template_create(
        ctx,
        name=f"Domain {what} .{tld}",
        service_type="domain",
        module="domains",
        order_parameters=_order_parameters(),
        module_settings=[ModuleSetting("tld", tld), ModuleSetting("action", action)],
        description=f"Domain names under .{tld} ({what})",
        owner_id=owner.id,
    )
    plan = plans.plan_create(
        ctx,
        template_id=template.id,
        name=f".{tld} domain {what}",
        periods=checks.plan_periods(prices, action),
        currency=currency,
        auto_renew=True,
        owner_id=owner.id,
    )
    plans.plan_publish(ctx, plan_id=plan.id)
    return plan.id


@operation("TldCreate", roles=EDITORS, mutating=True)
def tld_create(
    ctx: CallContext,
    *,
    name: str,
    instance_id: int,
    prices: Annotated[list[TldPriceValue], MinLen(1)],
    currency: str | None = None,
    owner_id: int | None = None,
) -> TldInfo:
    """Sell a TLD (``com``, ``co.uk``) through a registrar plugin instance,
    with prices per number of years for register, renew and (optionally)
    transfer, in ``currency`` (default: the owner's). Makes the published
    plan that sells registrations (``plan_id``) and, when transfer prices are
    given, the one that sells transfers in (``transfer_plan_id``)."""
    owner = owners.owner_for_create(ctx, owner_id)
    tld = normalize_tld(name)
    inst = _registrar_instance(ctx, instance_id, owner)
    cur = check_currency(currency) if currency else owner.currency
    checked = checks.check_prices(prices, cur)
    if ctx.session.scalar(select(Tld.id).where(Tld.owner_id == owner.id, Tld.name == tld)):
        raise Conflict(f"account {owner.id} already sells .{tld}")
    plan_id = _make_plan(ctx, owner, tld, "register", checked, cur)
    transfer_plan_id = (
        _make_plan(ctx, owner, tld, "transfer", checked, cur)
        if any(p.transfer is not None for p in checked)
        else None
    )
    now = ctx.now()
    t = Tld(
        owner_id=owner.id,
        name=tld,
        instance_id=inst.id,
        currency=cur,
        status="active",
        plan_id=plan_id,
        transfer_plan_id=transfer_plan_id,
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(t)
    ctx.session.flush()
    ctx.session.add_all(
        TldPrice(
            tld_id=t.id, years=p.years, register=p.register, renew=p.renew, transfer=p.transfer
        )
        for p in checked
    )
    ctx.session.flush()
    info = _tld_info(ctx, t)
    audit.record(ctx, "tld", t.id, owner.path, {"created": asdict(info)})
    return info


def _get_tld(ctx: CallContext, tld_id: int, *, for_update: bool = False) -> tuple[Tld, Account]:
    q = select(Tld, Account).join(Account, Account.id == Tld.owner_id).where(Tld.id == tld_id)
    row = ctx.session.execute(q.with_for_update(of=Tld) if for_update else q).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"TLD {tld_id} not found")
    return row[0], row[1]


def _set_plan_status(ctx: CallContext, plan_id: int, published: bool) -> None:
    status = plans.plan_get(ctx, plan_id=plan_id).status
    if published and status in ("draft", "unpublished"):
        plans.plan_publish(ctx, plan_id=plan_id)
    elif not published and status == "published":
        plans.plan_unpublish(ctx, plan_id=plan_id)


@operation("TldUpdate", roles=EDITORS, mutating=True)
def tld_update(
    ctx: CallContext,
    *,
    tld_id: int,
    instance_id: int | None = None,
    prices: list[TldPriceValue] | None = None,
    status: TldStatus | None = None,
) -> TldInfo:
    """Change a TLD's registrar instance (new registrations and transfers go
    through it; existing domains stay with theirs), its prices (a given list
    replaces them all; the plans get a new version, existing subscriptions
    keep theirs until renewal) or its status (``disabled`` unpublishes its
    plans: nothing new is sold, existing domains renew as before)."""
    t, owner = _get_tld(ctx, tld_id, for_update=True)
    owners.require_editor(ctx, t.owner_id, "TLD", t.id)
    changes: dict[str, object] = {}
    if instance_id is not None and instance_id != t.instance_id:
        inst = _registrar_instance(ctx, instance_id, owner)
        changes["instance_id"] = {"from": t.instance_id, "to": inst.id}
        t.instance_id = inst.id
    if prices is not None:
        checked = checks.check_prices(prices, t.currency)
        old = _tld_info(ctx, t).prices
        if [asdict(p) for p in old] != [asdict(p) for p in checked]:
            for row in ctx.session.scalars(select(TldPrice).where(TldPrice.tld_id == t.id)):
                ctx.session.delete(row)
            ctx.session.flush()
            ctx.session.add_all(
                TldPrice(
                    tld_id=t.id,
                    years=p.years,
                    register=p.register,
                    renew=p.renew,
                    transfer=p.transfer,
                )
                for p in checked
            )
            plans.plan_update(
                ctx, plan_id=t.plan_id, periods=checks.plan_periods(checked, "register")
            )
            transfer_periods = checks.plan_periods(checked, "transfer")
            if transfer_periods and t.transfer_plan_id is None:
                t.transfer_plan_id = _make_plan(ctx, owner, t.name, "transfer", checked, t.currency)
            elif transfer_periods and t.transfer_plan_id is not None:
                plans.plan_update(ctx, plan_id=t.transfer_plan_id, periods=transfer_periods)
                _set_plan_status(ctx, t.transfer_plan_id, t.status == "active")
            elif t.transfer_plan_id is not None:
                _set_plan_status(ctx, t.transfer_plan_id, False)
            changes["prices"] = {
                "from": [asdict(p) for p in old],
                "to": [asdict(p) for p in checked],
            }
    if status is not None and status != t.status:
        if status not in ("active", "disabled"):
            raise ValidationError("status", "must be active or disabled")
        changes["status"] = {"from": t.status, "to": status}
        t.status = status
        _set_plan_status(ctx, t.plan_id, status == "active")
        if t.transfer_plan_id is not None:
            has_transfer = ctx.session.scalar(
                select(func.count()).where(TldPrice.tld_id == t.id, TldPrice.transfer.is_not(None))
            )
            _set_plan_status(ctx, t.transfer_plan_id, status == "active" and bool(has_transfer))
    if changes:
        t.updated_at = ctx.now()
        ctx.session.flush()
        audit.record(ctx, "tld", t.id, owner.path, changes)
    return _tld_info(ctx, t)


@operation("TldList", roles=ANY_ROLE)
def tld_list(
    ctx: CallContext,
    *,
    owner_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> TldPage:
    """TLDs the caller sells (its subtree's) and those sold to it (owned by
    accounts above it), or one owner's."""
    above = ancestor_ids(ctx.principal.account_path)
    q = select(Tld).join(Account, Account.id == Tld.owner_id)
    if owner_id is not None:
        if owner_id not in above:
            owners.visible_account(ctx, owner_id, "owner_id")
        q = q.where(Tld.owner_id == owner_id)
    else:
        q = q.where(
            Account.path.startswith(ctx.principal.account_path, autoescape=True)
            | Tld.owner_id.in_(above)
        )
    rows, total = paging.scalars(ctx.session, q.order_by(Tld.name, Tld.id), offset, limit)
    return TldPage([_tld_info(ctx, t) for t in rows], total, offset, limit)
