"""First-time set-up: the provider account (root of the tree) and its first admin."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from pba_server.accounts.models import Account
from pba_server.accounts.records import insert_account
from pba_server.accounts.users import insert_user
from pba_server.core import audit
from pba_server.core.auth import SYSTEM
from pba_server.core.clock import Clock
from pba_server.core.context import CallContext
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import Conflict
from pba_server.core.money import check_currency
from pba_server.core.secrets import SecretBox


@dataclass
class InitResult:
    provider_id: int
    admin_login: str
    admin_password: str
    generated: bool


def provider_exists(engine: Engine) -> bool:
    with UnitOfWork(engine) as uow:
        return (
            uow.session.scalar(select(Account.id).where(Account.type == "provider").limit(1))
            is not None
        )


def initialize(
    engine: Engine,
    clock: Clock,
    secret_box: SecretBox,
    *,
    admin_login: str = "admin",
    admin_password: str | None = None,
    provider_name: str = "Provider",
    currency: str = "USD",
) -> InitResult:
    """Create the provider and its admin; Conflict if the database already has a provider."""
    generated = admin_password is None
    password = admin_password or secrets.token_urlsafe(15)
    with UnitOfWork(engine) as uow:
        if uow.session.scalar(select(Account.id).where(Account.type == "provider").limit(1)):
            raise Conflict("this database is already initialized (it has a provider account)")
        ctx = CallContext(
            uow=uow,
            principal=SYSTEM,
            clock=clock,
            secrets=secret_box,
            operation="Init",
            correlation_id="init",
        )
        provider = insert_account(
            ctx,
            type="provider",
            parent=None,
            name=provider_name,
            currency=check_currency(currency),
            credit_limit=0,  # type: ignore[arg-type]
        )
        user = insert_user(
            ctx,
            account=provider,
            login=admin_login,
            password=password,
            full_name="Administrator",
            email=None,
            roles=["admin"],
        )
        audit.record(
            ctx,
            "account",
            provider.id,
            provider.path,
            {"created": {"type": "provider", "name": provider_name, "admin": user.login}},
        )
        try:
            uow.commit()
        except IntegrityError:
            raise Conflict(
                "this database is already initialized (it has a provider account)"
            ) from None
        return InitResult(provider.id, admin_login, password, generated)
