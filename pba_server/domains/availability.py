"""Whether names can be had: ``DomainCheck`` (asked of each TLD's registrar)
and :func:`check_order`, what orders asks before a domain plan is ordered.
"""

from __future__ import annotations

import json
from typing import Annotated

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext
from pba_server.core.errors import Busy, Unavailable, ValidationError
from pba_server.core.money import quantize
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path
from pba_server.domains.models import Domain, Tld, TldPrice
from pba_server.domains.names import check_nameservers, normalize_domain, taken_message
from pba_server.domains.registrars import registrar_for, tld_of
from pba_server.domains.types import DomainCheckItem
from pba_server.payments.models import PluginInstance
from pba_server.sdk import PluginBusy, PluginError
from pba_server.sdk.registrar import CheckResult, RegistrarUnavailable

MAX_CHECK = 50


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
