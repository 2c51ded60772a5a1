"""Changing a domain at its registry: ``DomainSetNameservers`` and
``DomainSetContacts``.

Name servers and contacts are changed synchronously at the registrar: the
call returns once the registry has them; a registry that cannot be reached
is a ``Server.Unavailable`` fault and nothing changed (call again).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Annotated

from pba_server.accounts.models import Account
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import Busy, InvalidState, Unavailable, ValidationError
from pba_server.core.operations import operation
from pba_server.core.schema import MinLen
from pba_server.domains import (
    checks,
    module,  # noqa: F401  (registers the builtin module "domains")
)
from pba_server.domains.models import Domain
from pba_server.domains.names import MAX_NAMESERVERS, check_nameservers
from pba_server.domains.records import domain_info, get_domain
from pba_server.domains.registrars import contacts_of, registrar_for
from pba_server.domains.types import DomainContact, DomainInfo
from pba_server.payments.models import PluginInstance
from pba_server.sdk import NotSupported, PluginBusy, PluginError
from pba_server.sdk import guard as plugincall
from pba_server.sdk.registrar import DomainRegistrar, RegistrarError, RegistrarUnavailable

TECH = frozenset({"technical"})


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
    d, acc = get_domain(ctx, domain_id, for_update=True)
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


@operation("DomainSetContacts", roles=TECH, mutating=True)
def domain_set_contacts(
    ctx: CallContext, *, domain_id: int, contacts: Annotated[list[DomainContact], MinLen(1)]
) -> DomainInfo:
    """Replace the given roles' contacts (registrant, admin, tech, billing) of
    a domain at the registry, synchronously (like DomainSetNameservers);
    roles not given keep their contacts."""
    given = checks.check_contacts(contacts)
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
