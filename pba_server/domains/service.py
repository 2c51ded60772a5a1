"""Domains operations: the TLD catalog, availability checks, domains and
their name servers and contacts, and the registrar balance monitor's minimum.

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
(:mod:`pba_server.domains.module`, registered at the import of this module).

Name servers and contacts are changed synchronously at the registrar
(``DomainSetNameservers``/``DomainSetContacts``): the call returns once the
registry has them; a registry that cannot be reached is a
``Server.Unavailable`` fault and nothing changed (call again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.catalog import owners, plans, templates
from pba_server.catalog.types import ModuleSetting, OrderParameter, PlanPeriod
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import (
    Busy,
    Conflict,
    InvalidState,
    NotFound,
    Unavailable,
    ValidationError,
)
from pba_server.core.money import check_currency, money, quantize
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path
from pba_server.domains import module  # noqa: F401  (registers the builtin module "domains")
from pba_server.domains.models import Domain, RegistrarMonitor, Tld, TldPrice
from pba_server.domains.names import (
    MAX_NAMESERVERS,
    check_nameservers,
    normalize_domain,
    normalize_tld,
    taken_message,
)
from pba_server.domains.registrars import ancestor_ids, contacts_of, registrar_for, tld_of
from pba_server.domains.types import (
    DomainCheckItem,
    DomainContact,
    DomainInfo,
    DomainPage,
    DomainStatus,
    RegistrarMonitorInfo,
    RegistrarMonitorPage,
    TldInfo,
    TldPage,
    TldStatus,
)
from pba_server.domains.types import (
    TldPrice as TldPriceValue,
)
from pba_server.payments.models import PluginInstance
from pba_server.provisioning.models import Department
from pba_server.sdk import NotSupported, PluginBusy, PluginError, loader
from pba_server.sdk import guard as plugincall
from pba_server.sdk.registrar import (
    CONTACT_ROLES,
    CheckResult,
    Contact,
    DomainRegistrar,
    RegistrarError,
    RegistrarUnavailable,
)
from pba_server.subscriptions.store import move_with_subscription

ADMIN = frozenset({"admin"})
EDITORS = frozenset({"sales"})
TECH = frozenset({"technical"})
MAX_CHECK = 50
LIVE: tuple[str, ...] = ("pending", "active", "expired", "transferring")

__all__ = [
    "MAX_NAMESERVERS",
    "check_nameservers",
    "contacts_of",
    "normalize_domain",
    "normalize_tld",
    "registrar_for",
    "taken_message",
    "tld_of",
]


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


# ---------------------------------------------------------------- TLDs


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


def _check_prices(prices: Sequence[TldPriceValue], currency: str) -> list[TldPriceValue]:
    if not prices:
        raise ValidationError("prices", "give the prices of at least one period")
    seen: set[int] = set()
    out = []
    for i, p in enumerate(prices):
        f = f"prices[{i}]"
        if not 1 <= p.years <= 10:
            raise ValidationError(f"{f}.years", "must be 1 to 10")
        if p.years in seen:
            raise ValidationError(f"{f}.years", f"{p.years} year(s) given twice")
        seen.add(p.years)
        amounts: dict[str, Decimal | None] = {}
        for name in ("register", "renew", "transfer"):
            value = getattr(p, name)
            if value is None:
                if name != "transfer":
                    raise ValidationError(f"{f}.{name}", "is required")
                amounts[name] = None
                continue
            amount = money(value, currency, f"{f}.{name}")
            if amount < 0:
                raise ValidationError(f"{f}.{name}", "must not be negative")
            amounts[name] = amount
        reg, renew = amounts["register"], amounts["renew"]
        assert reg is not None and renew is not None
        out.append(TldPriceValue(p.years, reg, renew, amounts["transfer"]))
    return sorted(out, key=lambda p: p.years)


def _periods(
    prices: Sequence[TldPriceValue], first: Literal["register", "transfer"]
) -> list[PlanPeriod]:
    """Plan periods whose first period costs the register (transfer) price and
    each renewal the renew price: the difference is a setup fee when the first
    period costs more, a renewal fee when it costs less."""
    out = []
    for p in prices:
        first_price = p.register if first == "register" else p.transfer
        if first_price is None:
            continue
        if first_price >= p.renew:
            setup, recurring, renewal = first_price - p.renew, p.renew, Decimal(0)
        else:
            setup, recurring, renewal = Decimal(0), first_price, p.renew - first_price
        out.append(PlanPeriod(p.years, "year", setup, recurring, renewal, is_default=False))
    if out:
        out[0].is_default = True
    return out


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
        periods=_periods(prices, action),
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
    checked = _check_prices(prices, cur)
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
        checked = _check_prices(prices, t.currency)
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
            plans.plan_update(ctx, plan_id=t.plan_id, periods=_periods(checked, "register"))
            transfer_periods = _periods(checked, "transfer")
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


# ---------------------------------------------------------------- checks


@operation("DomainCheck", roles=ANY_ROLE)
def domain_check(
    ctx: CallContext, *, names: Annotated[list[str], MinLen(1)], account_id: int | None = None
) -> list[DomainCheckItem]:
    """Whether each name can be registered, asked of the registrar of its TLD
    (the TLDs sold to ``account_id``, default the caller), with the TLD's
    one-year prices. A name under no TLD sold here, or not a valid name, is
    reported as not available with the reason. At most 50 names a call."""
    if not names:
        raise ValidationError("names", "give at least one name")
    if len(names) > MAX_CHECK:
        raise ValidationError("names", f"at most {MAX_CHECK} names a call")
    path = visible_path(ctx, account_id)
    items: list[DomainCheckItem] = []
    by_instance: dict[int, list[int]] = {}
    tlds: dict[int, Tld] = {}
    for raw in names:
        try:
            name = normalize_domain(raw)
        except ValidationError:
            items.append(DomainCheckItem(name=str(raw), available=False, reason="invalid name"))
            continue
        t = tld_of(ctx.session, path, name)
        if t is None:
            items.append(DomainCheckItem(name=name, available=False, reason="unknown TLD"))
            continue
        one = ctx.session.scalar(
            select(TldPrice).where(TldPrice.tld_id == t.id).order_by(TldPrice.years).limit(1)
        )
        items.append(
            DomainCheckItem(
                name=name,
                available=False,
                tld_id=t.id,
                currency=t.currency,
                register_price=quantize(one.register, t.currency) if one else None,
                transfer_price=quantize(one.transfer, t.currency)
                if one and one.transfer is not None
                else None,
            )
        )
        tlds[t.id] = t
        by_instance.setdefault(t.instance_id, []).append(len(items) - 1)
    for instance_id, positions in by_instance.items():
        inst = ctx.session.get(PluginInstance, instance_id)
        assert inst is not None
        asked = [items[i].name for i in positions]
        try:
            answers = registrar_for(ctx.secrets, inst, ctx.clock).check(asked)
        except PluginBusy as exc:  # not called
            raise Busy(f"the registrar of {asked[0]} is busy; try again shortly: {exc}") from None
        except RegistrarUnavailable as exc:
            raise Unavailable(f"the registrar of {asked[0]} cannot be reached now: {exc}") from None
        except PluginError as exc:
            raise Unavailable(f"the registrar of {asked[0]} failed: {exc}") from None
        found: dict[str, CheckResult] = {a.name.lower(): a for a in answers}
        for i in positions:
            answer = found.get(items[i].name)
            if answer is None:
                items[i].reason = "no answer from the registrar"
                continue
            items[i].available = answer.available
            items[i].reason = answer.reason or ("" if answer.available else "taken")
            if answer.price is not None:
                items[i].premium_price = answer.price
                items[i].reason = items[i].reason or "premium"
    return items


# ---------------------------------------------------------------- domains


def domain_info(d: Domain) -> DomainInfo:
    contacts = [
        DomainContact(role=role, **asdict(c))  # type: ignore[arg-type]
        for role, c in sorted(contacts_of(d).items(), key=lambda x: CONTACT_ROLES.index(x[0]))  # type: ignore[arg-type]
    ]
    return DomainInfo(
        id=d.id,
        name=d.name,
        account_id=d.account_id,
        subscription_id=d.subscription_id,
        tld_id=d.tld_id,
        instance_id=d.instance_id,
        status=d.status,  # type: ignore[arg-type]
        action=d.action,  # type: ignore[arg-type]
        expires_on=d.expires_on,
        registry_id=d.registry_id,
        last_error=d.last_error,
        nameservers=json.loads(d.nameservers or "[]"),
        contacts=contacts,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def _get_domain(
    ctx: CallContext, domain_id: int, *, for_update: bool = False
) -> tuple[Domain, Account]:
    q = (
        select(Domain, Account)
        .join(Account, Account.id == Domain.account_id)
        .where(Domain.id == domain_id)
    )
    row = ctx.session.execute(q.with_for_update(of=Domain) if for_update else q).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"domain {domain_id} not found")
    return row[0], row[1]


@operation("DomainGet", roles=ANY_ROLE)
def domain_get(ctx: CallContext, *, domain_id: int) -> DomainInfo:
    """One domain: status, expiry date, name servers, contacts."""
    return domain_info(_get_domain(ctx, domain_id)[0])


@operation("DomainList", roles=ANY_ROLE)
def domain_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    status: DomainStatus | None = None,
    name: str | None = None,
    subscription_id: int | None = None,
    expires_before: date | None = None,
    offset: int = 0,
    limit: int = 100,
) -> DomainPage:
    """Domains of an account's subtree (default: the caller's), by status,
    name (a substring), subscription or expiry before a date, soonest to
    expire first."""
    check_page(offset, limit)
    path = visible_path(ctx, account_id)
    q = (
        select(Domain)
        .join(Account, Account.id == Domain.account_id)
        .where(Account.path.startswith(path, autoescape=True))
    )
    if status is not None:
        q = q.where(Domain.status == status)
    if name:
        q = q.where(Domain.name.contains(name.strip().lower(), autoescape=True))
    if subscription_id is not None:
        q = q.where(Domain.subscription_id == subscription_id)
    if expires_before is not None:
        q = q.where(Domain.expires_on < expires_before)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(
        q.order_by(Domain.expires_on.is_(None), Domain.expires_on, Domain.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return DomainPage(items=[domain_info(d) for d in rows], total=total, offset=offset, limit=limit)


def _call_key(kind: str, d: Domain, payload: object) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{kind}-{d.id}-{digest}"


def _registrar_call_failed(exc: Exception, field: str) -> Exception:
    if isinstance(exc, PluginBusy):  # not called: nothing was sent
        return Busy(f"the registrar is busy; nothing changed; try again shortly: {exc}")
    if isinstance(exc, RegistrarUnavailable):
        return Unavailable(f"the registrar cannot be reached now; nothing changed: {exc}")
    if isinstance(exc, NotSupported):
        return InvalidState(f"the registrar cannot do this: {exc}")
    if isinstance(exc, RegistrarError):
        code = f" ({exc.code})" if exc.code else ""
        return ValidationError(field, f"the registry refused it{code}: {exc}")
    if isinstance(exc, PluginError):  # the guard masked it
        return Unavailable(f"the registrar failed; nothing changed: {exc}")
    why = plugincall.unexpected(logging.getLogger("pba.domains"), "the registrar call", exc)
    return Unavailable(f"{why}; nothing changed")


def _live_domain(ctx: CallContext, domain_id: int) -> tuple[Domain, Account, DomainRegistrar]:
    d, acc = _get_domain(ctx, domain_id, for_update=True)
    if d.status not in ("active", "expired"):
        raise InvalidState(f"domain {d.name} is {d.status}")
    inst = ctx.session.get(PluginInstance, d.instance_id)
    assert inst is not None
    return d, acc, registrar_for(ctx.secrets, inst, ctx.clock)


@operation("DomainSetNameservers", roles=TECH, mutating=True)
def domain_set_nameservers(
    ctx: CallContext, *, domain_id: int, nameservers: Annotated[list[str], MinLen(1)]
) -> DomainInfo:
    """Replace a domain's name servers (2 to 13 host names) at the registry,
    synchronously: on return the registry has them. ``Server.Unavailable``:
    the registrar could not be reached and nothing changed."""
    hosts = check_nameservers(nameservers)
    if not hosts:
        raise ValidationError("nameservers", f"give 2 to {MAX_NAMESERVERS} name servers")
    d, acc, registrar = _live_domain(ctx, domain_id)
    old = json.loads(d.nameservers or "[]")
    try:
        registrar.set_nameservers(key=_call_key("ns", d, hosts), name=d.name, nameservers=hosts)
    except Exception as exc:
        raise _registrar_call_failed(exc, "nameservers") from None
    d.nameservers = json.dumps(hosts)
    d.updated_at = ctx.now()
    audit.record(ctx, "domain", d.id, acc.path, {"nameservers": {"from": old, "to": hosts}})
    return domain_info(d)


def _check_contacts(contacts: Sequence[DomainContact]) -> dict[str, Contact]:
    out: dict[str, Contact] = {}
    if not contacts:
        raise ValidationError("contacts", "give at least one contact")
    for i, c in enumerate(contacts):
        f = f"contacts[{i}]"
        if c.role not in CONTACT_ROLES:
            raise ValidationError(f"{f}.role", f"must be one of: {', '.join(CONTACT_ROLES)}")
        if c.role in out:
            raise ValidationError(f"{f}.role", f"{c.role} given twice")
        if not c.name or not c.name.strip() or len(c.name) > 255:
            raise ValidationError(f"{f}.name", "must be 1 to 255 characters")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", c.email or ""):
            raise ValidationError(f"{f}.email", "must be an e-mail address")
        if c.country and not re.fullmatch(r"[A-Za-z]{2}", c.country):
            raise ValidationError(f"{f}.country", "must be an ISO 3166 two-letter code")
        values = {k: v for k, v in asdict(c).items() if k != "role"}
        for k, v in values.items():
            if v is not None and len(str(v)) > 255:
                raise ValidationError(f"{f}.{k}", "must be at most 255 characters")
        values["country"] = (c.country or "").upper()
        out[c.role] = Contact.from_dict({k: (v or "").strip() for k, v in values.items()})
    return out


@operation("DomainSetContacts", roles=TECH, mutating=True)
def domain_set_contacts(
    ctx: CallContext, *, domain_id: int, contacts: Annotated[list[DomainContact], MinLen(1)]
) -> DomainInfo:
    """Replace the given roles' contacts (registrant, admin, tech, billing) of
    a domain at the registry, synchronously (like DomainSetNameservers);
    roles not given keep their contacts."""
    given = _check_contacts(contacts)
    d, acc, registrar = _live_domain(ctx, domain_id)
    try:
        registrar.set_contacts(
            key=_call_key("contacts", d, {r: asdict(c) for r, c in given.items()}),
            name=d.name,
            contacts=given,
        )
    except Exception as exc:
        raise _registrar_call_failed(exc, "contacts") from None
    merged = {r: asdict(c) for r, c in contacts_of(d).items()}
    merged.update({r: asdict(c) for r, c in given.items()})
    d.contacts = json.dumps(merged, sort_keys=True)
    d.updated_at = ctx.now()
    audit.record(ctx, "domain", d.id, acc.path, {"contacts": sorted(given)})
    return domain_info(d)


# ---------------------------------------------------------------- balance monitor


def _account_path(ctx: CallContext, account_id: int) -> str:
    acc = ctx.session.get(Account, account_id)
    assert acc is not None
    return str(acc.path)


def _monitor_info(m: RegistrarMonitor) -> RegistrarMonitorInfo:
    return RegistrarMonitorInfo(
        instance_id=m.instance_id,
        minimum=quantize(m.minimum, m.currency),
        currency=m.currency,
        updated_at=m.updated_at,
        last_balance=None if m.last_balance is None else quantize(m.last_balance, m.currency),
        last_checked_at=m.last_checked_at,
        last_error=m.last_error,
        alerted_on=m.alerted_on,
        department_id=m.department_id,
    )


@operation("RegistrarBalanceMinimumSet", roles=ADMIN, mutating=True)
def registrar_balance_minimum_set(
    ctx: CallContext,
    *,
    instance_id: int,
    minimum: Decimal,
    currency: str,
    department_id: int | None = None,
) -> RegistrarMonitorInfo:
    """Watch a registrar instance's prepaid balance: the daily monitor raises
    ``registrar.balance_low`` (at most once a day) while it is below
    ``minimum`` and opens a task to top it up (one at a time) for
    ``department_id`` -- a department of the instance's owner; empty: the
    owner's staff, no department. A minimum of 0 stops the warnings."""
    row = ctx.session.execute(
        select(PluginInstance, Account)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"plugin instance {instance_id} not found")
    inst, owner = row
    p = loader.plugins().get(inst.plugin)
    if p is None or p.info is None or p.info.kind != "domain_registrar":
        raise ValidationError("instance_id", f"instance {instance_id} is not a domain registrar")
    if "balance" not in p.info.capabilities:
        raise ValidationError("instance_id", f"plugin {inst.plugin} does not report a balance")
    cur = check_currency(currency)
    amount = money(minimum, cur, "minimum")
    if amount < 0:
        raise ValidationError("minimum", "must not be negative")
    if department_id is not None:
        dep = ctx.session.get(Department, department_id)
        if dep is None or not ctx.principal.sees(_account_path(ctx, dep.account_id)):
            raise NotFound(f"department {department_id} not found")
        if dep.account_id != inst.account_id:
            raise ValidationError(
                "department_id", "is not a department of the registrar instance's owner"
            )
    m = ctx.session.get(RegistrarMonitor, inst.id, with_for_update=True)
    old = (
        None
        if m is None
        else {"minimum": m.minimum, "currency": m.currency, "department_id": m.department_id}
    )
    if m is None:
        m = RegistrarMonitor(instance_id=inst.id)
        ctx.session.add(m)
    m.minimum, m.currency, m.updated_at = amount, cur, ctx.now()
    m.department_id = department_id
    ctx.session.flush()
    audit.record(
        ctx,
        "registrar_monitor",
        inst.id,
        owner.path,
        {
            "from": old,
            "to": {"minimum": amount, "currency": cur, "department_id": department_id},
        },
    )
    return _monitor_info(m)


