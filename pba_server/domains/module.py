"""The builtin processing module ``domains``: provisioning a domain service
through its TLD's registrar instance.

``build(ctx, service)`` (in the engine's transaction) finds the service's
domain row -- creating it from the service's parameters (``domain``,
``action``, ``auth_code``, ``nameservers``) on the first call -- its TLD and
registrar instance, and returns a :class:`DomainModule`: a
:class:`~pba_server.sdk.provisioning.ProcessingModule` holding a snapshot of
what it needs, so that :meth:`DomainModule.perform` runs outside any
transaction. ``on_result`` writes the outcome on the domain row.

Actions:

- ``create`` -> ``register`` (or ``transfer``: the result is usually
  pending; the engine polls and the module asks ``info`` until the domain is
  ours);
- ``prolong`` -> ``renew`` up to ``request.until`` (the new end of the paid
  period); a domain that already expires on or after it is done (a repeat
  after a lost answer renews once);
- ``change`` -> ``set_nameservers`` from the ``nameservers`` parameter;
- ``sync`` -> ``info`` (expiry date, status, name servers);
- ``suspend``/``resume`` -> done, nothing at the registry (an unpaid domain
  is simply not renewed);
- ``delete`` -> not supported: a manual task (registries do not refund and
  deleting a name is a decision for a person).

Registrar exceptions: :class:`RegistrarUnavailable` and anything unexpected
-> retryable; :class:`RegistrarError` (ObjectExists, AuthorizationError...)
-> final. What is written on the domain row (``last_error``, which the
tenant reads) is the SDK exception's masked message (the registry's refusal,
its code) or, for anything unexpected, a generic text with a correlation id;
the detail goes to the operator's log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account
from pba_server.accounts.models import Contact as AccountContact
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.domains import names, registrars
from pba_server.provisioning.registry import BuiltinModule, register_builtin
from pba_server.sdk import SDK_VERSION, NotSupported, PluginBusy, PluginError, PluginInfo
from pba_server.sdk import guard as plugincall
from pba_server.sdk.provisioning import (
    Done,
    FinalFailure,
    InProgress,
    ModuleResult,
    ProcessingModule,
    RetryableFailure,
    ServiceRequest,
)
from pba_server.sdk.registrar import (
    Contact,
    DomainRegistrar,
    DomainResult,
    RegistrarError,
    RegistrarUnavailable,
)

log = logging.getLogger("pba.domains")

NAME = "domains"
CAPABILITIES = frozenset({"create", "prolong", "change", "sync", "suspend", "resume"})
TRANSFER_POLL_SECONDS = 3600


@dataclass(frozen=True)
class DomainJob:
    """What the module needs, read from the database by ``build``."""

    domain_id: int
    name: str
    action: str  # register | transfer
    status: str
    years: int
    expires_on: date | None
    nameservers: list[str]
    contacts: dict[str, Contact]
    auth_code: str = ""
    new_nameservers: list[str] | None = None
    error: str | None = None  # the service cannot be provisioned (bad parameters)
    extra: dict[str, str] = field(default_factory=dict)


def _domain_data(
    name: str, expires_on: date | None, registry_id: str | None, status: str
) -> dict[str, str]:
    data = {"domain": name, "status": status}
    if expires_on is not None:
        data["expires_on"] = expires_on.isoformat()
    if registry_id:
        data["registry_id"] = registry_id
    return data


class DomainModule(ProcessingModule):
    """Adapter from provisioning actions to registrar calls."""

    info = PluginInfo(
        name=NAME,
        version="1.0",
        sdk_version=SDK_VERSION,
        kind="processing_module",
        description="Domains through the TLD's registrar instance",
        capabilities=CAPABILITIES,
    )

    def __init__(self, registrar: DomainRegistrar | None, job: DomainJob) -> None:
        super().__init__({})
        self.registrar = registrar
        self.job = job

    # -- the one entry point
    def perform(self, request: ServiceRequest) -> ModuleResult:
        job = self.job
        if request.action == "delete":
            raise NotSupported("deleting a domain is done by a person")
        if request.action in ("suspend", "resume"):
            return Done(data={"domain": job.name})
        if job.error is not None:
            return FinalFailure(job.error)
        if self.registrar is None:
            return FinalFailure(f"no registrar for {job.name}")
        try:
            if request.action == "create":
                return self._create(request)
            if request.action == "prolong":
                return self._prolong(request)
            if request.action == "change":
                return self._change(request)
            if request.action == "sync":
                return self._sync()
        except (NotSupported, PluginBusy):  # the engine: a task / not called, retried
            raise
        except RegistrarUnavailable as exc:
            return RetryableFailure(f"registrar unavailable: {exc}")
        except RegistrarError as exc:
            code = f"{exc.code} " if exc.code else ""
            return FinalFailure(f"{type(exc).__name__}: {code}{exc}".strip())
        except PluginError as exc:
            return RetryableFailure(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # outcome unknown: the same key is asked again
            return RetryableFailure(
                plugincall.unexpected(log, f"the registrar call for {job.name}", exc)
            )
        raise NotSupported(f"{request.action} is not supported")

    def _done(self, r: DomainResult) -> ModuleResult:
        if r.status == "pending":
            return InProgress(TRANSFER_POLL_SECONDS, f"{r.name}: pending at the registry")
        return Done(
            platform_id=r.registry_id or r.name,
            data=_domain_data(r.name, r.expires_on, r.registry_id, "active"),
        )

    def _create(self, request: ServiceRequest) -> ModuleResult:
        job, reg = self.job, self.registrar
        assert reg is not None
        if job.status == "active":  # done before (a repeat after on_result)
            return Done(
                platform_id=request.platform_id or job.name,
                data=_domain_data(job.name, job.expires_on, None, "active"),
            )
        if job.action == "transfer":
            if job.status == "transferring":  # polled: is it ours yet?
                info = reg.domain_info(job.name)
                if info.status == "active":
                    return Done(
                        platform_id=info.registry_id or job.name,
                        data=_domain_data(job.name, info.expires_on, info.registry_id, "active"),
                    )
                return InProgress(TRANSFER_POLL_SECONDS, f"{job.name}: transfer {info.status}")
            return self._done(
                reg.transfer(
                    key=request.key, name=job.name, auth_code=job.auth_code, years=job.years
                )
            )
        return self._done(
            reg.register(
                key=request.key,
                name=job.name,
                years=job.years,
                contacts=job.contacts,
                nameservers=job.nameservers,
            )
        )

    def _prolong(self, request: ServiceRequest) -> ModuleResult:
        job, reg = self.job, self.registrar
        assert reg is not None
        until = date.fromisoformat(request.until) if request.until else None
        current = job.expires_on
        if current is None:
            info = reg.domain_info(job.name)
            current = info.expires_on
        if current is None:
            return FinalFailure(f"{job.name}: the registry gives no expiry date")
        if until is not None and current >= until:
            return Done(data=_domain_data(job.name, current, None, "active"))
        years = job.years
        if until is not None:
            years = max(1, round((until - current).days / 365.25))
        try:
            result = reg.renew(key=request.key, name=job.name, years=years, current_expiry=current)
        except RegistrarError:
            # a repeat of a renewal whose answer was lost is refused (the
            # expiry date moved on): the registry's date tells
            info = reg.domain_info(job.name)
            if until is not None and info.expires_on is not None and info.expires_on >= until:
                return Done(
                    data=_domain_data(job.name, info.expires_on, info.registry_id, "active")
                )
            raise
        return self._done(result)

    def _change(self, request: ServiceRequest) -> ModuleResult:
        job, reg = self.job, self.registrar
        assert reg is not None
        # the engine gives a change the subscription's current parameters
        hosts = job.new_nameservers
        if "nameservers" in request.parameters:
            from pba_server.core.errors import PbaError

            try:
                hosts = names.check_nameservers(_hosts(request.parameters["nameservers"]))
            except PbaError as exc:
                return FinalFailure(str(exc))
        if not hosts:
            return Done(data={"domain": job.name})
        info = reg.set_nameservers(key=request.key, name=job.name, nameservers=hosts)
        data = _domain_data(job.name, info.expires_on, info.registry_id, "active")
        data["nameservers"] = ",".join(hosts)
        return Done(data=data)

    def _sync(self) -> ModuleResult:
        job, reg = self.job, self.registrar
        assert reg is not None
        info = reg.domain_info(job.name)
        data = _domain_data(job.name, info.expires_on, info.registry_id, info.status)
        data["nameservers"] = ",".join(info.nameservers)
        return Done(platform_id=info.registry_id or job.name, data=data)


# ---------------------------------------------------------------- build / on_result


def _hosts(value: str) -> list[str]:
    return [h for h in value.replace(" ", ",").split(",") if h]


def _params(service: Any) -> dict[str, str]:
    raw = getattr(service, "parameters", None) or "{}"
    value = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _template_settings(ctx: CallContext, service: Any) -> tuple[int | None, dict[str, str]]:
    from pba_server.catalog.models import ServiceTemplate

    template_id = getattr(service, "template_id", None)
    if template_id is None:
        return None, {}
    t = ctx.session.get(ServiceTemplate, template_id)
    if t is None:
        return None, {}
    return t.owner_id, json.loads(t.module_settings or "{}")


def account_contacts(ctx: CallContext, account_id: int) -> dict[str, Contact]:
    """Registrant, admin, tech and billing contacts from the account's own:
    administrative -> registrant and admin, technical -> tech, billing ->
    billing; a missing kind falls back to the first contact there is."""
    acc = ctx.session.get(Account, account_id)
    assert acc is not None
    rows = ctx.session.scalars(
        select(AccountContact)
        .where(AccountContact.account_id == account_id)
        .order_by(AccountContact.id)
    ).all()
    if not rows:
        return {}
    by_kind = {c.kind: c for c in reversed(rows)}
    org = acc.name if acc.type != "customer_personal" else ""

    def conv(c: AccountContact) -> Contact:
        return Contact(
            name=c.name,
            email=c.email,
            phone=c.phone or "",
            organization=org,
            street=c.address or "",
            city=c.city or "",
            state=c.state or "",
            postal_code=c.postal_code or "",
            country=(c.country or acc.country or ""),
        )

    first = rows[0]
    admin = by_kind.get("administrative", first)
    return {
        "registrant": conv(admin),
        "admin": conv(admin),
        "tech": conv(by_kind.get("technical", admin)),
        "billing": conv(by_kind.get("billing", admin)),
    }


def _years(ctx: CallContext, subscription_id: int | None) -> int:
    if subscription_id is None:
        return 1
    from pba_server.subscriptions.models import Subscription

    sub = ctx.session.get(Subscription, subscription_id)
    if sub is not None and sub.period_unit == "year":
        return max(1, min(10, int(sub.period_count)))
    return 1


def _failing(name: str, message: str) -> DomainModule:
    return DomainModule(
        None, DomainJob(0, name, "register", "failed", 1, None, [], {}, error=message)
    )


def _taken(ctx: CallContext, name: str, account_id: int) -> str:
    """The failure for a name live on another row: "here" only when that row is
    the same account's (the seller sees this message; see taken_message)."""
    from pba_server.domains.models import Domain

    holder = ctx.session.scalar(select(Domain.account_id).where(Domain.live_name == name))
    return "domain: " + names.taken_message(name, holder is None or holder == account_id)


