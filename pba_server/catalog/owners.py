"""Who owns and who sees catalog items, and names unique per owner.

The provider and advanced resellers own catalog items; a basic reseller owns
none and sells its catalog owner's plans. Items are managed only inside the
caller's subtree; those owned above the caller are readable.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account
from pba_server.catalog import checks
from pba_server.catalog.models import (
    Plan,
    Resource,
    ServiceTemplate,
)
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError

EDITORS = frozenset({"sales"})  # besides admin, who always may


def account(ctx: CallContext, account_id: int) -> Account:
    """An account by id, cached for the call (no visibility check)."""
    key = f"account:{account_id}"
    if key not in ctx.cache:
        ctx.cache[key] = ctx.session.get(Account, account_id)
    acc = ctx.cache[key]
    if acc is None:
        raise NotFound(f"account {account_id} not found")
    return cast(Account, acc)


def visible_account(ctx: CallContext, account_id: int, field: str = "account_id") -> Account:
    """An account the caller sees (its own or one below it), else NotFound."""
    acc = ctx.session.get(Account, account_id)
    if acc is None or not ctx.principal.sees(acc.path):
        raise NotFound(f"account {account_id} not found")
    return acc  # type: ignore[no-any-return]


def ancestor_ids(path: str) -> list[int]:
    """Ids on a materialized path, root first, the account itself last."""
    return [int(p) for p in path.strip("/").split("/") if p]


def is_catalog_owner(acc: Account) -> bool:
    """Whether ``acc`` owns catalog items: the provider or an advanced reseller."""
    return acc.type == "provider" or (acc.type == "reseller" and acc.partner_level == "advanced")


def catalog_owner_of(ctx: CallContext, buyer: Account) -> Account | None:
    """Whose plans ``buyer`` buys: the nearest provider or advanced reseller above it."""
    for aid in reversed(ancestor_ids(buyer.path)[:-1]):
        acc = account(ctx, aid)
        if is_catalog_owner(acc):
            return acc
    return None


def price_list_of(ctx: CallContext, acc: Account) -> Account | None:
    """The basic reseller whose price list applies to ``acc``: itself, or its parent."""
    if acc.type == "reseller" and acc.partner_level == "basic":
        return acc
    if acc.parent_id is not None:
        parent = account(ctx, acc.parent_id)
        if parent.type == "reseller" and parent.partner_level == "basic":
            return parent
    return None


def owner_for_create(ctx: CallContext, owner_id: int | None) -> Account:
    """The owner of a new catalog item (default: the caller's account), checked."""
    owner = visible_account(
        ctx, owner_id if owner_id is not None else ctx.principal.account_id, "owner_id"
    )
    if not is_catalog_owner(owner):
        raise Forbidden(
            "only the provider and advanced resellers own catalog items; "
            "a basic reseller sells its parent's plans"
        )
    if owner.status != "active":
        raise InvalidState(f"account {owner.id} is {owner.status}")
    return owner


def manages(ctx: CallContext, owner_id: int) -> bool:
    """Whether the caller manages items of ``owner_id`` (its account or one below)."""
    return ctx.principal.sees(account(ctx, owner_id).path)


def above_or_self(ctx: CallContext, owner_id: int) -> bool:
    """Whether ``owner_id`` is the caller's account or one above it (readable)."""
    return owner_id in ancestor_ids(ctx.principal.account_path)


def readable_owner_ids(ctx: CallContext) -> list[int]:
    """The owners whose items the caller may read: its account and those above."""
    return ancestor_ids(ctx.principal.account_path)


def require_editor(ctx: CallContext, owner_id: int, what: str, ident: int) -> None:
    """Forbidden for an item owned above the caller, NotFound for one it cannot see."""
    if not manages(ctx, owner_id):
        if above_or_self(ctx, owner_id):
            raise Forbidden(f"{what} {ident} belongs to an account above yours")
        raise NotFound(f"{what} {ident} not found")


def savepoint_unique(ctx: CallContext, obj: object, field: str, message: str) -> None:
    """Insert ``obj`` in a savepoint; a unique violation is a fault naming ``field``."""
    try:
        with ctx.session.begin_nested():
            ctx.session.add(obj)
            ctx.session.flush()
    except IntegrityError:
        raise ValidationError(field, message) from None


def rename(ctx: CallContext, obj: Resource | ServiceTemplate | Plan, name: str, what: str) -> None:
    """Set a new name in a savepoint, so a duplicate is a fault naming the field
    (the database's unique constraint decides, not a check that could race)."""
    new = checks.text(name, "name")
    if new == obj.name:
        return
    ctx.session.flush()  # nothing else may ride into the savepoint
    try:
        with ctx.session.begin_nested():
            obj.name = new
            ctx.session.flush()
    except IntegrityError:
        raise ValidationError(
            "name", f"account {obj.owner_id} already has a {what} {new!r}"
        ) from None
