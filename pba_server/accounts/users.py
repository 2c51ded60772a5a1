"""Users: ``User*`` (logins, roles, passwords, disabling) and ``WhoAmI``."""

from __future__ import annotations

from typing import Annotated, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pba_server import events
from pba_server.accounts import checks
from pba_server.accounts.models import Account, User
from pba_server.accounts.records import get_account
from pba_server.accounts.types import Role, UserInfo, UserPage, UserStatus, WhoAmIInfo
from pba_server.core import audit
from pba_server.core.auth import hash_password
from pba_server.core.context import CallContext
from pba_server.core.errors import Conflict, Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.scope import visible_path


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


def get_user(ctx: CallContext, user_id: int, *, for_update: bool = False) -> tuple[User, Account]:
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
    if not checks.LOGIN_RE.match(login):
        raise ValidationError("login", "must be 3-128 letters, digits or . _ @ + -")
    now = ctx.now()
    user = User(
        account_id=account.id,
        login=login,
        password_hash=hash_password(checks.check_password(password)),
        full_name=checks.text(full_name, "full_name"),
        email=checks.email(email, "email") if email else None,
        roles=checks.role_list(roles),
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
    return _user_info(get_user(ctx, user_id)[0])


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
    user, acc = get_user(ctx, user_id, for_update=True)
    before = _user_info(user).__dict__.copy()
    if full_name is not None:
        user.full_name = checks.text(full_name, "full_name")
    if email is not None:
        user.email = checks.email(email, "email") if email.strip() else None
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
    user, acc = get_user(ctx, user_id, for_update=True)
    if user.id == ctx.principal.user_id:
        raise Forbidden("a user cannot change its own roles")
    new = checks.role_list(roles)
    if new != user.roles:
        audit.record(ctx, "user", user.id, acc.path, {"roles": {"from": user.roles, "to": new}})
        user.roles = new
        user.updated_at = ctx.now()
    return _user_info(user)


@operation("UserSetPassword", roles=ANY_ROLE, self_service=True, mutating=True)
def user_set_password(ctx: CallContext, *, user_id: int, password: str) -> bool:
    """Set a user's password. Any user may set its own; an admin may set those of
    users in its subtree. Returns true."""
    user, acc = get_user(ctx, user_id, for_update=True)
    if user.id != ctx.principal.user_id and "admin" not in ctx.principal.roles:
        raise Forbidden("only an admin may set another user's password")
    user.password_hash = hash_password(checks.check_password(password))
    user.updated_at = ctx.now()
    audit.record(ctx, "user", user.id, acc.path, {"password": "changed"})
    return True


def _set_user_status(ctx: CallContext, user_id: int, status: UserStatus) -> UserInfo:
    user, acc = get_user(ctx, user_id, for_update=True)
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