def _find_or_create(ctx: CallContext, service: Any) -> tuple[Any, str | None]:
    """The service's domain row (created from its parameters the first time),
    or None and why it cannot be."""
    from pba_server.domains.models import Domain, Tld

    d = ctx.session.scalar(select(Domain).where(Domain.service_id == service.id).with_for_update())
    if d is not None and d.status == "failed":  # asked again (OperationRetry): live again
        try:
            with ctx.session.begin_nested():
                d.live_name, d.status = d.name, "pending"
                ctx.session.flush()
        except IntegrityError:
            ctx.session.refresh(d)
            return None, _taken(ctx, d.name, d.account_id)
    if d is not None:
        return d, None
    params = _params(service)
    try:
        name = names.normalize_domain(params.get("domain", ""), "domain")
    except Exception as exc:
        return None, str(exc)
    owner_id, settings = _template_settings(ctx, service)
    action = (params.get("action") or settings.get("action") or "register").strip().lower()
    if action not in ("register", "transfer"):
        return None, f"action: must be register or transfer, not {action!r}"
    if action == "transfer" and not params.get("auth_code"):
        return None, "auth_code: a transfer needs the domain's auth code"
    try:
        hosts = names.check_nameservers(
            [h for h in params.get("nameservers", "").replace(" ", ",").split(",") if h]
        )
    except Exception as exc:
        return None, str(exc)
    acc = ctx.session.get(Account, service.account_id)
    assert acc is not None
    tld = None
    if owner_id is not None and settings.get("tld"):
        tld = ctx.session.scalar(
            select(Tld).where(Tld.owner_id == owner_id, Tld.name == settings["tld"])
        )
    if tld is None:
        tld = registrars.tld_of(ctx.session, acc.path, name)
    if tld is None or not name.endswith("." + tld.name):
        return None, f"domain: {name} is not under a TLD sold here"
    # another live row with this name: a second order for the same domain,
    # or the row of this very subscription made before the service existed
    existing = ctx.session.scalar(select(Domain).where(Domain.live_name == name).with_for_update())
    if existing is not None:
        same_sub = (
            existing.subscription_id is not None
            and existing.subscription_id == getattr(service, "subscription_id", None)
            and existing.service_id is None
        )
        if not same_sub:
            return None, _taken(ctx, name, service.account_id)
        existing.service_id = service.id
        return existing, None
    now = ctx.now()
    d = Domain(
        name=name,
        live_name=name,
        account_id=service.account_id,
        subscription_id=getattr(service, "subscription_id", None),
        service_id=service.id,
        tld_id=tld.id,
        instance_id=tld.instance_id,
        status="pending",
        action=action,
        nameservers=json.dumps(hosts),
        contacts=json.dumps(
            {r: c.__dict__ for r, c in account_contacts(ctx, service.account_id).items()},
            sort_keys=True,
        ),
        created_at=now,
        updated_at=now,
    )
    try:
        with ctx.session.begin_nested():  # a concurrent order for the same name loses here
            ctx.session.add(d)
            ctx.session.flush()
    except IntegrityError:
        return None, _taken(ctx, name, service.account_id)
    audit.record(
        ctx,
        "domain",
        d.id,
        acc.path,
        {"created": {"name": name, "action": action, "service_id": service.id}},
    )
    return d, None


