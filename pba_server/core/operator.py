"""Who is the operator: the provider's administrators.

The provider account is the root of the account tree; resellers and
customers are below it. What names a program, a file, a host, a port or a
URL on the server (plugin settings of those kinds, plugins that run
programs or write files, commands run on events) is the operator's alone.
"""

from __future__ import annotations

from sqlalchemy import text

from pba_server.core.context import CallContext


def is_operator(ctx: CallContext) -> bool:
    """True if the caller is an administrator of the provider account."""
    if "admin" not in ctx.principal.roles:
        return False
    kind = ctx.session.execute(
        text("SELECT type FROM accounts WHERE id = :id"), {"id": ctx.principal.account_id}
    ).scalar()
    return bool(kind == "provider")
