"""Shared checks of the billing rooms: the roles that may bill or read, who
sells to whom (the seller of an account, whether the caller may bill it),
today's date for the caller, and the reason text every correction carries."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.accounts.records import get_account
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, ValidationError

BILLING = frozenset({"billing"})
READERS = frozenset({"billing", "sales", "support", "readonly"})
SELLERS = ("provider", "reseller")


def today_for(ctx: CallContext) -> date:
    """The caller's today (UTC)."""
    return ctx.now().astimezone(UTC).date()


def day_start(d: date) -> datetime:
    """Midnight UTC at the start of ``d``."""
    return datetime.combine(d, time(0), tzinfo=UTC)


def seller_of(ctx: CallContext, acc: Account) -> Account:
    """The account that sells to ``acc``: its nearest provider or reseller ancestor.

    A department is billed like a customer by its enterprise's seller.
    """
    ids = [int(p) for p in acc.path.strip("/").split("/")][:-1]
    rows = {a.id: a for a in ctx.session.scalars(select(Account).where(Account.id.in_(ids)))}
    for aid in reversed(ids):
        if rows[aid].type in SELLERS:
            return rows[aid]  # type: ignore[no-any-return]
    raise ValidationError("account_id", f"account {acc.id} has no seller to bill it")


def billable(ctx: CallContext, account_id: int) -> Account:
    """A customer account the caller may bill: visible, below the caller's own,
    and sold to by the caller's account or one below it (an enterprise does not
    bill its departments; their seller does)."""
    acc = get_account(ctx, account_id)
    if acc.id == ctx.principal.account_id or acc.type == "provider":
        raise Forbidden(f"account {acc.id} is billed by its parent, not by itself")
    require_seller_side(ctx, seller_of(ctx, acc).path, acc.id)
    return acc


def require_seller_side(ctx: CallContext, issuer_path: str, account_id: int) -> None:
    """Refuse a caller who is not the seller of ``account_id`` or above it."""
    if not ctx.principal.sees(issuer_path):
        raise Forbidden(f"only the seller of account {account_id} (or its parents) bills it")


def check_reason(reason: str) -> str:
    """The reason a void, credit note or adjustment gives, trimmed: 1 to 255 characters."""
    why = reason.strip()
    if not 1 <= len(why) <= 255:
        raise ValidationError("reason", "must be 1 to 255 characters")
    return why