def build(ctx: CallContext, service: Any) -> ProcessingModule:
    from pba_server.payments.models import PluginInstance

    d, error = _find_or_create(ctx, service)
    if d is None:
        return _failing(_params(service).get("domain", ""), error or "no domain")
    params = _params(service)
    contacts = registrars.contacts_of(d)
    if "registrant" not in contacts and d.action == "register":
        return _failing(d.name, f"account {d.account_id} has no contact for the registrant")
    new_hosts: list[str] | None = None
    if params.get("nameservers"):
        try:
            new_hosts = names.check_nameservers(
                [h for h in params["nameservers"].replace(" ", ",").split(",") if h]
            )
        except Exception as exc:
            return _failing(d.name, str(exc))
    job = DomainJob(
        domain_id=d.id,
        name=d.name,
        action=d.action,
        status=d.status,
        years=_years(ctx, d.subscription_id),
        expires_on=d.expires_on,
        nameservers=json.loads(d.nameservers or "[]"),
        contacts=contacts,
        auth_code=params.get("auth_code", ""),
        new_nameservers=new_hosts,
    )
    inst = ctx.session.get(PluginInstance, d.instance_id)
    assert inst is not None
    try:
        registrar = registrars.registrar_for(ctx.secrets, inst, ctx.clock)
    except PluginError as exc:  # built(): masked, or generic with a ref
        return DomainModule(None, DomainJob(**{**job.__dict__, "error": f"registrar: {exc}"}))
    except Exception as exc:
        why = plugincall.unexpected(log, f"setting up the registrar of {d.name}", exc)
        return DomainModule(None, DomainJob(**{**job.__dict__, "error": f"registrar: {why}"}))
    return DomainModule(registrar, job)


