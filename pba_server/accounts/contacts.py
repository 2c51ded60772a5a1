"""An account's contacts: ``Contact*``."""

from __future__ import annotations

from sqlalchemy import select

from pba_server.accounts import checks
from pba_server.accounts.models import Account, Contact
from pba_server.accounts.records import (
    CONTACT_EDITORS,
    MANAGERS,
    contact_info,
    get_account,
    new_contact,
)
from pba_server.accounts.types import ContactInfo, ContactInput, ContactKind, ContactPage
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound
from pba_server.core.operations import ANY_ROLE, operation


def _get_contact(ctx: CallContext, contact_id: int) -> tuple[Contact, Account]:
    row = ctx.session.execute(
        select(Contact, Account)
        .join(Account, Contact.account_id == Account.id)
        .where(Contact.id == contact_id)
    ).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"contact {contact_id} not found")
    return row[0], row[1]


@operation("ContactAdd", roles=MANAGERS | CONTACT_EDITORS, mutating=True)
def contact_add(ctx: CallContext, *, account_id: int, contact: ContactInput) -> ContactInfo:
    """Add a billing, technical or administrative contact to an account."""
    acc = get_account(ctx, account_id)
    if acc.status == "closed":
        raise InvalidState(f"account {acc.id} is closed")
    c = new_contact(acc.id, contact, "contact")
    ctx.session.add(c)
    ctx.session.flush()
    info = contact_info(c)
    audit.record(ctx, "contact", c.id, acc.path, {"created": info})
    return info


@operation("ContactUpdate", roles=MANAGERS | CONTACT_EDITORS, mutating=True)
def contact_update(
    ctx: CallContext,
    *,
    contact_id: int,
    kind: ContactKind | None = None,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    address: str | None = None,
    city: str | None = None,
    state: str | None = None,
    postal_code: str | None = None,
    country: str | None = None,
) -> ContactInfo:
    """Change a contact's fields; omitted fields stay, empty strings clear optional ones."""
    c, acc = _get_contact(ctx, contact_id)
    before = contact_info(c).__dict__.copy()
    if kind is not None:
        c.kind = kind
    if name is not None:
        c.name = checks.text(name, "name")
    if email is not None:
        c.email = checks.email(email, "email")
    if phone is not None:
        c.phone = checks.opt_text(phone, "phone", 64)
    if address is not None:
        c.address = checks.opt_text(address, "address")
    if city is not None:
        c.city = checks.opt_text(city, "city", 128)
    if state is not None:
        c.state = checks.opt_text(state, "state", 128)
    if postal_code is not None:
        c.postal_code = checks.opt_text(postal_code, "postal_code", 32)
    if country is not None:
        c.country = checks.country(country)
    info = contact_info(c)
    changes = audit.diff(before, info.__dict__)
    if changes:
        audit.record(ctx, "contact", c.id, acc.path, changes)
    return info


@operation("ContactRemove", roles=MANAGERS | CONTACT_EDITORS, mutating=True)
def contact_remove(ctx: CallContext, *, contact_id: int) -> bool:
    """Remove a contact. Returns true."""
    c, acc = _get_contact(ctx, contact_id)
    audit.record(ctx, "contact", c.id, acc.path, {"removed": contact_info(c)})
    ctx.session.delete(c)
    return True


@operation("ContactList", roles=ANY_ROLE)
def contact_list(
    ctx: CallContext,
    *,
    account_id: int,
    kind: ContactKind | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ContactPage:
    """An account's contacts, optionally of one kind."""
    acc = get_account(ctx, account_id)
    q = select(Contact).where(Contact.account_id == acc.id)
    if kind:
        q = q.where(Contact.kind == kind)
    rows, total = paging.scalars(ctx.session, q.order_by(Contact.id), offset, limit)
    return ContactPage([contact_info(c) for c in rows], total, offset, limit)
