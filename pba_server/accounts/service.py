"""Accounts, contacts, users and API keys (Account, Channel and Enterprise Manager)."""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from typing import Annotated, cast

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from pba_server import events
from pba_server.accounts.models import Account, ApiKey, Contact, User
from pba_server.accounts.types import (
    AccountInfo,
    AccountPage,
    AccountStatus,
    AccountType,
    ApiKeyCreated,
    ApiKeyInfo,
    ApiKeyPage,
    ContactInfo,
    ContactInput,
    ContactKind,
    ContactPage,
    NewAccountType,
    PartnerLevel,
    Role,
    UserInfo,
    UserPage,
    UserStatus,
    WhoAmIInfo,
)
from pba_server.core import audit, paging
from pba_server.core.auth import ROLES, hash_password
from pba_server.core.context import CallContext
from pba_server.core.errors import Conflict, Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.money import check_currency, money, quantize
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path
from pba_server.core.states import StateMachine

ACCOUNT_STATES = StateMachine(
    "account",
    {
        ("active", "suspend"): "suspended",
        ("suspended", "resume"): "active",
        ("active", "close"): "closed",
        ("suspended", "close"): "closed",
    },
)

# Which parent types each account type may be created under.
ALLOWED_PARENTS: dict[str, frozenset[str]] = {
    "customer_personal": frozenset({"provider", "reseller"}),
    "customer_business": frozenset({"provider", "reseller"}),
    "enterprise": frozenset({"provider", "reseller"}),
    "reseller": frozenset({"provider", "reseller"}),
    "department": frozenset({"enterprise"}),
}

