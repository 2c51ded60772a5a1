"""What the accounts rooms share: their role sets, reading an account the
caller sees (:func:`get_account`, which other features use), accounts and
contacts in their API shape, account events, and writing a new account row.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import bindparam, select

from pba_server import events
from pba_server.accounts import checks
from pba_server.accounts.models import Account, Contact
from pba_server.accounts.types import AccountInfo, ContactInfo, ContactInput
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound
from pba_server.core.money import quantize

MANAGERS = frozenset({"sales"})  # besides admin, who always may
BILLING = frozenset({"billing"})
CONTACT_EDITORS = frozenset({"sales", "support"})


# Statements on the hot path are built once: building a select per call costs
# more CPU than running it (SQLAlchemy memoizes a statement's cache key).
_ACCOUNT_BY_ID = select(Account).where(Account.id == bindparam("account_id"))
_ACCOUNT_BY_ID_FOR_UPDATE = _ACCOUNT_BY_ID.with_for_update()
_CONTACTS_OF = (
    select(Contact)
    .where(Contact.account_id.in_(bindparam("account_ids", expanding=True)))
    .order_by(Contact.id)
)


def get_account(ctx: CallContext, account_id: int, *, for_update: bool = False) -> Account:
    q = _ACCOUNT_BY_ID_FOR_UPDATE if for_update else _ACCOUNT_BY_ID
    acc = ctx.session.scalar(q, {"account_id": account_id})
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"account {account_id} not found")
    return acc  # type: ignore[no-any-return]


def contact_info(c: Contact) -> ContactInfo:
    return ContactInfo(
        id=c.id,
        account_id=c.account_id,
        kind=c.kind,
        name=c.name,
        email=c.email,
        phone=c.phone,
        address=c.address,
        city=c.city,
        state=c.state,
        postal_code=c.postal_code,
        country=c.country,
    )


def account_info_of(acc: Account, contacts: list[Contact]) -> AccountInfo:
    return AccountInfo(
        id=acc.id,
        number=acc.number or "",
        type=acc.type,
        name=acc.name,
        status=acc.status,
        currency=acc.currency,
        credit_limit=quantize(acc.credit_limit, acc.currency),
        created_at=acc.created_at,
        updated_at=acc.updated_at,
        parent_id=acc.parent_id,
        partner_level=acc.partner_level,
        tax_id=acc.tax_id,
        country=acc.country,
        contacts=[contact_info(c) for c in contacts],
    )


def contacts_of(ctx: CallContext, account_ids: list[int]) -> dict[int, list[Contact]]:
    out: dict[int, list[Contact]] = {i: [] for i in account_ids}
    if account_ids:
        rows = ctx.session.scalars(_CONTACTS_OF, {"account_ids": account_ids})
        for c in rows:
            out[c.account_id].append(c)
    return out


def account_info(ctx: CallContext, acc: Account) -> AccountInfo:
    return account_info_of(acc, contacts_of(ctx, [acc.id])[acc.id])


def snapshot(acc: Account) -> dict[str, object]:
    return {
        "name": acc.name,
        "status": acc.status,
        "currency": acc.currency,
        "credit_limit": acc.credit_limit,
        "partner_level": acc.partner_level,
        "tax_id": acc.tax_id,
        "country": acc.country,
        "type": acc.type,
        "parent_id": acc.parent_id,
    }


def account_event(ctx: CallContext, type: str, acc: Account, **extra: object) -> None:
    payload: dict[str, object] = {
        "account_id": acc.id,
        "number": acc.number or "",
        "name": acc.name,
        "type": acc.type,
        "status": acc.status,
        "parent_id": acc.parent_id,
    }
    payload.update(extra)
    events.emit(ctx, type, ("account", acc.id), payload, account_id=acc.id, account_path=acc.path)


def account_updated(ctx: CallContext, acc: Account, changes: dict[str, object]) -> None:
    events.emit(
        ctx,
        "account.updated",
        ("account", acc.id),
        {"account_id": acc.id, "changes": changes},
        account_id=acc.id,
        account_path=acc.path,
    )


def new_contact(account_id: int, c: ContactInput, field: str) -> Contact:
    return Contact(
        account_id=account_id,
        kind=c.kind,
        name=checks.text(c.name, f"{field}.name"),
        email=checks.email(c.email, f"{field}.email"),
        phone=checks.opt_text(c.phone, f"{field}.phone", 64),
        address=checks.opt_text(c.address, f"{field}.address"),
        city=checks.opt_text(c.city, f"{field}.city", 128),
        state=checks.opt_text(c.state, f"{field}.state", 128),
        postal_code=checks.opt_text(c.postal_code, f"{field}.postal_code", 32),
        country=checks.country(c.country, f"{field}.country"),
    )


def insert_account(
    ctx: CallContext,
    *,
    type: str,
    parent: Account | None,
    name: str,
    currency: str,
    credit_limit: Decimal,
    partner_level: str | None = None,
    tax_id: str | None = None,
    country: str | None = None,
) -> Account:
    """Write an account row and give it its path and number (one flush)."""
    now = ctx.now()
    acc = Account(
        type=type,
        parent_id=parent.id if parent else None,
        path="",
        name=name,
        status="active",
        currency=currency,
        credit_limit=credit_limit,
        partner_level=partner_level,
        tax_id=tax_id,
        country=country,
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(acc)
    ctx.session.flush()
    acc.path = f"{parent.path if parent else '/'}{acc.id}/"
    acc.number = f"{1000000 + acc.id}"
    ctx.session.flush()
    return acc
