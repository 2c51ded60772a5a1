"""Catalog rules at the service layer, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pba_server.accounts import standing, tree, users
from pba_server.catalog.models import PlanPeriodRow, PlanVersion
from pba_server.catalog.plan_migrations import plan_migrate_subscribers, renewal_version
from pba_server.catalog.plans import (
    plan_archive,
    plan_create,
    plan_get,
    plan_list,
    plan_publish,
    plan_update,
)
from pba_server.catalog.promotions import promotion_create, promotion_get, promotion_redeem
from pba_server.catalog.quotes import price_quote
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import (
    service_template_create,
    service_template_get,
    service_template_update,
)
from pba_server.catalog.types import (
    ModuleSetting,
    OrderParameter,
    PeriodChoice,
    PlanPeriod,
    ResourceQuantity,
    ResourceRate,
    TemplateResource,
)
from pba_server.core import audit
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from tests.catalog_support import service_ctx

PW = "a-long-password-1"


def _month(setup: str = "0", recurring: str = "10.00", **kw: Any) -> PlanPeriod:
    return PlanPeriod(1, "month", Decimal(setup), Decimal(recurring), **kw)


def _reseller(env: Any, name: str, level: str) -> int:
    with service_ctx(env) as ctx:
        acc = tree.account_create(ctx, type="reseller", name=name, partner_level=level)
        users.user_create(
            ctx, account_id=acc.id, login=name.lower(), password=PW, full_name=name, roles=["admin"]
        )
        return acc.id


def _template(env: Any, login: str = "admin", *, shared: bool = False) -> tuple[int, int]:
    with service_ctx(env, login) as ctx:
        r = resource_create(ctx, name="Disk", unit="GB", kind="allocated")
        t = service_template_create(
            ctx,
            name="Hosting",
            service_type="hosting",
            module="plesk",
            resources=[TemplateResource(r.id, Decimal(10))],
            shared_with_resellers=shared,
        )
        return r.id, t.id


def _published_plan(env: Any, template_id: int, login: str = "admin", name: str = "P") -> int:
    with service_ctx(env, login) as ctx:
        p = plan_create(ctx, template_id=template_id, name=name, periods=[_month()])
        plan_publish(ctx, plan_id=p.id)
        return p.id


def test_advanced_reseller_sells_own_plans_on_shared_templates(env: Any) -> None:
    _rid, shared = _template(env, shared=True)
    with service_ctx(env) as ctx:
        r2 = resource_create(ctx, name="IP", unit="IP", kind="allocated")
        private = service_template_create(
            ctx,
            name="Private",
            service_type="other",
            module="manual",
            resources=[TemplateResource(r2.id, Decimal(1))],
        ).id
    provider_plan = _published_plan(env, shared)
    adv = _reseller(env, "Adv", "advanced")
    with service_ctx(env, "adv") as ctx:
        with pytest.raises(ValidationError) as e:
            plan_create(ctx, template_id=private, name="X", periods=[_month()])
        assert e.value.field == "template_id"
        own = plan_create(ctx, template_id=shared, name="Adv Plan", periods=[_month()])
        plan_publish(ctx, plan_id=own.id)
        cust = tree.account_create(ctx, type="customer_personal", name="AC")
        # its customers see its plans, not the provider's
        assert [p.id for p in plan_list(ctx, account_id=cust.id).items] == [own.id]
        q = price_quote(ctx, account_id=cust.id, plan_id=own.id)
        assert q.total == Decimal("10.00")
        # the provider's plans are readable above it but not sold to its customers
        with pytest.raises(ValidationError) as e:
            price_quote(ctx, account_id=cust.id, plan_id=provider_plan)
        assert e.value.field == "plan_id"
        # nor can it change the provider's plan
        with pytest.raises(Forbidden):
            plan_update(ctx, plan_id=provider_plan, name="Mine now")
    with service_ctx(env) as ctx:
        # the provider sees (and manages) the reseller's plan; its own customers don't buy it
        assert plan_get(ctx, plan_id=own.id).owner_id == adv
        direct = tree.account_create(ctx, type="customer_personal", name="DC")
        assert [p.id for p in plan_list(ctx, account_id=direct.id).items] == [provider_plan]


def test_siblings_never_see_each_other(env: Any) -> None:
    _rid, shared = _template(env, shared=True)
    _reseller(env, "Alpha", "advanced")
    _reseller(env, "Beta", "advanced")
    alpha_plan = _published_plan(env, shared, "alpha", "Alpha Plan")
    with service_ctx(env, "beta") as ctx:
        for call in (
            lambda: plan_get(ctx, plan_id=alpha_plan),
            lambda: plan_publish(ctx, plan_id=alpha_plan),
            lambda: plan_archive(ctx, plan_id=alpha_plan),
        ):
            with pytest.raises(NotFound):
                call()
        assert plan_list(ctx).items == []
        with pytest.raises(ValidationError):  # no such plan for the promotion's owner
            promotion_create(ctx, name="x", percent=Decimal(5), plan_ids=[alpha_plan])


def test_price_change_makes_a_version_and_keeps_the_old(env: Any) -> None:
    _rid, t = _template(env)
    plan_id = _published_plan(env, t)
    with service_ctx(env) as ctx:
        v1_id = ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == plan_id))
        info = plan_update(ctx, plan_id=plan_id, periods=[_month(recurring="12.00")])
        assert info.version == 2
        # a change back to v2's own terms is no change
        assert plan_update(ctx, plan_id=plan_id, auto_renew=True).version == 2
    with service_ctx(env) as ctx:
        # the row a subscription would pin is untouched
        fees = ctx.session.scalars(
            select(PlanPeriodRow.recurring_fee).where(PlanPeriodRow.version_id == v1_id)
        ).all()
        assert fees == [Decimal("10.00")]
        assert plan_get(ctx, plan_id=plan_id, version=1).periods[0].recurring_fee == (
            Decimal("10.00")
        )
        with pytest.raises(NotFound):
            plan_get(ctx, plan_id=plan_id, version=3)
        entries = audit.audit_log_list(ctx, target_type="plan", target_id=str(plan_id)).items
        assert [e.operation for e in entries] == ["test"] * 3  # created, published, v2
        assert '"version"' in entries[0].changes


def test_template_keeps_rated_resources(env: Any) -> None:
    rid, t = _template(env)
    with service_ctx(env) as ctx:
        other = resource_create(ctx, name="Mail", unit="mailbox", kind="allocated")
        plan_create(
            ctx,
            template_id=t,
            name="P",
            periods=[_month()],
            rates=[ResourceRate(rid, Decimal(10), Decimal(20), overage_price=Decimal("0.1"))],
        )
        with pytest.raises(ValidationError) as e:
            service_template_update(
                ctx, template_id=t, resources=[TemplateResource(other.id, Decimal(1))]
            )
        assert e.value.field == "resources"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"periods": []}, "periods"),
        (
            {
                "periods": [
                    _month(is_default=True),
                    PlanPeriod(3, "month", Decimal(0), Decimal(1), is_default=True),
                ]
            },
            "periods[1].is_default",
        ),
        ({"periods": [_month(), _month()]}, "periods[1]"),
        ({"currency": "XXX"}, "currency"),
        ({"refund_policy": "full_within_days"}, "refund_days"),
        ({"upgrade_to": [999999]}, "upgrade_to[0]"),
    ],
)
def test_plan_create_validation(env: Any, kw: dict[str, Any], field: str) -> None:
    _rid, t = _template(env)
    args = {"template_id": t, "name": "P", "periods": [_month()], **kw}
    with service_ctx(env) as ctx, pytest.raises(ValidationError) as e:
        plan_create(ctx, **args)
    assert e.value.field == field


def test_basic_reseller_owns_nothing(env: Any) -> None:
    _reseller(env, "Basic", "basic")
    with service_ctx(env, "basic") as ctx:
        with pytest.raises(Forbidden):
            resource_create(ctx, name="Disk", unit="GB", kind="allocated")
        with pytest.raises(Forbidden):
            promotion_create(ctx, name="x", percent=Decimal(5))


def test_automatic_promotion_applies_without_code(env: Any) -> None:
    _rid, t = _template(env)
    plan_id = _published_plan(env, t)
    with service_ctx(env) as ctx:
        promotion_create(
            ctx, name="Launch", percent=Decimal(20), periods=[PeriodChoice(1, "month")]
        )
        cust = tree.account_create(ctx, type="customer_personal", name="C")
        q = price_quote(ctx, account_id=cust.id, plan_id=plan_id)
        assert q.total == Decimal("8.00") and q.discount_cycles is None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    extra=st.decimals(min_value=0, max_value=40, places=0),
    pick=st.booleans(),
    promo=st.sampled_from([None, "PCT", "FIX"]),
    period=st.sampled_from([(1, "month"), (1, "year")]),
)
def test_price_quote_properties(
    quote_env: dict[str, Any],
    extra: Decimal,
    pick: bool,
    promo: str | None,
    period: tuple[int, str],
) -> None:
    env, ids = quote_env["env"], quote_env
    with service_ctx(env) as ctx:
        q = price_quote(
            ctx,
            account_id=ids["customer"],
            plan_id=ids["plan"],
            period_count=period[0],
            period_unit=period[1],  # type: ignore[arg-type]
            options=[ids["app"]] if pick else [],
            resources=[ResourceQuantity(ids["disk"], extra)],
            promotion_code=promo,
        )
    assert q.total >= 0
    assert q.total == sum((ln.amount for ln in q.lines), Decimal(0))
    assert q.subtotal + q.discount == q.total
    assert all(ln.amount == ln.amount.quantize(Decimal("0.01")) for ln in q.lines)
    assert any(ln.resource_id == ids["app"] for ln in q.lines) == pick


@pytest.fixture
def quote_env(env: Any) -> dict[str, Any]:
    with service_ctx(env) as ctx:
        disk = resource_create(ctx, name="Disk", unit="GB", kind="allocated").id
        app = resource_create(ctx, name="App", unit="item", kind="allocated").id
        t = service_template_create(
            ctx,
            name="T",
            service_type="hosting",
            module="plesk",
            resources=[TemplateResource(disk, Decimal(10)), TemplateResource(app, Decimal(0))],
        ).id
        plan = plan_create(
            ctx,
            template_id=t,
            name="P",
            periods=[
                _month("4.99", "9.99"),
                PlanPeriod(1, "year", Decimal("0"), Decimal("99.90"), Decimal("1.50")),
            ],
            rates=[
                ResourceRate(disk, Decimal(10), Decimal(50), Decimal("0.333"), Decimal("0.1234")),
                ResourceRate(
                    app, Decimal(0), Decimal(1), Decimal(1), Decimal("1.99"), optional=True
                ),
            ],
        ).id
        plan_publish(ctx, plan_id=plan)
        promotion_create(ctx, name="pct", code="PCT", percent=Decimal("33.3333"))
        promotion_create(
            ctx, name="fix", code="FIX", amount=Decimal("500.00"), on_setup=True, cycles=1
        )
        cust = tree.account_create(ctx, type="customer_personal", name="C").id
    return {"env": env, "disk": disk, "app": app, "plan": plan, "customer": cust}


def test_renewal_version_follows_migrations(env: Any) -> None:
    _rid, t = _template(env)
    plan_id = _published_plan(env, t)
    with service_ctx(env) as ctx:
        for fee in ("11.00", "12.00"):
            plan_update(ctx, plan_id=plan_id, periods=[_month(recurring=fee)])
        assert renewal_version(ctx, plan_id, 1) == 1  # nothing requested: keep it
        plan_migrate_subscribers(ctx, plan_id=plan_id, from_version=1, to_version=2)
        assert renewal_version(ctx, plan_id, 1) == 2
        plan_migrate_subscribers(ctx, plan_id=plan_id, from_version=2)
        assert renewal_version(ctx, plan_id, 1) == 3
        assert renewal_version(ctx, plan_id, 3) == 3
        with pytest.raises(ValidationError) as e:
            plan_migrate_subscribers(ctx, plan_id=plan_id, from_version=3)
        assert e.value.field == "to_version"


def test_what_a_reseller_reads_of_its_parents_catalog(env: Any) -> None:
    with service_ctx(env) as ctx:
        r = resource_create(ctx, name="Disk", unit="GB", kind="allocated")
        t = service_template_create(
            ctx,
            name="VPS",
            service_type="virtual_server",
            module="vps_manager",
            resources=[TemplateResource(r.id, Decimal(10))],
            module_settings=[ModuleSetting("api_url", "https://panel.internal/")],
            order_parameters=[OrderParameter("hostname", "hostname")],
        ).id
        draft = plan_create(ctx, template_id=t, name="Draft", periods=[_month()]).id
    _reseller(env, "Basic", "basic")
    with service_ctx(env, "basic") as ctx:
        seen = service_template_get(ctx, template_id=t)
        assert seen.module_settings == [] and [p.name for p in seen.order_parameters] == [
            "hostname"
        ]
        cust = tree.account_create(ctx, type="customer_personal", name="C")
        # an unpublished plan above is not there at all
        with pytest.raises(NotFound):
            price_quote(ctx, account_id=cust.id, plan_id=draft)
        with pytest.raises(NotFound):
            plan_get(ctx, plan_id=draft)
    with service_ctx(env) as ctx:
        assert service_template_get(ctx, template_id=t).module_settings[0].name == ("api_url")


def test_promotion_uses_are_counted_by_the_database(env: Any) -> None:
    _rid, t = _template(env)
    plan_id = _published_plan(env, t)
    with service_ctx(env) as ctx:
        once = promotion_create(
            ctx, name="Once", code="ONCE", percent=Decimal(10), once_per_account=True
        ).id
        two = promotion_create(ctx, name="Two", code="TWO", percent=Decimal(5), max_uses=2).id
        a = tree.account_create(ctx, type="customer_personal", name="A").id
        b = tree.account_create(ctx, type="customer_personal", name="B").id
    with service_ctx(env) as ctx:
        promotion_redeem(ctx, once, a, "order-1")
        promotion_redeem(ctx, two, a)
        promotion_redeem(ctx, two, b)
    with service_ctx(env) as ctx:
        with pytest.raises(ValidationError) as e:
            price_quote(ctx, account_id=a, plan_id=plan_id, promotion_code="once")
        assert "already used" in e.value.message
        assert price_quote(ctx, account_id=b, plan_id=plan_id, promotion_code="once").total
        with pytest.raises(ValidationError) as e:
            price_quote(ctx, account_id=b, plan_id=plan_id, promotion_code="two")
        assert "used up" in e.value.message
    for promo, account in ((once, a), (two, b)):
        with pytest.raises(ValidationError), service_ctx(env) as ctx:
            promotion_redeem(ctx, promo, account)
    with service_ctx(env) as ctx:
        assert promotion_get(ctx, promotion_id=two).used_count == 2
        assert promotion_get(ctx, promotion_id=once).used_count == 1


def test_quote_needs_a_buyer_that_can_buy(env: Any) -> None:
    _rid, t = _template(env)
    plan_id = _published_plan(env, t)
    with service_ctx(env) as ctx:
        with pytest.raises(ValidationError) as e:
            price_quote(ctx, plan_id=plan_id)  # the provider itself
        assert e.value.field == "account_id"
        c = tree.account_create(ctx, type="customer_personal", name="C").id
        standing.account_close(ctx, account_id=c)
        with pytest.raises(InvalidState):
            price_quote(ctx, account_id=c, plan_id=plan_id)
