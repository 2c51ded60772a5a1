"""Helpers for the billing tests: customers, and the ledger check every money test ends with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pba_server.accounts import tree
from pba_server.billing import ledger
from pba_server.core.db import UnitOfWork
from tests.catalog_support import service_ctx


def customer(
    env: Any,
    name: str = "Cust",
    *,
    login: str = "admin",
    country: str | None = "DE",
    tax_id: str | None = None,
    credit_limit: str = "0",
    type: str = "customer_business",
    parent_id: int | None = None,
    partner_level: str | None = None,
) -> int:
    with service_ctx(env, login) as ctx:
        return tree.account_create(
            ctx,
            type=type,
            name=name,
            country=country,
            tax_id=tax_id,
            credit_limit=Decimal(credit_limit),
            parent_id=parent_id,
            partner_level=partner_level,
        ).id


def assert_books_sound(env: Any) -> None:
    with UnitOfWork(env.app.engine) as uow:
        problems = ledger.verify(uow.session)
    assert problems == [], problems
