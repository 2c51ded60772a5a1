"""The builtin module ``domains`` (as the provisioning engine calls it), the
TLD plans, and the expiry and registrar-balance jobs, on both databases."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from pba_server.catalog.plans import plan_get
from pba_server.catalog.templates import service_template_get
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import Conflict, ValidationError
from pba_server.core.jobs import JobContext
from pba_server.domains import availability, monitors, tlds
from pba_server.domains import jobs as domain_jobs
from pba_server.domains.models import Domain
from pba_server.domains.types import TldPrice
from pba_server.events.models import Event
from pba_server.provisioning.registry import BUILTIN_MODULES
from pba_server.scheduler import jobs
from pba_server.sdk import NotSupported
from pba_server.sdk.provisioning import Done, FinalFailure, InProgress, RetryableFailure
from tests import domains_support as ds
from tests.catalog_support import service_ctx


@pytest.fixture
def setup(env):
    inst, reg = ds.registrar(env)
    t = ds.tld(env, inst)
    acc = ds.customer(env)
    return {
        "inst": inst,
        "reg": reg,
        "tld": t,
        "acc": acc,
        "template": ds.template_of(env, t.plan_id),
        "transfer_template": ds.template_of(env, t.transfer_plan_id),
    }


def _registry(setup):

    from pba_server.sdk import loader

    return loader.plugins()["sandbox_registrar"].cls.state(setup["reg"])


def test_the_builtin_module_is_registered():
    mod = BUILTIN_MODULES["domains"]
    assert {"create", "prolong", "change", "sync"} <= mod.capabilities
    assert "delete" not in mod.capabilities
    assert mod.on_result is not None


def test_tld_create_makes_published_plans_priced_per_year(env, setup):
    t = setup["tld"]
    assert t.name == "test" and t.registrar == "sandbox_registrar" and t.currency == "USD"
    assert [(p.years, p.register, p.renew, p.transfer) for p in t.prices] == [
        (1, Decimal("12.00"), Decimal("10.00"), Decimal("8.00")),
        (2, Decimal("22.00"), Decimal("20.00"), None),
    ]
    with service_ctx(env) as ctx:
        plan = plan_get(ctx, plan_id=t.plan_id)
        tplan = plan_get(ctx, plan_id=t.transfer_plan_id)
        template = service_template_get(ctx, template_id=plan.template_id)
    assert plan.status == "published" and tplan.status == "published"
    assert template.service_type == "domain" and template.module == "domains"
    assert {s.name: s.value for s in template.module_settings} == {
        "tld": "test",
        "action": "register",
    }
    assert [p.name for p in template.order_parameters] == [
        "domain",
        "action",
        "auth_code",
        "nameservers",
    ]
    # first period: the register price; renewals: the renew price
    first = {(p.count, p.unit): p for p in plan.periods}
    assert first[(1, "year")].setup_fee + first[(1, "year")].recurring_fee == Decimal("12.00")
    assert first[(1, "year")].recurring_fee + first[(1, "year")].renewal_fee == Decimal("10.00")
    assert first[(2, "year")].recurring_fee == Decimal("20.00")
    # transfer plan: only the periods with a transfer price; cheaper first year
    (tp,) = tplan.periods
    assert (tp.count, tp.setup_fee, tp.recurring_fee, tp.renewal_fee) == (
        1,
        Decimal("0.00"),
        Decimal("8.00"),
        Decimal("2.00"),
    )


def test_tld_create_refuses_duplicates_bad_names_and_non_registrars(env, setup):
    with service_ctx(env) as ctx, pytest.raises(Conflict):
        tlds.tld_create(ctx, name=".TEST", instance_id=setup["inst"], prices=ds.PRICES)
    with service_ctx(env) as ctx, pytest.raises(ValidationError, match="name"):
        tlds.tld_create(ctx, name="bad_tld", instance_id=setup["inst"], prices=ds.PRICES)
    with service_ctx(env) as ctx, pytest.raises(ValidationError, match="years"):
        tlds.tld_create(
            ctx,
            name="other",
            instance_id=setup["inst"],
            prices=[TldPrice(11, Decimal(1), Decimal(1))],
        )
    with service_ctx(env) as ctx, pytest.raises(ValidationError, match="instance_id"):
        tlds.tld_create(ctx, name="other", instance_id=999999, prices=ds.PRICES)


def test_register_through_the_module(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="Example.TEST")
    result = ds.run(env, svc, "create")
    assert isinstance(result, Done), result
    assert result.data["domain"] == "example.test"
    d = ds.domain_row(env, "example.test")
    assert d.status == "active" and d.live_name == "example.test"
    assert d.expires_on == date.today().replace(year=date.today().year + 1) or d.expires_on
    assert d.registry_id and d.action == "register" and d.service_id == svc.id
    contacts = json.loads(d.contacts)
    assert contacts["registrant"]["name"] == "Ada Admin"
    assert contacts["registrant"]["organization"] == "Domain Buyer"
    assert contacts["tech"]["name"] == "Tim Tech"
    # the engine repeats the same operation (lost answer): registered once
    again = ds.run(env, svc, "create")
    assert isinstance(again, Done)
    assert [c for c in _registry(setup).calls if c[0] == "register"] == [
        ("register", "example.test")
    ]


def test_register_taken_name_fails_finally_and_frees_the_row(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="taken-one.test")
    result = ds.run(env, svc, "create")
    assert isinstance(result, FinalFailure) and "ObjectExists" in result.message
    d = ds.domain_row(env, "taken-one.test")
    assert d.status == "failed" and d.live_name is None and "2302" in d.last_error


def test_a_failed_create_asked_again_may_succeed(env, setup):
    registry = _registry(setup)
    registry.domains["freed.test"] = {"status": "active"}  # someone else's
    svc = ds.service(env, setup["acc"], setup["template"], domain="freed.test")
    assert isinstance(ds.run(env, svc, "create"), FinalFailure)
    d = ds.domain_row(env, "freed.test")
    assert d.status == "failed" and d.live_name is None
    # the name lapses at the registry; staff retry the operation
    registry.domains.pop("freed.test")
    assert isinstance(ds.run(env, svc, "create", key="op-retry"), Done)
    d = ds.domain_row(env, "freed.test")
    assert d.status == "active" and d.live_name == "freed.test"
    # a failed row whose name another live row took meanwhile cannot come back
    registry.domains["gone.test"] = {"status": "active"}
    first = ds.service(env, setup["acc"], setup["template"], domain="gone.test")
    assert isinstance(ds.run(env, first, "create"), FinalFailure)
    registry.domains.pop("gone.test")
    second = ds.service(env, setup["acc"], setup["template"], domain="gone.test")
    assert isinstance(ds.run(env, second, "create"), Done)
    again = ds.run(env, first, "create", key="op-retry-2")
    assert isinstance(again, FinalFailure) and "already registered here" in again.message


def test_unreachable_registrar_is_retryable_then_succeeds(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="flaky.test")
    first = ds.run(env, svc, "create", key="op-77")
    assert isinstance(first, RetryableFailure)
    d = ds.domain_row(env, "flaky.test")
    assert d.status == "pending" and "unavailable" in d.last_error
    second = ds.run(env, svc, "create", key="op-77")
    assert isinstance(second, Done)
    assert ds.domain_row(env, "flaky.test").status == "active"


def test_bad_parameters_fail_finally(env, setup):
    for params, message in [
        ({"domain": "not a name"}, "domain"),
        ({"domain": "x.other"}, "not under a TLD"),
        ({"domain": "x.test", "action": "steal"}, "action"),
        ({"domain": "x.test", "action": "transfer"}, "auth_code"),
        ({"domain": "x.test", "nameservers": "ns1.example.com"}, "name servers"),
    ]:
        result = ds.run(env, ds.service(env, setup["acc"], setup["template"], **params), "create")
        assert isinstance(result, FinalFailure) and message in result.message, (params, result)


def test_no_contact_fails_finally(env, setup):
    acc = ds.customer(env, "No Contacts", contacts=False)
    result = ds.run(env, ds.service(env, acc, setup["template"], domain="nocontact.test"), "create")
    assert isinstance(result, FinalFailure) and "contact" in result.message


def test_second_order_for_a_live_name_fails(env, setup):
    assert isinstance(
        ds.run(env, ds.service(env, setup["acc"], setup["template"], domain="dup.test"), "create"),
        Done,
    )
    result = ds.run(
        env, ds.service(env, setup["acc"], setup["template"], domain="dup.test"), "create"
    )
    assert isinstance(result, FinalFailure) and "already registered here" in result.message


def test_transfer_ok_pending_and_wrong_auth_code(env, setup):
    tt = setup["transfer_template"]
    ok = ds.run(
        env, ds.service(env, setup["acc"], tt, domain="moved.test", auth_code="s3cret"), "create"
    )
    assert isinstance(ok, Done)
    d = ds.domain_row(env, "moved.test")
    assert (d.action, d.status) == ("transfer", "active")

    svc = ds.service(env, setup["acc"], tt, domain="slow-move.test", auth_code="s3cret")
    pending = ds.run(env, svc, "create")
    assert isinstance(pending, InProgress)
    assert ds.domain_row(env, "slow-move.test").status == "transferring"
    done = ds.run(env, svc, "create")  # the engine polls with the same request
    assert isinstance(done, Done)
    assert ds.domain_row(env, "slow-move.test").status == "active"

    bad = ds.run(
        env, ds.service(env, setup["acc"], tt, domain="nope.test", auth_code="wrong"), "create"
    )
    assert (
        isinstance(bad, FinalFailure)
        and "AuthorizationError" in bad.message
        and "2201" in bad.message
    )
    assert ds.domain_row(env, "nope.test").status == "failed"


def test_prolong_change_sync_suspend_delete(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="life.test")
    assert isinstance(ds.run(env, svc, "create"), Done)
    expiry = ds.domain_row(env, "life.test").expires_on
    until = expiry.replace(year=expiry.year + 1)
    r = ds.run(env, svc, "prolong", until=until.isoformat())
    assert isinstance(r, Done) and r.data["expires_on"] == until.isoformat()
    assert ds.domain_row(env, "life.test").expires_on == until
    # a repeat (lost answer, the row already moved on) renews nothing more
    again = ds.run(env, svc, "prolong", until=until.isoformat(), key="op-other")
    assert isinstance(again, Done)
    assert [c for c in _registry(setup).calls if c[0] == "renew"] == [("renew", "life.test")]

    svc.parameters = json.dumps(
        {"domain": "life.test", "nameservers": "ns1.host.example, ns2.host.example"}
    )
    r = ds.run(env, svc, "change")
    assert isinstance(r, Done)
    assert json.loads(ds.domain_row(env, "life.test").nameservers) == [
        "ns1.host.example",
        "ns2.host.example",
    ]
    assert _registry(setup).domains["life.test"]["nameservers"] == [
        "ns1.host.example",
        "ns2.host.example",
    ]
    r = ds.run(env, svc, "sync")
    assert isinstance(r, Done) and r.data["expires_on"] == until.isoformat()
    assert isinstance(ds.run(env, svc, "suspend"), Done)
    with pytest.raises(NotSupported):
        ds.run(env, svc, "delete")
    assert ds.domain_row(env, "life.test").status == "active"


def test_prolong_after_a_lost_renew_answer_is_done(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="lost.test")
    assert isinstance(ds.run(env, svc, "create"), Done)
    d = ds.domain_row(env, "lost.test")
    until = d.expires_on.replace(year=d.expires_on.year + 1)
    reg = _registry(setup)
    reg.domains["lost.test"]["expires_on"] = until  # renewed, answer lost
    r = ds.run(env, svc, "prolong", until=until.isoformat(), key="op-new")
    assert isinstance(r, Done) and ds.domain_row(env, "lost.test").expires_on == until


def _events(env, type_):
    with UnitOfWork(env.app.engine) as uow:
        return [
            json.loads(e.payload)
            for e in uow.session.scalars(
                select(Event).where(Event.type == type_).order_by(Event.id)
            )
        ]


def test_expiry_job_warns_once_per_expiry_date(env, setup):
    svc = ds.service(env, setup["acc"], setup["template"], domain="soon.test")
    assert isinstance(ds.run(env, svc, "create"), Done)
    ds.run(env, ds.service(env, setup["acc"], setup["template"], domain="later.test"), "create")
    now = datetime(2030, 3, 1, 12, tzinfo=UTC)
    env.clock.freeze(now)
    with UnitOfWork(env.app.engine) as uow:
        uow.session.execute(
            update(Domain).where(Domain.name == "soon.test").values(expires_on=date(2030, 3, 20))
        )
        uow.session.execute(
            update(Domain).where(Domain.name == "later.test").values(expires_on=date(2030, 6, 1))
        )
        uow.commit()
    for _ in range(2):
        with UnitOfWork(env.app.engine) as uow:
            summary = domain_jobs.expiry(uow, env.clock, env.app.runtime)
            uow.commit()
    assert "0 domain(s)" in summary
    assert _events(env, "domain.expiring") == [
        {
            "domain": "soon.test",
            "subscription_id": None,
            "expires_on": "2030-03-20",
            "days_left": 19,
        }
    ]
    # renewed: the new date is warned about again when it comes
    with UnitOfWork(env.app.engine) as uow:
        uow.session.execute(
            update(Domain).where(Domain.name == "soon.test").values(expires_on=date(2031, 3, 20))
        )
        uow.commit()
    env.clock.freeze(datetime(2031, 3, 1, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        domain_jobs.expiry(uow, env.clock, env.app.runtime)
        uow.commit()
    names = [(e["domain"], e["expires_on"]) for e in _events(env, "domain.expiring")]
    assert ("soon.test", "2031-03-20") in names and names.count(("soon.test", "2031-03-20")) == 1
    # later.test (2030-06-01) passed its expiry date: expired
    assert ds.domain_row(env, "later.test").status == "expired"


def test_expiry_job_is_in_jobs_and_uses_the_setting(env, setup):
    assert "domains-expiry" in env.app.jobs and "registrar-balance" in env.app.jobs
    assert env.app.jobs["domains-expiry"].interval == timedelta(days=1)
    assert domain_jobs.EXPIRY_NOTICE_DAYS == env.app.settings.domain_expiry_notice_days == 30
    # the job built from settings warns that many days ahead: a domain 10 days
    # from expiry is warned about with the default 30, not with a setting of 5
    ds.run(env, ds.service(env, setup["acc"], setup["template"], domain="ten.test"), "create")
    env.clock.freeze(datetime(2030, 3, 1, 12, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        uow.session.execute(
            update(Domain).where(Domain.name == "ten.test").values(expires_on=date(2030, 3, 11))
        )
        uow.commit()

    def run(job: Any) -> str:
        with UnitOfWork(env.app.engine) as uow:
            summary: str = job.run(JobContext(uow=uow, clock=env.clock, runtime=env.app.runtime))
            uow.commit()
        return summary

    short = replace(env.app.settings, domain_expiry_notice_days=5)
    (five,) = [j for j in domain_jobs.jobs(short) if j.name == "domains-expiry"]
    assert run(five) == "0 domain(s) expiring within 5 days warned about, 0 expired"
    assert _events(env, "domain.expiring") == []
    assert run(env.app.jobs["domains-expiry"]) == (
        "1 domain(s) expiring within 30 days warned about, 0 expired"
    )
    assert [e["domain"] for e in _events(env, "domain.expiring")] == ["ten.test"]


def test_balance_monitor_raises_once_a_day(env, setup, monkeypatch):
    called = []
    monkeypatch.setattr(domain_jobs, "_balance_low_task", lambda ctx, inst, bal: called.append(bal))
    with service_ctx(env) as ctx:
        m = monitors.registrar_balance_minimum_set(
            ctx, instance_id=setup["inst"], minimum=Decimal("2000"), currency="usd"
        )
    assert (m.minimum, m.currency) == (Decimal("2000.00"), "USD")
    env.clock.freeze(datetime(2030, 1, 1, 6, tzinfo=UTC))
    for _ in range(2):
        with UnitOfWork(env.app.engine) as uow:
            summary = domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
            uow.commit()
    assert "1 registrar balance(s) checked" in summary
    assert _events(env, "registrar.balance_low") == [
        {
            "registrar": "sandbox_registrar",
            "balance": "1000.00",
            "minimum": "2000.00",
            "currency": "USD",
        }
    ]
    assert len(called) == 1
    env.clock.freeze(datetime(2030, 1, 2, 6, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()
    assert len(_events(env, "registrar.balance_low")) == 2
    # above the minimum: quiet
    with service_ctx(env) as ctx:
        monitors.registrar_balance_minimum_set(
            ctx, instance_id=setup["inst"], minimum=Decimal("5"), currency="USD"
        )
    env.clock.freeze(datetime(2030, 1, 3, 6, tzinfo=UTC))
    with UnitOfWork(env.app.engine) as uow:
        domain_jobs.registrar_balance(uow, env.clock, env.app.runtime)
        uow.commit()
    assert len(_events(env, "registrar.balance_low")) == 2
    with service_ctx(env) as ctx:
        (mon,) = monitors.registrar_monitor_list(ctx).items
    assert mon.last_balance == Decimal("1000.00") and mon.alerted_on == date(2030, 1, 2)


def test_jobs_run_through_the_scheduler(env, setup):
    with service_ctx(env) as ctx:
        monitors.registrar_balance_minimum_set(
            ctx, instance_id=setup["inst"], minimum=Decimal("5000"), currency="USD"
        )
    env.clock.freeze(datetime(2031, 5, 5, tzinfo=UTC))
    ran = jobs.run_due(
        env.app.engine,
        env.app.runtime,
        {k: env.app.jobs[k] for k in ("domains-expiry", "registrar-balance")},
    )
    assert ran == ["domains-expiry", "registrar-balance"]
    assert len(_events(env, "registrar.balance_low")) == 1


def test_check_order_for_the_orders_feature(env, setup):
    template = setup["template"]
    ok = {"domain": "order-me.test", "nameservers": "ns1.a.example,ns2.a.example"}
    with service_ctx(env) as ctx:
        availability.check_order(ctx, template, ok)
        availability.check_order(
            ctx, setup["transfer_template"], {"domain": "x.test", "auth_code": "a"}
        )
    for params, field in [
        ({"domain": "x.other"}, "parameters.domain"),
        ({"domain": "bad name.test"}, "parameters.domain"),
        ({"domain": "x.test", "action": "transfer"}, "parameters.auth_code"),
        ({"domain": "x.test", "nameservers": "only.one.example"}, "parameters.nameservers"),
    ]:
        with service_ctx(env) as ctx, pytest.raises(ValidationError, match=field):
            availability.check_order(ctx, template, params)
    assert isinstance(
        ds.run(env, ds.service(env, setup["acc"], template, domain="order-me.test"), "create"), Done
    )
    with service_ctx(env) as ctx, pytest.raises(ValidationError, match="already registered"):
        availability.check_order(ctx, template, ok)
