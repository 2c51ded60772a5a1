"""Plugin instances (configuring, listing, disabling the instances of any
plugin kind) and routing rules (which gateway instance a new card goes to).

Public: :func:`get_instance` (an instance the caller may see),
:func:`gateway_for` (the gateway object of an instance), :func:`route`."""

from __future__ import annotations

import json
import logging
import re

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.core import audit, paging
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext
from pba_server.core.errors import (
    Conflict,
    InvalidState,
    NotFound,
    OperatorSetting,
    ValidationError,
)
from pba_server.core.operations import operation
from pba_server.core.operator import is_operator
from pba_server.core.scope import visible_path
from pba_server.core.secrets import SecretBox
from pba_server.payments.models import (
    PluginInstance,
    RoutingRule,
)
from pba_server.payments.plugin_objects import plugin_object
from pba_server.payments.roles import ADMIN, READERS
from pba_server.payments.types import (
    PluginInfoItem,
    PluginInstanceInfo,
    PluginInstancePage,
    PluginPage,
    PluginSettingInfo,
    RoutingRuleInfo,
    RoutingRuleInput,
    RoutingRulePage,
    SettingValue,
)
from pba_server.sdk import (
    ConfigurationError,
    PaymentGateway,
    loader,
)

log = logging.getLogger("pba.payments")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def _plugin_item(p: loader.LoadedPlugin) -> PluginInfoItem:
    info = p.info
    return PluginInfoItem(
        name=p.name,
        status="ok" if p.status == "ok" else "broken",
        reason=p.reason,
        source=p.source,
        version=info.version if info else None,
        sdk_version=info.sdk_version if info else None,
        description=info.description if info else "",
        capabilities=sorted(info.capabilities) if info else [],
        settings=[
            PluginSettingInfo(
                f.name, f.type, f.required, f.secret, f.default, f.description, f.kind
            )
            for f in (info.settings if info else ())
        ],
        operator_only=not info.tenant_configurable() if info else False,
    )


@operation("PluginList", roles=ADMIN)
def plugin_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> PluginPage:
    """Every plugin this server found, loaded or broken (with the reason)."""
    found, total = paging.sliced(list(loader.plugins().values()), offset, limit)
    return PluginPage([_plugin_item(p) for p in found], total, offset, limit)


def _loaded(name: str) -> loader.LoadedPlugin:
    p = loader.plugins().get(name)
    if p is None:
        raise NotFound(f"plugin {name!r} not found")
    if p.status != "ok" or p.cls is None:
        raise InvalidState(f"plugin {name!r} is broken: {p.reason}")
    return p


def _instance_info(inst: PluginInstance) -> PluginInstanceInfo:
    plain = json.loads(inst.settings)
    return PluginInstanceInfo(
        id=inst.id,
        account_id=inst.account_id,
        plugin=inst.plugin,
        name=inst.name,
        status=inst.status,  # type: ignore[arg-type]
        settings=[SettingValue(k, v) for k, v in sorted(plain.items())],
        secret_settings_set=[],
        created_at=inst.created_at,
        updated_at=inst.updated_at,
    )


def _secret_names(inst: PluginInstance) -> list[str]:
    p = loader.plugins().get(inst.plugin)
    if p is None or p.info is None:
        return []
    return [f.name for f in p.info.settings if f.secret]


def _info(inst: PluginInstance) -> PluginInstanceInfo:
    out = _instance_info(inst)
    out.secret_settings_set = _secret_names(inst)
    return out


def gateway_for(box: SecretBox, inst: PluginInstance, clock: Clock) -> PaymentGateway:
    """A payment gateway object for ``inst``, its secrets decrypted in memory only."""
    gateway: PaymentGateway = plugin_object(box, inst, "payment_gateway", clock)
    return gateway


