"""Subtree scoping helpers shared by features.

Resolving an account id to its path goes through one query here so every
feature applies the same rule: outside the caller's subtree is NotFound.
"""

from __future__ import annotations

from sqlalchemy import text

from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound


def account_path(ctx: CallContext, account_id: int) -> str:
    key = f"path:{account_id}"
    if key in ctx.cache:
        return str(ctx.cache[key])
    path = ctx.session.execute(
        text("SELECT path FROM accounts WHERE id = :id"), {"id": account_id}
    ).scalar()
    if path is None or not ctx.principal.sees(path):
        raise NotFound(f"account {account_id} not found")
    ctx.cache[key] = path
    return str(path)


def visible_path(ctx: CallContext, account_id: int | None) -> str:
    """The subtree path to filter by: the given account's (if visible) or the caller's."""
    if account_id is None:
        return ctx.principal.account_path
    return account_path(ctx, account_id)
