"""Domain rows: their API shape (:func:`domain_info`), finding one the caller
sees, ``DomainGet``/``DomainList``, the live statuses, and moving a
subscription's domains with it (:func:`move_domains`, for transfer orders).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date

from sqlalchemy import func, select

from pba_server.accounts.models import Account
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path
from pba_server.domains.models import Domain
from pba_server.domains.registrars import contacts_of
from pba_server.domains.types import DomainContact, DomainInfo, DomainPage, DomainStatus
from pba_server.sdk.registrar import CONTACT_ROLES
from pba_server.subscriptions.store import move_with_subscription

LIVE: tuple[str, ...] = ("pending", "active", "expired", "transferring")


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


def get_domain(
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
    return domain_info(get_domain(ctx, domain_id)[0])


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


# the live statuses, for other modules
def is_live(status: str) -> bool:
    return status in LIVE


def move_domains(ctx: CallContext, subscription_id: int, account_id: int) -> list[int]:
    """The subscription moved to another account (a transfer order): its
    domain rows follow it (their registry contacts stay until the new owner
    sets them with DomainSetContacts). Returns the ids of the domains moved."""
    return move_with_subscription(ctx, Domain, "domain", subscription_id, account_id)