@operation("PluginConfigure", roles=ADMIN, mutating=True)
def plugin_configure(
    ctx: CallContext,
    *,
    plugin: str,
    name: str,
    settings: list[SettingValue] | None = None,
) -> PluginInstanceInfo:
    """Create or reconfigure the caller's account's plugin instance ``name``.
    Secret settings are encrypted at rest and never returned; on a
    reconfiguration a secret left out keeps its stored value. ``settings``
    may be omitted (a plugin without required settings).

    Operator settings: only the provider's administrators configure a plugin
    that runs programs or writes files (``script``, ``log_channel``), or set
    a setting of kind url, host, port, path or program (``api_base``,
    ``url``, ``host``...); anyone else gets ``Client.OperatorSetting`` and
    their instances use those settings' defaults. Tenants use the instances
    the provider offers (its processing modules with ``use_for_new_orders``,
    its gateways in routing rules, its notification channels)."""
    p = _loaded(plugin)
    assert p.cls is not None
    info = p.cls.info
    operator = is_operator(ctx)
    if not operator and not info.tenant_configurable():
        raise OperatorSetting(
            f"plugin {plugin} runs programs or uses the server's files: only the "
            "provider's administrators configure it"
        )
    if not NAME_RE.match(name):
        raise ValidationError("name", "must be 1 to 64 letters, digits, spaces, _ . -")
    fields = {f.name: f for f in info.settings}
    given: dict[str, str] = {}
    for s in settings or []:
        if s.name not in fields:
            raise ValidationError("settings", f"plugin {plugin} has no setting {s.name!r}")
        if s.name in given:
            raise ValidationError("settings", f"{s.name!r} given twice")
        if fields[s.name].operator_only and not operator:
            raise OperatorSetting(
                f"setting {s.name!r} of plugin {plugin} is a {fields[s.name].kind}: "
                "only the provider's administrators set it"
            )
        given[s.name] = s.value
    inst = ctx.session.scalar(
        select(PluginInstance)
        .where(PluginInstance.account_id == ctx.principal.account_id, PluginInstance.name == name)
        .with_for_update()
    )
    if inst is not None and inst.plugin != plugin:
        raise Conflict(f"instance {name!r} is a {inst.plugin} instance")
    old_secret: dict[str, str] = (
        json.loads(ctx.secrets.decrypt(inst.secrets)) if inst is not None else {}
    )
    plain = {k: v for k, v in given.items() if not fields[k].secret}
    secret = {**old_secret, **{k: v for k, v in given.items() if fields[k].secret}}
    for f in fields.values():
        if f.required and f.default is None and f.name not in plain and f.name not in secret:
            if f.operator_only and not operator:
                raise OperatorSetting(
                    f"plugin {plugin} needs its {f.kind} setting {f.name!r}, which only the "
                    "provider's administrators set: use an instance the provider offers"
                )
            raise ValidationError("settings", f"{f.name!r} is required")
    try:  # the plugin checks its own settings; its message must not echo secrets
        loader.instantiate(
            p.cls,
            {**{f.name: f.default or "" for f in fields.values()}, **plain, **secret},
            clock=ctx.clock,
        )
    except ConfigurationError as exc:
        raise ValidationError("settings", str(exc)) from None
    now = ctx.now()
    if inst is None:
        inst = PluginInstance(
            account_id=ctx.principal.account_id,
            plugin=plugin,
            name=name,
            created_at=now,
        )
        ctx.session.add(inst)
    inst.settings = json.dumps(plain, sort_keys=True)
    inst.secrets = ctx.secrets.encrypt(json.dumps(secret, sort_keys=True))
    inst.status = "active"
    inst.updated_at = now
    ctx.session.flush()
    # the audit entry names the changed settings, never their values
    audit.record(
        ctx,
        "plugin_instance",
        inst.id,
        ctx.principal.account_path,
        {"plugin": plugin, "name": name, "settings": sorted(given)},
    )
    return _info(inst)


def get_instance(ctx: CallContext, instance_id: int) -> PluginInstance:
    row = ctx.session.execute(
        select(PluginInstance, Account.path)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1]):
        raise NotFound(f"plugin instance {instance_id} not found")
    return row[0]  # type: ignore[no-any-return]


