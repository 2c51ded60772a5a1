"""Builders for the order tests: a plan, a customer with a card, a fake
provisioning engine, and running the workflow runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pba_server.accounts import users
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import PlanPeriod, PlanTrial, ResourceRate, TemplateResource
from pba_server.core.context import CallContext, system_context
from pba_server.core.db import UnitOfWork
from pba_server.orders import engine
from pba_server.orders import provisioner as prov
from pba_server.payments.methods import payment_method_add
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.types import SettingValue
from pba_server.provisioning.registry import BUNDLE_HOOKS, BundleOutcome
from pba_server.subscriptions.models import Subscription
from tests.billing_support import customer
from tests.catalog_support import service_ctx

D = Decimal
PW = "a-long-password-1"


def plan(
    env: Any,
    name: str = "Hosting S",
    *,
    recurring: str = "30.00",
    setup: str = "0",
    resource: bool = False,
    trial: PlanTrial | None = None,
    refund_policy: str = "none",
    refund_days: int = 0,
    upgrade_to: list[int] | None = None,
    login: str = "admin",
    template_id: int | None = None,
    resource_id: int | None = None,
) -> dict[str, int]:
    with service_ctx(env, login) as ctx:
        rid = resource_id
        if template_id is None:
            if rid is None and resource:
                rid = resource_create(ctx, name=f"Disk {name}", unit="GB", kind="allocated").id
            t = service_template_create(
                ctx,
                name=f"T {name}",
                service_type="hosting",
                module="manual",
                resources=[TemplateResource(rid, D(10))] if rid else [],
            )
            template_id = t.id
        p = plan_create(
            ctx,
            template_id=template_id,
            name=name,
            periods=[PlanPeriod(1, "month", D(setup), D(recurring))],
            rates=(
                [ResourceRate(rid, D(10), D(100), D("1.00"), D("0.50"), D("0.10"))] if rid else None
            ),
            trial=trial,
            refund_policy=refund_policy,  # type: ignore[arg-type]
            refund_days=refund_days,
            upgrade_to=upgrade_to,
        )
        plan_publish(ctx, plan_id=p.id)
        return {"plan": p.id, "template": template_id, "resource": rid or 0}


def gateway(env: Any, tmp_path: Path, login: str = "admin") -> int:
    with service_ctx(env, login) as ctx:
        return plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[
                SettingValue("api_key", "sk_test_x"),
                SettingValue("state_file", str(tmp_path / "sandbox.json")),
            ],
        ).id


def card(env: Any, account_id: int, inst: int, token: str = "tok_approve") -> int:
    with service_ctx(env) as ctx:
        return payment_method_add(
            ctx,
            account_id=account_id,
            instance_id=inst,
            token=token,
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="A. Customer",
            make_default=True,
        ).id


def buyer(env: Any, name: str = "Cust", **kw: Any) -> int:
    acc = customer(env, name, **kw)
    with service_ctx(env) as ctx:
        users.user_create(
            ctx,
            account_id=acc,
            login=f"{name.lower().replace(' ', '')}-admin",
            password=PW,
            full_name=name,
            roles=["admin"],
        )
    return acc


@dataclass
class FakeProvisioner:
    """Stands in for pba_server.provisioning.api: bundles stay running until
    :meth:`finish` reports them through BUNDLE_HOOKS, as the engine does."""

    outcome: str = "done"  # what finish() reports by default
    bundles: dict[int, tuple[int, str, int | None, str]] = field(default_factory=dict)
    states: dict[int, str] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)  # subscriptions with services
    calls: list[tuple[str, int]] = field(default_factory=list)

    def provision_subscription(
        self, ctx: CallContext, subscription_id: int, *, order_id: int | None = None
    ) -> int:
        return self._bundle(subscription_id, "create", order_id)

    def request_action(
        self, ctx: CallContext, subscription_id: int, action: str, **kw: Any
    ) -> int | None:
        if subscription_id not in self.live:
            self.calls.append((action, subscription_id))
            return None
        return self._bundle(subscription_id, action, kw.get("order_id"))

    def bundle_state(self, session: Any, bundle_id: int) -> tuple[str, str | None]:
        return self.states.get(bundle_id, "running"), None  # type: ignore[return-value]

    def _bundle(self, sub: int, action: str, order_id: int | None) -> int:
        bid = len(self.bundles) + 1
        self.bundles[bid] = (sub, action, order_id, "running")
        self.states[bid] = "running"
        self.calls.append((action, sub))
        return bid

    def finish(self, env: Any, state: str | None = None, reason: str | None = None) -> int:
        """Report every running bundle finished, in one transaction per bundle."""
        n = 0
        for bid, (sub, action, order_id, _s) in list(self.bundles.items()):
            if self.states[bid] != "running":
                continue
            st = state or self.outcome
            with UnitOfWork(env.app.engine) as uow:
                s = uow.session.get(Subscription, sub)
                vendor_id = s.vendor_id if s is not None else 1
                from pba_server.accounts.models import Account

                v = uow.session.get(Account, vendor_id)
                ctx = system_context(
                    uow,
                    env.clock,
                    account_id=v.id,
                    account_path=v.path,
                    operation="fake-prov",
                    runtime=env.app.runtime,
                )
                out = BundleOutcome(bid, action, sub, order_id, st, reason)  # type: ignore[arg-type]
                for hook in BUNDLE_HOOKS:
                    hook(ctx, out)
                uow.commit()
            self.states[bid] = st
            if st == "done" and action == "create":
                self.live.add(sub)
            n += 1
        return n


def run(env: Any) -> int:
    return engine.run_orders(env.app.engine, env.app.runtime)


def use_fake(env: Any, fake: FakeProvisioner | None) -> Any:
    """Replace the provisioner on ``env``'s app runtime (None: the engine);
    returns the old one."""
    rt = env.app.runtime
    old = rt.port(prov.Provisioner)
    rt.provide(prov.Provisioner, fake if fake is not None else prov.ENGINE)
    return old


def subscriptions_of(env: Any, account_id: int) -> list[Subscription]:
    with UnitOfWork(env.app.engine) as uow:
        rows = list(
            uow.session.scalars(
                select(Subscription)
                .where(Subscription.account_id == account_id)
                .order_by(Subscription.id)
            )
        )
        uow.session.expunge_all()
        return rows
