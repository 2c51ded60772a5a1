"""Which template and brand apply to an account (database side of templates.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account, Contact
from pba_server.events.models import NotificationTemplate
from pba_server.events.outbox import ancestor_paths
from pba_server.notify.templates import DEFAULT_LANGUAGE, Template, default_for


def resolve(
    session: Session, event_type: str, language: str, account_path: str
) -> tuple[Template, NotificationTemplate | None]:
    """The nearest account's template at or above ``account_path``: in ``language``,
    else in English; else the built-in default (with None)."""
    paths = ancestor_paths(account_path)
    rows = list(
        session.scalars(
            select(NotificationTemplate).where(
                NotificationTemplate.account_path.in_(paths),
                NotificationTemplate.event_type == event_type,
                NotificationTemplate.language.in_({language, DEFAULT_LANGUAGE}),
            )
        )
    )
    if rows:
        best = max(rows, key=lambda r: (len(r.account_path), r.language == language))
        return Template(best.subject, best.text_body, best.html_body), best
    return default_for(event_type), None


def brand(session: Session, account_path: str) -> tuple[int | None, str]:
    """(id, name) of the account customers see as the seller: the nearest
    reseller above the account, else the provider (white label)."""
    paths = ancestor_paths(account_path)
    above = paths[:-1] or paths
    rows = session.execute(
        select(Account.path, Account.id, Account.name).where(
            Account.path.in_(above), Account.type.in_(("provider", "reseller"))
        )
    ).all()
    if not rows:
        return None, "pba-server"
    best = max(rows, key=lambda r: len(r[0]))
    return int(best[1]), str(best[2])


def sender_address(session: Session, account_id: int | None) -> str | None:
    """The seller's first administrative contact's address, if it has one."""
    if account_id is None:
        return None
    return session.scalar(
        select(Contact.email)
        .where(Contact.account_id == account_id, Contact.kind == "administrative")
        .order_by(Contact.id)
        .limit(1)
    )


def account_fields(session: Session, account_id: int) -> dict[str, Any]:
    acc = session.get(Account, account_id)
    if acc is None:
        return {"id": account_id, "name": "", "number": ""}
    return {"id": acc.id, "name": acc.name, "number": acc.number or ""}