@operation("PluginInstanceList", roles=ADMIN | READERS)
def plugin_instance_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> PluginInstancePage:
    """Plugin instances of an account's subtree (default: the caller's)."""
    path = visible_path(ctx, account_id)
    q = (
        select(PluginInstance)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(Account.path.startswith(path, autoescape=True))
        .order_by(PluginInstance.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return PluginInstancePage([_info(i) for i in rows], total, offset, limit)


@operation("PluginInstanceGet", roles=ADMIN | READERS)
def plugin_instance_get(ctx: CallContext, *, instance_id: int) -> PluginInstanceInfo:
    """One plugin instance (secret settings: names only)."""
    return _info(get_instance(ctx, instance_id))


@operation("PluginInstanceDisable", roles=ADMIN, mutating=True)
def plugin_instance_disable(ctx: CallContext, *, instance_id: int) -> PluginInstanceInfo:
    """Stop using an instance: no new payment methods or charges go through it.
    Pending charges are still reconciled."""
    inst = get_instance(ctx, instance_id)
    inst.status = "disabled"
    inst.updated_at = ctx.now()
    audit.record(
        ctx, "plugin_instance", inst.id, ctx.principal.account_path, {"status": "disabled"}
    )
    return _info(inst)


def _rule_info(r: RoutingRule) -> RoutingRuleInfo:
    return RoutingRuleInfo(
        account_id=r.account_id,
        position=r.position,
        brand=r.brand,
        currency=r.currency,
        instance_id=r.instance_id,
    )


@operation("PaymentRoutingSet", roles=ADMIN, mutating=True)
def payment_routing_set(
    ctx: CallContext, *, rules: list[RoutingRuleInput] | None = None
) -> list[RoutingRuleInfo]:
    """Replace the caller's account's routing rules. For a new payment method
    of one of its customers, the first rule (in the order given) whose brand
    and currency match (empty matches any) names the gateway instance; with
    no match, the parent account's rules are asked, and so on up. No rules
    (omitted or empty) clears them."""
    rules = rules or []
    if len(rules) > 100:
        raise ValidationError("rules", "at most 100")
    for i, rule in enumerate(rules):
        inst = get_instance(ctx, rule.instance_id)
        if inst.account_id != ctx.principal.account_id:
            owner = ctx.session.get(Account, inst.account_id)
            assert owner is not None
            if not ctx.principal.account_path.startswith(owner.path):
                raise ValidationError(f"rules[{i}].instance_id", "is not a gateway of yours")
        if rule.currency is not None and not re.fullmatch(r"[A-Z]{3}", rule.currency):
            raise ValidationError(f"rules[{i}].currency", "must be an ISO 4217 code")
    for old in ctx.session.scalars(
        select(RoutingRule).where(RoutingRule.account_id == ctx.principal.account_id)
    ):
        ctx.session.delete(old)
    ctx.session.flush()
    made = [
        RoutingRule(
            account_id=ctx.principal.account_id,
            position=i,
            brand=(rule.brand or "").strip().lower() or None,
            currency=rule.currency,
            instance_id=rule.instance_id,
        )
        for i, rule in enumerate(rules)
    ]
    ctx.session.add_all(made)
    ctx.session.flush()
    audit.record(
        ctx,
        "payment_routing",
        ctx.principal.account_id,
        ctx.principal.account_path,
        {"rules": [[r.brand, r.currency, r.instance_id] for r in made]},
    )
    return [_rule_info(r) for r in made]


@operation("PaymentRoutingList", roles=ADMIN | READERS)
def payment_routing_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> RoutingRulePage:
    """An account's routing rules in order (default: the caller's)."""
    acc = get_account(ctx, account_id if account_id is not None else ctx.principal.account_id)
    q = select(RoutingRule).where(RoutingRule.account_id == acc.id).order_by(RoutingRule.position)
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return RoutingRulePage([_rule_info(r) for r in rows], total, offset, limit)


def route(ctx: CallContext, customer: Account, brand: str, currency: str) -> PluginInstance:
    """The gateway instance for a customer's card: its sellers' rules, nearest first."""
    ids = [int(x) for x in customer.path.strip("/").split("/") if x][:-1]
    for seller_id in reversed(ids):
        for rule in ctx.session.scalars(
            select(RoutingRule)
            .where(RoutingRule.account_id == seller_id)
            .order_by(RoutingRule.position)
        ):
            if rule.brand not in (None, brand.strip().lower()):
                continue
            if rule.currency not in (None, currency):
                continue
            inst: PluginInstance | None = ctx.session.get(PluginInstance, rule.instance_id)
            if inst is not None and inst.status == "active":
                return inst
    raise ValidationError("instance_id", f"no routing rule for {brand} in {currency}: name one")
