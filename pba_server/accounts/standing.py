"""What an account's parent sets: its credit limit, a reseller's partner
level and its status (``AccountSuspend``/``Resume``/``Close``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from sqlalchemy import func, select

from pba_server.accounts import checks
from pba_server.accounts.models import Account
from pba_server.accounts.records import (
    BILLING,
    MANAGERS,
    account_event,
    account_info,
    account_updated,
    get_account,
)
from pba_server.accounts.types import AccountInfo, AccountStatus, PartnerLevel
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, ValidationError
from pba_server.core.operations import operation
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


def _below_caller(ctx: CallContext, acc: Account, what: str) -> None:
    """Status, credit limit and partner level are set from above, never by oneself."""
    if acc.id == ctx.principal.account_id:
        raise Forbidden(f"an account cannot {what} itself; its parent account does that")


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
    new = checks.credit_limit(credit_limit, acc.currency)
    if new != acc.credit_limit:
        audit.record(
            ctx,
            "account",
            acc.id,
            acc.path,
            {"credit_limit": {"from": acc.credit_limit, "to": new}},
        )
        account_updated(ctx, acc, {"credit_limit": {"from": acc.credit_limit, "to": new}})
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
        account_updated(
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
    account_event(ctx, f"account.{new if new != 'active' else 'resumed'}", acc, reason=reason)
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