@operation("RegistrarMonitorList", roles=ADMIN | frozenset({"billing", "readonly"}))
def registrar_monitor_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> RegistrarMonitorPage:
    """The balance monitors of the caller's subtree's registrar instances,
    with the balance seen last."""
    q = (
        select(RegistrarMonitor)
        .join(PluginInstance, PluginInstance.id == RegistrarMonitor.instance_id)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(Account.path.startswith(ctx.principal.account_path, autoescape=True))
        .order_by(RegistrarMonitor.instance_id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return RegistrarMonitorPage([_monitor_info(m) for m in rows], total, offset, limit)


# the live statuses, for other modules
def is_live(status: str) -> bool:
    return status in LIVE


def check_order(
    ctx: CallContext, template_id: int, parameters: dict[str, str], field: str = "parameters"
) -> None:
    """For the orders feature, before an order for a domain plan is placed:
    the ``domain`` parameter is a valid name under the plan's TLD, not live
    here already, and a transfer has its ``auth_code``. Raises
    ValidationError(``<field>.<name>``). Templates of other modules pass."""
    from pba_server.catalog.models import ServiceTemplate

    t = ctx.session.get(ServiceTemplate, template_id)
    if t is None or t.module != "domains":
        return
    settings: dict[str, str] = json.loads(t.module_settings or "{}")
    name = normalize_domain(parameters.get("domain", ""), f"{field}.domain")
    tld = settings.get("tld", "")
    if tld and not name.endswith("." + tld):
        raise ValidationError(f"{field}.domain", f"{name} is not a .{tld} name")
    action = (parameters.get("action") or settings.get("action") or "register").lower()
    if action not in ("register", "transfer"):
        raise ValidationError(f"{field}.action", "must be register or transfer")
    if action == "transfer" and not parameters.get("auth_code"):
        raise ValidationError(f"{field}.auth_code", "a transfer needs the domain's auth code")
    hosts = [h for h in parameters.get("nameservers", "").replace(" ", ",").split(",") if h]
    check_nameservers(hosts, f"{field}.nameservers")
    holder = ctx.session.scalar(
        select(Account.path)
        .join(Domain, Domain.account_id == Account.id)
        .where(Domain.live_name == name)
    )
    if holder is not None:
        raise ValidationError(f"{field}.domain", taken_message(name, ctx.principal.sees(holder)))


def move_domains(ctx: CallContext, subscription_id: int, account_id: int) -> list[int]:
    """The subscription moved to another account (a transfer order): its
    domain rows follow it (their registry contacts stay until the new owner
    sets them with DomainSetContacts). Returns the ids of the domains moved."""
    return move_with_subscription(ctx, Domain, "domain", subscription_id, account_id)