def on_result(ctx: CallContext, service: Any, action: str, result: ModuleResult) -> None:
    """Write a registrar call's outcome on the service's domain row."""
    from pba_server.domains.models import Domain

    d = ctx.session.scalar(select(Domain).where(Domain.service_id == service.id).with_for_update())
    if d is None:
        return
    now = ctx.now()
    if isinstance(result, Done):
        data = result.data
        if data.get("expires_on"):
            d.expires_on = date.fromisoformat(data["expires_on"])
        if data.get("registry_id"):
            d.registry_id = data["registry_id"][:128]
        if data.get("nameservers") is not None and action in ("change", "sync"):
            d.nameservers = json.dumps([h for h in data["nameservers"].split(",") if h])
        if action == "delete":  # a person deleted it (the manual task's result)
            d.status = "deleted"
            d.live_name = None
            d.updated_at = now
            return
        if action in ("create", "prolong", "change"):
            d.status = "active"
        elif action == "sync" and data.get("status") in ("active", "expired", "transferring"):
            d.status = data["status"]
        d.live_name = d.name
        d.last_error = None
    elif isinstance(result, InProgress):
        if action == "create" and d.action == "transfer":
            d.status = "transferring"
        d.last_error = None
    elif isinstance(result, FinalFailure):
        d.last_error = result.message[:2000]
        if action == "create":
            d.status = "failed"
            d.live_name = None
    elif isinstance(result, RetryableFailure):
        d.last_error = result.message[:2000]
    d.updated_at = now


register_builtin(
    BuiltinModule(name=NAME, capabilities=CAPABILITIES, build=build, on_result=on_result)
)