MANAGERS = frozenset({"sales"})  # besides admin, who always may
BILLING = frozenset({"billing"})
CONTACT_EDITORS = frozenset({"sales", "support"})

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOGIN_RE = re.compile(r"^[A-Za-z0-9._@+-]{3,128}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
MIN_PASSWORD = 10


# ---------------------------------------------------------------- helpers


def _text(value: str, field: str, max_len: int = 255, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    return value


def _opt_text(value: str | None, field: str, max_len: int = 255) -> str | None:
    if value is None:
        return None
    value = _text(value, field, max_len, required=False)
    return value or None


def _country(value: str | None, field: str = "country") -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip().upper()
    if not COUNTRY_RE.match(value):
        raise ValidationError(field, "must be an ISO 3166-1 alpha-2 code such as DE or US")
    return value


def _email(value: str, field: str) -> str:
    value = value.strip()
    if not EMAIL_RE.match(value) or len(value) > 255:
        raise ValidationError(field, f"not a valid e-mail address: {value!r}")
    return value


def _credit_limit(value: Decimal, currency: str) -> Decimal:
    amount = money(value, currency, "credit_limit")
    if amount < 0:
        raise ValidationError("credit_limit", "must not be negative")
    return amount


# Statements on the hot path are built once: building a select per call costs
# more CPU than running it (SQLAlchemy memoizes a statement's cache key).
_ACCOUNT_BY_ID = select(Account).where(Account.id == bindparam("account_id"))
_ACCOUNT_BY_ID_FOR_UPDATE = _ACCOUNT_BY_ID.with_for_update()
_ACCOUNT_WITH_CONTACTS = (
    select(Account, Contact)
    .outerjoin(Contact, Contact.account_id == Account.id)
    .where(Account.id == bindparam("account_id"))
    .order_by(Contact.id)
)
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


def _below_caller(ctx: CallContext, acc: Account, what: str) -> None:
    """Status, credit limit and partner level are set from above, never by oneself."""
    if acc.id == ctx.principal.account_id:
        raise Forbidden(f"an account cannot {what} itself; its parent account does that")


def _contact_info(c: Contact) -> ContactInfo:
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


def _account_info(acc: Account, contacts: list[Contact]) -> AccountInfo:
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
        contacts=[_contact_info(c) for c in contacts],
    )


def _contacts_of(ctx: CallContext, account_ids: list[int]) -> dict[int, list[Contact]]:
    out: dict[int, list[Contact]] = {i: [] for i in account_ids}
    if account_ids:
        rows = ctx.session.scalars(_CONTACTS_OF, {"account_ids": account_ids})
        for c in rows:
            out[c.account_id].append(c)
    return out


def account_info(ctx: CallContext, acc: Account) -> AccountInfo:
    return _account_info(acc, _contacts_of(ctx, [acc.id])[acc.id])


def _snapshot(acc: Account) -> dict[str, object]:
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


def _account_event(ctx: CallContext, type: str, acc: Account, **extra: object) -> None:
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


def _account_updated(ctx: CallContext, acc: Account, changes: dict[str, object]) -> None:
    events.emit(
        ctx,
        "account.updated",
        ("account", acc.id),
        {"account_id": acc.id, "changes": changes},
        account_id=acc.id,
        account_path=acc.path,
    )


def _new_contact(account_id: int, c: ContactInput, field: str) -> Contact:
    return Contact(
        account_id=account_id,
        kind=c.kind,
        name=_text(c.name, f"{field}.name"),
        email=_email(c.email, f"{field}.email"),
        phone=_opt_text(c.phone, f"{field}.phone", 64),
        address=_opt_text(c.address, f"{field}.address"),
        city=_opt_text(c.city, f"{field}.city", 128),
        state=_opt_text(c.state, f"{field}.state", 128),
        postal_code=_opt_text(c.postal_code, f"{field}.postal_code", 32),
        country=_country(c.country, f"{field}.country"),
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


# ---------------------------------------------------------------- accounts


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
        name=_text(name, "name"),
        currency=cur,
        credit_limit=_credit_limit(credit_limit if credit_limit is not None else Decimal(0), cur),
        partner_level=partner_level,
        tax_id=_opt_text(tax_id, "tax_id", 64),
        country=_country(country),
    )
    new_contacts = [_new_contact(acc.id, c, f"contacts[{i}]") for i, c in enumerate(contacts or [])]
    ctx.session.add_all(new_contacts)
    ctx.session.flush()
    audit.record(ctx, "account", acc.id, acc.path, {"created": _snapshot(acc)})
    _account_event(ctx, "account.created", acc)
    return _account_info(acc, new_contacts)


@operation("AccountGet", roles=ANY_ROLE)
def account_get(ctx: CallContext, *, account_id: int) -> AccountInfo:
    """One account with its contacts."""
    # one round trip: the account and its contacts (if any) in one outer join
    rows = ctx.session.execute(_ACCOUNT_WITH_CONTACTS, {"account_id": account_id}).all()
    acc = rows[0][0] if rows else None
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"account {account_id} not found")
    return _account_info(acc, [c for _a, c in rows if c is not None])


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
    contacts = _contacts_of(ctx, [a.id for a in rows])
    return AccountPage(
        items=[_account_info(a, contacts[a.id]) for a in rows],
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
    before = _snapshot(acc)
    if name is not None:
        acc.name = _text(name, "name")
    if tax_id is not None:
        acc.tax_id = _opt_text(tax_id, "tax_id", 64)
    if country is not None:
        acc.country = _country(country)
    changes = audit.diff(before, _snapshot(acc))
    if changes:
        acc.updated_at = ctx.now()
        audit.record(ctx, "account", acc.id, acc.path, changes)
        _account_updated(ctx, acc, changes)
    return account_info(ctx, acc)


@operation("AccountSetCreditLimit", roles=BILLING | MANAGERS, mutating=True)
def account_set_credit_limit(
    ctx: CallContext, *, account_id: int, credit_limit: Decimal
) -> AccountInfo:
    """Set how far an account may go into debt (in its currency, not negative).
    Only an account above it may do this."""
    acc = get_account(ctx, account_id, for_update=True)
    _below_caller(ctx, acc, "change the credit limit of")
    if acc.status == "closed":
        raise InvalidState(f"account {acc.id} is closed")
    new = _credit_limit(credit_limit, acc.currency)
    if new != acc.credit_limit:
        audit.record(
            ctx,
            "account",
            acc.id,
            acc.path,
            {"credit_limit": {"from": acc.credit_limit, "to": new}},
        )
        _account_updated(ctx, acc, {"credit_limit": {"from": acc.credit_limit, "to": new}})
        acc.credit_limit = new
        acc.updated_at = ctx.now()
    return account_info(ctx, acc)


@operation("AccountSetPartnerLevel", roles=MANAGERS, mutating=True)
def account_set_partner_level(
    ctx: CallContext, *, account_id: int, partner_level: PartnerLevel
) -> AccountInfo:
    """Change a reseller's partner level. A reseller that owns accounts cannot
    become an affiliate."""
    acc = get_account(ctx, account_id, for_update=True)
    _below_caller(ctx, acc, "change the partner level of")
    if acc.type != "reseller":
        raise ValidationError("account_id", "only resellers have a partner level")
    if acc.status == "closed":
        raise InvalidState(f"account {acc.id} is closed")
    if partner_level == "affiliate":
        children = ctx.session.scalar(
            select(func.count()).select_from(Account).where(Account.parent_id == acc.id)
        )
        if children:
            raise InvalidState(
                f"reseller {acc.id} owns {children} account(s); an affiliate owns none"
            )
    if partner_level != acc.partner_level:
        audit.record(
            ctx,
            "account",
            acc.id,
            acc.path,
            {"partner_level": {"from": acc.partner_level, "to": partner_level}},
        )
        _account_updated(
            ctx, acc, {"partner_level": {"from": acc.partner_level, "to": partner_level}}
        )
        acc.partner_level = partner_level
        acc.updated_at = ctx.now()
    return account_info(ctx, acc)


def _transition(ctx: CallContext, account_id: int, event: str, reason: str | None) -> AccountInfo:
    acc = get_account(ctx, account_id, for_update=True)
    _below_caller(ctx, acc, event)
    if acc.type == "provider":
        raise Forbidden(f"the provider account cannot be {event}d")
    new = ACCOUNT_STATES.next(acc.status, event)
    if event == "close":
        open_children = ctx.session.scalar(
            select(func.count())
            .select_from(Account)
            .where(Account.parent_id == acc.id, Account.status != "closed")
        )
        if open_children:
            raise InvalidState(
                f"account {acc.id} has {open_children} account(s) below it that are not closed"
            )
    audit.record(
        ctx,
        "account",
        acc.id,
        acc.path,
        {"status": {"from": acc.status, "to": new}, "reason": reason},
    )
    acc.status = cast(AccountStatus, new)
    acc.updated_at = ctx.now()
    _account_event(ctx, f"account.{new if new != 'active' else 'resumed'}", acc, reason=reason)
    return account_info(ctx, acc)


@operation("AccountSuspend", roles=MANAGERS | BILLING, mutating=True)
def account_suspend(ctx: CallContext, *, account_id: int, reason: str | None = None) -> AccountInfo:
    """Suspend an active account (its users can still log in and pay)."""
    return _transition(ctx, account_id, "suspend", reason)


@operation("AccountResume", roles=MANAGERS | BILLING, mutating=True)
def account_resume(ctx: CallContext, *, account_id: int, reason: str | None = None) -> AccountInfo:
    """Make a suspended account active again."""
    return _transition(ctx, account_id, "resume", reason)


@operation("AccountClose", roles=MANAGERS, mutating=True)
def account_close(ctx: CallContext, *, account_id: int, reason: str | None = None) -> AccountInfo:
    """Close an account for good: no new orders, its users can no longer log in.
    Every account below it must be closed first."""
    return _transition(ctx, account_id, "close", reason)


# ---------------------------------------------------------------- contacts


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
    c = _new_contact(acc.id, contact, "contact")
    ctx.session.add(c)
    ctx.session.flush()
    info = _contact_info(c)
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
    before = _contact_info(c).__dict__.copy()
    if kind is not None:
        c.kind = kind
    if name is not None:
        c.name = _text(name, "name")
    if email is not None:
        c.email = _email(email, "email")
    if phone is not None:
        c.phone = _opt_text(phone, "phone", 64)
    if address is not None:
        c.address = _opt_text(address, "address")
    if city is not None:
        c.city = _opt_text(city, "city", 128)
    if state is not None:
        c.state = _opt_text(state, "state", 128)
    if postal_code is not None:
        c.postal_code = _opt_text(postal_code, "postal_code", 32)
    if country is not None:
        c.country = _country(country)
    info = _contact_info(c)
    changes = audit.diff(before, info.__dict__)
    if changes:
        audit.record(ctx, "contact", c.id, acc.path, changes)
    return info


@operation("ContactRemove", roles=MANAGERS | CONTACT_EDITORS, mutating=True)
def contact_remove(ctx: CallContext, *, contact_id: int) -> bool:
    """Remove a contact. Returns true."""
    c, acc = _get_contact(ctx, contact_id)
    audit.record(ctx, "contact", c.id, acc.path, {"removed": _contact_info(c)})
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
    return ContactPage([_contact_info(c) for c in rows], total, offset, limit)


# ---------------------------------------------------------------- users


def _roles(roles: list[Role], field: str = "roles") -> str:
    if not roles:
        raise ValidationError(field, "at least one role is required")
    for r in roles:
        if r not in ROLES:
            raise ValidationError(field, f"unknown role {r!r}")
    return ",".join(sorted(set(roles)))


def check_password(password: str, field: str = "password") -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValidationError(field, "is too long")
    return password


def _user_info(u: User) -> UserInfo:
    return UserInfo(
        id=u.id,
        account_id=u.account_id,
        login=u.login,
        full_name=u.full_name,
        roles=cast(list[Role], u.roles.split(",")),
        status=u.status,
        created_at=u.created_at,
        email=u.email,
    )


def _get_user(ctx: CallContext, user_id: int, *, for_update: bool = False) -> tuple[User, Account]:
    q = select(User, Account).join(Account, User.account_id == Account.id).where(User.id == user_id)
    if for_update:
        q = q.with_for_update(of=User)
    row = ctx.session.execute(q).first()
    if row is None or not ctx.principal.sees(row[1].path):
        raise NotFound(f"user {user_id} not found")
    return row[0], row[1]


def insert_user(
    ctx: CallContext,
    *,
    account: Account,
    login: str,
    password: str,
    full_name: str,
    email: str | None,
    roles: list[Role],
) -> User:
    if not LOGIN_RE.match(login):
        raise ValidationError("login", "must be 3-128 letters, digits or . _ @ + -")
    now = ctx.now()
    user = User(
        account_id=account.id,
        login=login,
        password_hash=hash_password(check_password(password)),
        full_name=_text(full_name, "full_name"),
        email=_email(email, "email") if email else None,
        roles=_roles(roles),
        status="active",
        created_at=now,
        updated_at=now,
    )
    try:
        with ctx.session.begin_nested():
            ctx.session.add(user)
            ctx.session.flush()
    except IntegrityError:
        raise Conflict(f"login {login!r} is already taken") from None
    return user


@operation("UserCreate", roles=frozenset(), mutating=True)
def user_create(
    ctx: CallContext,
    *,
    account_id: int,
    login: str,
    password: str,
    full_name: str,
    roles: Annotated[list[Role], MinLen(1)],
    email: str | None = None,
) -> UserInfo:
    """Create a user who logs in to ``account_id`` with the given roles.
    Logins are unique across the whole server."""
    acc = get_account(ctx, account_id)
    if acc.status == "closed":
        raise InvalidState(f"account {acc.id} is closed")
    user = insert_user(
        ctx,
        account=acc,
        login=login,
        password=password,
        full_name=full_name,
        email=email,
        roles=roles,
    )
    info = _user_info(user)
    audit.record(ctx, "user", user.id, acc.path, {"created": info})
    events.emit(
        ctx,
        "user.created",
        ("user", user.id),
        {
            "user_id": user.id,
            "login": user.login,
            "account_id": acc.id,
            "full_name": user.full_name,
            "email": user.email,
            "roles": info.roles,
        },
        account_id=acc.id,
        account_path=acc.path,
    )
    return info


@operation("UserGet", roles=ANY_ROLE)
def user_get(ctx: CallContext, *, user_id: int) -> UserInfo:
    """One user."""
    return _user_info(_get_user(ctx, user_id)[0])


@operation("UserList", roles=ANY_ROLE)
def user_list(
    ctx: CallContext, *, account_id: int | None = None, offset: int = 0, limit: int = 100
) -> UserPage:
    """The users of one account (default: the caller's), ordered by id."""
    check_page(offset, limit)
    visible_path(ctx, account_id)
    aid = account_id if account_id is not None else ctx.principal.account_id
    q = select(User).where(User.account_id == aid)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = ctx.session.scalars(q.order_by(User.id).offset(offset).limit(limit))
    return UserPage(items=[_user_info(u) for u in rows], total=total, offset=offset, limit=limit)


@operation("UserUpdate", roles=frozenset(), mutating=True)
def user_update(
    ctx: CallContext, *, user_id: int, full_name: str | None = None, email: str | None = None
) -> UserInfo:
    """Change a user's name or e-mail (an empty e-mail clears it)."""
    user, acc = _get_user(ctx, user_id, for_update=True)
    before = _user_info(user).__dict__.copy()
    if full_name is not None:
        user.full_name = _text(full_name, "full_name")
    if email is not None:
        user.email = _email(email, "email") if email.strip() else None
    info = _user_info(user)
    changes = audit.diff(before, info.__dict__)
    if changes:
        user.updated_at = ctx.now()
        audit.record(ctx, "user", user.id, acc.path, changes)
    return info


@operation("UserSetRoles", roles=frozenset(), mutating=True)
def user_set_roles(
    ctx: CallContext, *, user_id: int, roles: Annotated[list[Role], MinLen(1)]
) -> UserInfo:
    """Replace a user's roles. Nobody changes their own roles."""
    user, acc = _get_user(ctx, user_id, for_update=True)
    if user.id == ctx.principal.user_id:
        raise Forbidden("a user cannot change its own roles")
    new = _roles(roles)
    if new != user.roles:
        audit.record(ctx, "user", user.id, acc.path, {"roles": {"from": user.roles, "to": new}})
        user.roles = new
        user.updated_at = ctx.now()
    return _user_info(user)


@operation("UserSetPassword", roles=ANY_ROLE, self_service=True, mutating=True)
def user_set_password(ctx: CallContext, *, user_id: int, password: str) -> bool:
    """Set a user's password. Any user may set its own; an admin may set those of
    users in its subtree. Returns true."""
    user, acc = _get_user(ctx, user_id, for_update=True)
    if user.id != ctx.principal.user_id and "admin" not in ctx.principal.roles:
        raise Forbidden("only an admin may set another user's password")
    user.password_hash = hash_password(check_password(password))
    user.updated_at = ctx.now()
    audit.record(ctx, "user", user.id, acc.path, {"password": "changed"})
    return True


def _set_user_status(ctx: CallContext, user_id: int, status: UserStatus) -> UserInfo:
    user, acc = _get_user(ctx, user_id, for_update=True)
    if user.id == ctx.principal.user_id:
        raise Forbidden("a user cannot disable or enable itself")
    if user.status != status:
        audit.record(
            ctx, "user", user.id, acc.path, {"status": {"from": user.status, "to": status}}
        )
        user.status = status
        user.updated_at = ctx.now()
    return _user_info(user)


@operation("UserDisable", roles=frozenset(), mutating=True)
def user_disable(ctx: CallContext, *, user_id: int) -> UserInfo:
    """Disable a user: it can no longer log in, and its API keys stop working."""
    return _set_user_status(ctx, user_id, "disabled")


@operation("UserEnable", roles=frozenset(), mutating=True)
def user_enable(ctx: CallContext, *, user_id: int) -> UserInfo:
    """Let a disabled user log in again."""
    return _set_user_status(ctx, user_id, "active")


@operation("WhoAmI", roles=ANY_ROLE)
def who_am_i(ctx: CallContext) -> WhoAmIInfo:
    """Check credentials: the calling user, its account and roles."""
    p = ctx.principal
    acc = get_account(ctx, p.account_id)
    return WhoAmIInfo(
        user_id=p.user_id,
        login=p.login,
        roles=cast(list[Role], sorted(p.roles)),
        account_id=acc.id,
        account_number=acc.number or "",
        account_name=acc.name,
        account_type=acc.type,
        authenticated_by="apikey" if p.via == "apikey" else "password",
    )


# ---------------------------------------------------------------- API keys


def _api_key_info(k: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=k.key_id,
        user_id=k.user_id,
        name=k.name,
        created_at=k.created_at,
        revoked_at=k.revoked_at,
        last_used_at=k.last_used_at,
    )


def _key_owner(ctx: CallContext, user_id: int | None) -> tuple[User, Account]:
    uid = user_id if user_id is not None else ctx.principal.user_id
    user, acc = _get_user(ctx, uid)
    if user.id != ctx.principal.user_id and "admin" not in ctx.principal.roles:
        raise Forbidden("only an admin may manage another user's API keys")
    return user, acc


@operation("ApiKeyCreate", roles=ANY_ROLE, self_service=True, mutating=True)
def api_key_create(ctx: CallContext, *, name: str, user_id: int | None = None) -> ApiKeyCreated:
    """Create API credentials for a machine client acting as ``user_id`` (default:
    the caller). The secret is shown only in this answer; use key id and secret
    as HTTP Basic login/password or as a WS-Security UsernameToken (PasswordText
    or PasswordDigest)."""
    user, acc = _key_owner(ctx, user_id)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        key_id="pk_" + secrets.token_hex(12),
        user_id=user.id,
        name=_text(name, "name"),
        secret_encrypted=ctx.secrets.encrypt(secret),
        created_at=ctx.now(),
    )
    ctx.session.add(key)
    ctx.session.flush()
    audit.record(
        ctx, "api_key", key.key_id, acc.path, {"created": {"user_id": user.id, "name": key.name}}
    )
    return ApiKeyCreated(
        key_id=key.key_id, secret=secret, user_id=user.id, name=key.name, created_at=key.created_at
    )


@operation("ApiKeyList", roles=ANY_ROLE)
def api_key_list(
    ctx: CallContext,
    *,
    user_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> ApiKeyPage:
    """A user's API keys (default: the caller's), revoked ones included; never the secrets."""
    user, _acc = _key_owner(ctx, user_id)
    q = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id)
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return ApiKeyPage([_api_key_info(k) for k in rows], total, offset, limit)


@operation("ApiKeyRevoke", roles=ANY_ROLE, self_service=True, mutating=True)
def api_key_revoke(ctx: CallContext, *, key_id: str) -> ApiKeyInfo:
    """Revoke an API key at once."""
    key = ctx.session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    try:
        _user, acc = _key_owner(ctx, key.user_id)
    except NotFound:
        raise NotFound(f"API key {key_id} not found") from None
    if key.revoked_at is None:
        key.revoked_at = ctx.now()
        audit.record(ctx, "api_key", key.key_id, acc.path, {"revoked": True})
    return _api_key_info(key)
