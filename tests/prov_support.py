"""Helpers for the provisioning tests: a scriptable processing module plugin,
plans on a template, subscriptions and provisioning them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts.models import Account
from pba_server.catalog.models import PlanVersion
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import ModuleSetting, PlanPeriod, ResourceRate, TemplateResource
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork
from pba_server.payments.types import SettingValue
from pba_server.provisioning import api as prov
from pba_server.provisioning import service as prov_ops
from pba_server.sdk import SDK_VERSION, PluginInfo, SettingField, loader
from pba_server.sdk.provisioning import (
    ACTIONS,
    Done,
    ModuleResult,
    ProcessingModule,
    ServiceRequest,
)
from pba_server.subscriptions.store import new_subscription
from tests.catalog_support import service_ctx


class Script:
    """What the fake module answers: per action, a queue of results (or
    exceptions to raise); when empty, ``Done``. Every call is recorded."""

    def __init__(self) -> None:
        self.queue: dict[str, list[Any]] = {}
        self.calls: list[ServiceRequest] = []
        self.lock = threading.Lock()

    def then(self, action: str, *results: Any) -> None:
        self.queue.setdefault(action, []).extend(results)

    def answer(self, request: ServiceRequest) -> ModuleResult:
        with self.lock:
            self.calls.append(request)
            pending = self.queue.get(request.action) or []
            result = pending.pop(0) if pending else None
        if isinstance(result, BaseException):
            raise result
        if result is None:
            return Done(
                platform_id=f"p-{request.service_id}",
                data={"ip": "192.0.2.10"} if request.action == "create" else {},
            )
        if callable(getattr(result, "fn", None)):
            return result.fn(request)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def actions(self) -> list[str]:
        return [c.action for c in self.calls]


class Computed:
    """A queued answer computed when the module is called: ``fn(request)``."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn


SCRIPT = Script()


class FakeModule(ProcessingModule):
    info = PluginInfo(
        name="fake_prov",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="processing_module",
        settings=(
            SettingField("url"),
            SettingField("password", secret=True, required=False),
        ),
        capabilities=frozenset(a for a in ACTIONS if a != "change"),
    )

    def perform(self, request: ServiceRequest) -> ModuleResult:
        return SCRIPT.answer(request)


@pytest.fixture
def fake_module() -> Iterator[Script]:
    """The ``fake_prov`` plugin, loaded for the test; its script is fresh."""
    global SCRIPT
    plugins = loader.plugins()
    plugins["fake_prov"] = loader.LoadedPlugin("fake_prov", "test", "ok", cls=FakeModule)
    SCRIPT.__init__()  # type: ignore[misc]
    yield SCRIPT
    plugins.pop("fake_prov", None)


def instance(
    env: Any,
    name: str = "fra-1",
    *,
    plugin: str = "fake_prov",
    settings: dict[str, str] | None = None,
    department_id: int | None = None,
    max_services: int | None = None,
    use_for_new_orders: bool = True,
    login: str = "admin",
) -> int:
    with service_ctx(env, login, "ProcessingModuleConfigure") as ctx:
        return prov_ops.processing_module_configure(
            ctx,
            plugin=plugin,
            name=name,
            settings=[
                SettingValue(k, v)
                for k, v in (settings if settings is not None else {"url": "https://x"}).items()
            ],
            department_id=department_id,
            max_services=max_services,
            use_for_new_orders=use_for_new_orders,
        ).instance_id


def plan(env: Any, module: str = "fake_prov", name: str = "VPS") -> int:
    """A published monthly plan on a template of ``module``; returns its version id."""
    with service_ctx(env) as ctx:
        r = resource_create(ctx, name=f"{name} disk", unit="GB", kind="allocated")
        t = service_template_create(
            ctx,
            name=name,
            service_type="virtual_server",
            module=module,
            resources=[TemplateResource(r.id, Decimal(10))],
            module_settings=[ModuleSetting("cluster", "fra")],
        )
        p = plan_create(
            ctx,
            template_id=t.id,
            name=name,
            periods=[PlanPeriod(1, "month", Decimal(0), Decimal("10.00"))],
            rates=[ResourceRate(r.id, Decimal(20), Decimal(100))],
        )
        plan_publish(ctx, plan_id=p.id)
        version_id = ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == p.id))
        return int(version_id)


def subscribe(
    env: Any, account_id: int, version_id: int, parameters: dict[str, str] | None = None
) -> int:
    with UnitOfWork(env.app.engine) as uow:
        acc = uow.session.get(Account, account_id)
        assert acc is not None and acc.parent_id is not None
        sub = new_subscription(
            uow.session,
            env.clock,
            account_id=account_id,
            vendor_id=acc.parent_id,
            plan_version_id=version_id,
            period_count=1,
            period_unit="month",
            start=date(2026, 11, 22),
            parameters=parameters or {"hostname": "vm1.example.com"},
        )
        uow.commit()
        return sub.id


def provision(env: Any, *subscription_ids: int, order_id: int | None = None) -> int:
    """provision_subscription for each (one bundle when an order id is given)."""
    with UnitOfWork(env.app.engine) as uow:
        sub_vendor = uow.session.execute(
            select(Account.id, Account.path).where(Account.type == "provider")
        ).first()
        assert sub_vendor is not None
        ctx = system_context(
            uow,
            env.clock,
            account_id=sub_vendor[0],
            account_path=sub_vendor[1],
            operation="test",
            runtime=env.app.runtime,
        )
        bundles = {
            prov.provision_subscription(ctx, sid, order_id=order_id) for sid in subscription_ids
        }
        uow.commit()
    assert len(bundles) == 1
    return bundles.pop()


def run(env: Any) -> int:
    return prov.run_pending(env.app.engine, env.app.runtime)
