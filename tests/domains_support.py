"""Helpers for the domains tests: a sandbox registrar instance, a TLD, a
customer with contacts, and the provisioning engine's part played by hand
(build in one transaction, perform outside, on_result in another) on a fake
service row with the attributes the contract names."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from pba_server.accounts import tree
from pba_server.accounts.models import Account
from pba_server.accounts.types import ContactInput
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.domains import tlds
from pba_server.domains.types import TldPrice
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.types import SettingValue
from pba_server.provisioning.registry import BUILTIN_MODULES
from pba_server.sdk.provisioning import ModuleResult, ServiceRequest
from tests.catalog_support import service_ctx

_ids = itertools.count(5000)

PRICES = [
    TldPrice(1, Decimal("12.00"), Decimal("10.00"), Decimal("8.00")),
    TldPrice(2, Decimal("22.00"), Decimal("20.00"), None),
]


def registrar(env: Any, name: str = "registrar", **settings: str) -> tuple[int, str]:
    """A sandbox_registrar instance of the provider with its own registry."""
    reg = settings.pop("registry", f"r-{uuid.uuid4().hex[:8]}")
    with service_ctx(env) as ctx:
        inst = plugin_configure(
            ctx,
            plugin="sandbox_registrar",
            name=name,
            settings=[SettingValue("registry", reg)]
            + [SettingValue(k, v) for k, v in settings.items()],
        )
    return inst.id, reg


def tld(
    env: Any, instance_id: int, name: str = "test", prices: list[TldPrice] | None = None
) -> Any:
    with service_ctx(env) as ctx:
        return tlds.tld_create(
            ctx, name=name, instance_id=instance_id, prices=prices or list(PRICES)
        )


def customer(env: Any, name: str = "Domain Buyer", contacts: bool = True) -> int:
    with service_ctx(env) as ctx:
        return tree.account_create(
            ctx,
            type="customer_business",
            name=name,
            country="DE",
            contacts=[
                ContactInput(
                    "administrative",
                    "Ada Admin",
                    "ada@example.com",
                    phone="+49.301234567",
                    address="Hauptstr. 1",
                    city="Berlin",
                    postal_code="10115",
                    country="DE",
                ),
                ContactInput("technical", "Tim Tech", "tim@example.com", country="DE"),
            ]
            if contacts
            else None,
        ).id


@dataclass
class FakeService:
    """The Service row fields the domains module relies on."""

    account_id: int
    parameters: str
    template_id: int | None = None
    subscription_id: int | None = None
    id: int = field(default_factory=lambda: next(_ids))
    data: str = "{}"
    platform_id: str | None = None
    module: str = "domains"


def service(env: Any, account_id: int, plan_template: int | None, **params: str) -> FakeService:
    return FakeService(
        account_id=account_id, parameters=json.dumps(params), template_id=plan_template
    )


def template_of(env: Any, plan_id: int) -> int:
    from pba_server.catalog.models import Plan

    with UnitOfWork(env.app.engine) as uow:
        plan = uow.session.get(Plan, plan_id)
        assert plan is not None
        return int(plan.template_id)


def run(
    env: Any, svc: FakeService, action: str, *, key: str | None = None, until: str | None = None
) -> ModuleResult:
    """One operation as the engine runs it; returns the module's result."""
    mod = BUILTIN_MODULES["domains"]
    with UnitOfWork(env.app.engine) as uow:
        acc = uow.session.get(Account, svc.account_id)
        assert acc is not None
        ctx = system_context(
            uow,
            env.clock,
            account_id=acc.id,
            account_path=acc.path,
            operation="test-op",
            runtime=env.app.runtime,
        )
        module = mod.build(ctx, svc)
        uow.commit()
    request = ServiceRequest(
        key=key or f"op-{svc.id}-{action}",
        action=action,  # type: ignore[arg-type]
        service_id=svc.id,
        subscription_id=svc.subscription_id,
        account_id=svc.account_id,
        account_name="x",
        service_type="domain",
        template="t",
        module_settings={},
        parameters=json.loads(svc.parameters),
        limits={},
        platform_id=svc.platform_id,
        until=until,
    )
    result = module.perform(request)
    with UnitOfWork(env.app.engine) as uow:
        acc = uow.session.get(Account, svc.account_id)
        assert acc is not None
        ctx = system_context(
            uow,
            env.clock,
            account_id=acc.id,
            account_path=acc.path,
            operation="test-op",
            runtime=env.app.runtime,
        )
        assert mod.on_result is not None
        mod.on_result(ctx, svc, action, result)
        uow.commit()
    return result


def domain_row(env: Any, name: str) -> Any:
    from pba_server.domains.models import Domain

    with UnitOfWork(env.app.engine) as uow:
        d = uow.session.scalar(select(Domain).where(Domain.name == name).order_by(Domain.id.desc()))
        if d is not None:
            uow.session.expunge(d)
        return d
