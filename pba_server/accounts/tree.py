"""The account tree: ``AccountCreate`` (which parent takes which type),
``AccountGet``, ``AccountList`` and ``AccountUpdate``.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import bindparam, func, select

from pba_server.accounts import checks
from pba_server.accounts.models import Account, Contact
from pba_server.accounts.records import (
    CONTACT_EDITORS,
    MANAGERS,
    account_event,
    account_info,
    account_info_of,
    account_updated,
    contacts_of,
    get_account,
    insert_account,
    new_contact,
    snapshot,
)
from pba_server.accounts.types import (
    AccountInfo,
    AccountPage,
    AccountStatus,
    AccountType,
    ContactInput,
    NewAccountType,
    PartnerLevel,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.money import check_currency
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.scope import visible_path

# Which parent types each account type may be created under.
ALLOWED_PARENTS: dict[str, frozenset[str]] = {
    "customer_personal": frozenset({"provider", "reseller"}),
    "customer_business": frozenset({"provider", "reseller"}),
    "enterprise": frozenset({"provider", "reseller"}),
    "reseller": frozenset({"provider", "reseller"}),
    "department": frozenset({"enterprise"}),
}


_ACCOUNT_WITH_CONTACTS = (
    select(Account, Contact)
    .outerjoin(Contact, Contact.account_id == Account.id)
    .where(Account.id == bindparam("account_id"))
    .order_by(Contact.id)
)


@operation("AccountCreate", roles=MANAGERS, mutating=True)
def account_create(
    ctx: CallContext,
    *,
    type: NewAccountType,
    name: str,
    parent_id: int | None = None,
    currency: str | None = None,
    credit_limit: Decimal | None = None,
    partner_level: PartnerLevel | None = None,
    tax_id: str | None = None,
    country: str | None = None,
    contacts: list[ContactInput] | None = None,
) -> AccountInfo:
    """Create a customer, reseller, enterprise or department account.

    The parent defaults to the caller's own account. Customers and enterprises go
    under the provider or a reseller (not an affiliate, which owns no customers);
    resellers under the provider or another reseller; departments only under an
    enterprise, in its currency. ``partner_level`` is required for resellers and
    refused for everything else. The currency defaults to the parent's.
    """
    parent = get_account(ctx, parent_id if parent_id is not None else ctx.principal.account_id)
    if parent.type not in ALLOWED_PARENTS[type]:
        raise ValidationError(
            "parent_id",
            f"a {type} account cannot be created under a {parent.type} account "
            f"(allowed parents: {', '.join(sorted(ALLOWED_PARENTS[type]))})",
        )
    if parent.type == "reseller" and parent.partner_level == "affiliate":
        raise ValidationError(
            "parent_id", "an affiliate reseller earns referral commission and owns no accounts"
        )
    if parent.status != "active":
        raise InvalidState(f"account {parent.id} is {parent.status} and takes no new accounts")
    if type == "reseller":
        if partner_level is None:
            raise ValidationError("partner_level", "is required for a reseller")
    elif partner_level is not None:
        raise ValidationError("partner_level", "only resellers have a partner level")
    cur = check_currency(currency) if currency else parent.currency
    if type == "department" and cur != parent.currency:
        raise ValidationError("currency", "a department uses its enterprise's currency")
    acc = insert_account(
        ctx,
        type=type,
        parent=parent,
        name=checks.text(name, "name"),
        currency=cur,
        credit_limit=checks.credit_limit(
            credit_limit if credit_limit is not None else Decimal(0), cur
        ),
        partner_level=partner_level,
        tax_id=checks.opt_text(tax_id, "tax_id", 64),
        country=checks.country(country),
    )
    new_contacts = [new_contact(acc.id, c, f"contacts[{i}]") for i, c in enumerate(contacts or [])]
    ctx.session.add_all(new_contacts)
    ctx.session.flush()
    audit.record(ctx, "account", acc.id, acc.path, {"created": snapshot(acc)})
    account_event(ctx, "account.created", acc)
    return account_info_of(acc, new_contacts)


@operation("AccountGet", roles=ANY_ROLE)
def account_get(ctx: CallContext, *, account_id: int) -> AccountInfo:
    """One account with its contacts."""
    # one round trip: the account and its contacts (if any) in one outer join
    rows = ctx.session.execute(_ACCOUNT_WITH_CONTACTS, {"account_id": account_id}).all()
    acc = rows[0][0] if rows else None
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"account {account_id} not found")
    return account_info_of(acc, [c for _a, c in rows if c is not None])


@operation("AccountList", roles=ANY_ROLE)
def account_list(
    ctx: CallContext,
    *,
    parent_id: int | None = None,
    type: AccountType | None = None,
    status: AccountStatus | None = None,
    name_contains: str | None = None,
    recursive: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> AccountPage:
    """Accounts directly under ``parent_id`` (default: the caller's account), or
    anywhere below it with ``recursive``; filtered by type, status and a
    case-insensitive name fragment; ordered by id."""
    check_page(offset, limit)
    path = visible_path(ctx, parent_id)
    q = select(Account)
    if recursive:
        q = q.where(Account.path.startswith(path, autoescape=True), Account.path != path)
    else:
        pid = parent_id if parent_id is not None else ctx.principal.account_id
        q = q.where(Account.parent_id == pid)
    if type:
        q = q.where(Account.type == type)
    if status:
        q = q.where(Account.status == status)
    if name_contains:
        q = q.where(func.lower(Account.name).contains(name_contains.lower(), autoescape=True))
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = list(ctx.session.scalars(q.order_by(Account.id).offset(offset).limit(limit)))
    contacts = contacts_of(ctx, [a.id for a in rows])
    return AccountPage(
        items=[account_info_of(a, contacts[a.id]) for a in rows],
        total=total,
        offset=offset,
        limit=limit,
    )


@operation("AccountUpdate", roles=MANAGERS | CONTACT_EDITORS, mutating=True)
def account_update(
    ctx: CallContext,
    *,
    account_id: int,
    name: str | None = None,
    tax_id: str | None = None,
    country: str | None = None,
) -> AccountInfo:
    """Change an account's name, tax id or country. Omitted fields stay as they
    are; an empty string clears ``tax_id`` or ``country``."""
    acc = get_account(ctx, account_id, for_update=True)
    if acc.status == "closed":
        raise InvalidState(f"account {acc.id} is closed")
    before = snapshot(acc)
    if name is not None:
        acc.name = checks.text(name, "name")
    if tax_id is not None:
        acc.tax_id = checks.opt_text(tax_id, "tax_id", 64)
    if country is not None:
        acc.country = checks.country(country)
    changes = audit.diff(before, snapshot(acc))
    if changes:
        acc.updated_at = ctx.now()
        audit.record(ctx, "account", acc.id, acc.path, changes)
        account_updated(ctx, acc, changes)
    return account_info(ctx, acc)
