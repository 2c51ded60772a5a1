"""API keys for machine clients: ``ApiKey*`` (the secret is shown once)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from pba_server.accounts import checks
from pba_server.accounts.models import Account, ApiKey, User
from pba_server.accounts.types import ApiKeyCreated, ApiKeyInfo, ApiKeyPage
from pba_server.accounts.users import get_user
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, NotFound
from pba_server.core.operations import ANY_ROLE, operation


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
    user, acc = get_user(ctx, uid)
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
        name=checks.text(name, "name"),
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
