"""The billing run's rules at the service layer, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from pba_server.billing.documents import invoice_event
from pba_server.billing.payments import payment_record
from pba_server.billing.tax_rules import tax_rule_set
from pba_server.billing.terms import payment_terms_set
from tests.billing_support import assert_books_sound, customer
from tests.billrun_support import invoices, make_plan, run, sub, subscribe
from tests.catalog_support import service_ctx

D = Decimal


def _provider(env: Any) -> int:
    with service_ctx(env) as ctx:
        return ctx.principal.account_id


def test_renews_in_advance_one_invoice_per_customer(env: Any) -> None:
    cat = make_plan(env)
    prov = _provider(env)
    c1 = customer(env, "C1", country=None)
    c2 = customer(env, "C2", country=None)
    s1 = subscribe(env, cat, c1, prov, date(2026, 1, 31))
    s2 = subscribe(env, cat, c1, prov, date(2026, 2, 10), bought={cat.disk: D(5)})
    s3 = subscribe(env, cat, c2, prov, date(2026, 2, 20))
    # nothing due yet
    assert run(env, date(2026, 2, 27)).invoices == 0
    summary = run(env, date(2026, 3, 10))
    assert (summary.subscriptions, summary.periods, summary.invoices) == (2, 2, 1)
    [(inv, lines)] = invoices(env)
    assert inv.account_id == c1 and inv.issuer_id == prov and inv.status == "issued"
    assert inv.number is not None and inv.total == D("30.00")  # 10 + 10 + 5 GB x 2.00
    assert [(ln.period_start, ln.period_end) for ln in lines] == [
        (date(2026, 2, 28), date(2026, 3, 31)),
        (date(2026, 3, 10), date(2026, 4, 10)),
        (date(2026, 3, 10), date(2026, 4, 10)),
    ]
    assert sub(env, s1).next_billing_date == date(2026, 3, 31)  # anchor day 31
    assert sub(env, s1).period_start == date(2026, 2, 28)
    assert sub(env, s2).next_billing_date == date(2026, 4, 10)
    # the same date again bills nothing
    assert run(env, date(2026, 3, 10)).invoices == 0
    assert run(env, date(2026, 3, 20)).invoices == 1  # s3
    assert sub(env, s3).next_billing_date == date(2026, 4, 20)
    assert_books_sound(env)


def test_catch_up_bills_each_missed_period_once(env: Any) -> None:
    cat = make_plan(env)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    s = subscribe(env, cat, c, prov, date(2026, 1, 15))
    run(env, date(2026, 4, 20))  # due 15 Feb, 15 Mar, 15 Apr
    [(inv, lines)] = invoices(env)
    assert [ln.period_start for ln in lines] == [
        date(2026, 2, 15),
        date(2026, 3, 15),
        date(2026, 4, 15),
    ]
    assert inv.total == D("30.00")
    assert sub(env, s).next_billing_date == date(2026, 5, 15)
    run(env, date(2026, 4, 20))
    assert len(invoices(env)) == 1


def test_dry_run_writes_nothing(env: Any) -> None:
    cat = make_plan(env)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    s = subscribe(env, cat, c, prov, date(2026, 1, 15))
    summary = run(env, date(2026, 2, 15), dry_run=True)
    assert summary.invoices == 1 and summary.drafts[0].total == D("10.00")
    assert next(ln.description for ln in summary.drafts[0].lines).startswith("Subscription")
    assert invoices(env) == []
    assert sub(env, s).next_billing_date == date(2026, 2, 15)


def test_tax_renewal_fee_and_promotion_cycles(env: Any) -> None:
    cat = make_plan(env, renewal="1.00")
    prov = _provider(env)
    with service_ctx(env) as ctx:
        tax_rule_set(ctx, buyer_country="DE", name="VAT", rate=D(19))
        from pba_server.catalog.promotions import promotion_create

        promo = promotion_create(ctx, name="Half", percent=D(50), cycles=3)
    c = customer(env, "C", country="DE")
    subscribe(env, cat, c, prov, date(2026, 1, 1), promotion_id=promo.id, promotion_cycles=1)
    run(env, date(2026, 2, 1))
    [(inv, lines)] = invoices(env)
    # 10 + renewal 1 = 11, half off = 5.50, VAT 19 % = 1.05 (rounded per line)
    assert inv.subtotal == D("5.50")
    assert inv.tax_total == sum((ln.tax for ln in lines), D(0))
    assert inv.total == inv.subtotal + inv.tax_total
    run(env, date(2026, 3, 1))  # the promotion's last cycle was used
    _inv2, lines2 = invoices(env)[1]
    assert sum((ln.net for ln in lines2), D(0)) == D("11.00")
    assert_books_sound(env)


def test_no_renewal_when_auto_renew_is_off(env: Any) -> None:
    cat = make_plan(env, auto_renew=False)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    s = subscribe(env, cat, c, prov, date(2026, 1, 1))
    summary = run(env, date(2026, 2, 1))
    assert summary.expired == 1 and summary.invoices == 0
    row = sub(env, s)
    assert row.status == "expired" and row.next_billing_date is None
    assert row.cancel_reason and "auto-renew is off" in row.cancel_reason


def test_prepaid_credit_settles_the_new_invoice(env: Any) -> None:
    cat = make_plan(env)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    subscribe(env, cat, c, prov, date(2026, 1, 1))
    env.clock.freeze(datetime_of(date(2026, 1, 20)))
    with service_ctx(env) as ctx:
        payment_record(
            ctx,
            account_id=c,
            amount=D(25),
            method="bank_transfer",
            reference="pre",
            received_on=date(2026, 1, 20),
        )
    run(env, date(2026, 2, 1))
    [(inv, _lines)] = invoices(env)
    assert inv.status == "paid" and inv.paid_amount == D("10.00")
    assert_books_sound(env)


def datetime_of(d: date) -> Any:
    from tests.billrun_support import at

    return at(d)


def test_billing_run_operation_over_soap_and_xmlrpc(env: Any, api: Any) -> None:
    from tests.catalog_support import Caller

    cat = make_plan(env)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    subscribe(env, cat, c, prov, date(2026, 1, 15))
    env.clock.freeze(datetime_of(date(2026, 2, 16)))
    soap = Caller(api, "soap")
    preview = soap("BillingRun", dry_run=True)
    assert preview["invoices"] == 1 and preview["dry_run"] is True
    [inv] = preview["preview"]
    assert inv["account_id"] == c and D(inv["total"]) == D("10.00")
    assert inv["lines"][0]["kind"] == "recurring"
    assert invoices(env) == []
    xml = Caller(api, "xmlrpc")
    done = xml("BillingRun", as_of="2026-02-16")
    assert done["invoices"] == 1 and done["preview"] == []
    assert len(invoices(env)) == 1
    again = soap("BillingRun")
    assert again["invoices"] == 0


def _reseller(env: Any, name: str, level: str) -> int:
    from pba_server.accounts import tree, users

    with service_ctx(env) as ctx:
        acc = tree.account_create(ctx, type="reseller", name=name, partner_level=level)
        users.user_create(
            ctx,
            account_id=acc.id,
            login=name.lower(),
            password="a-long-password-1",
            full_name=name,
            roles=["admin"],
        )
        return acc.id


def test_advanced_reseller_is_billed_wholesale_on_its_own_invoice(env: Any) -> None:
    from pba_server.catalog.plans import plan_create, plan_publish
    from pba_server.catalog.price_lists import wholesale_price_set
    from pba_server.catalog.resources import resource_create
    from pba_server.catalog.templates import service_template_create
    from pba_server.catalog.types import PlanPeriod, ResourceRate, TemplateResource

    prov = _provider(env)
    with service_ctx(env) as ctx:
        disk = resource_create(ctx, name="Disk", unit="GB", kind="allocated").id
        tpl = service_template_create(
            ctx,
            name="Shared",
            service_type="hosting",
            module="manual",
            resources=[TemplateResource(disk, D(10))],
            shared_with_resellers=True,
        ).id
    adv = _reseller(env, "Adv", "advanced")
    with service_ctx(env, "adv") as ctx:
        plan = plan_create(
            ctx,
            template_id=tpl,
            name="Adv plan",
            periods=[PlanPeriod(1, "month", D(0), D("10.00"))],
            rates=[ResourceRate(disk, D(10), overage_price=D("0.50"))],
        )
        plan_publish(ctx, plan_id=plan.id)
        from sqlalchemy import select

        from pba_server.catalog.models import PlanVersion

        vid = int(ctx.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == plan.id)))
    with service_ctx(env) as ctx:
        wholesale_price_set(
            ctx,
            reseller_id=adv,
            currency="USD",
            setup_fee=D(0),
            recurring_fee=D(4),
            plan_id=plan.id,
        )
        wholesale_price_set(
            ctx,
            reseller_id=adv,
            currency="USD",
            setup_fee=D(0),
            recurring_fee=D("0.10"),
            resource_id=disk,
        )
    c1 = customer(env, "RC1", country=None, login="adv")
    c2 = customer(env, "RC2", country=None, login="adv")
    from tests.billrun_support import Catalog

    cat = Catalog(plan.id, vid, disk)
    subscribe(env, cat, c1, adv, date(2026, 1, 5))
    subscribe(env, cat, c2, adv, date(2026, 1, 5))
    subscribe(env, cat, c2, adv, date(2026, 1, 5))
    dry = run(env, date(2026, 2, 5), dry_run=True)
    assert dry.invoices == 3  # the reseller's wholesale invoice too
    assert {d.account_id: d.total for d in dry.drafts}[adv] == D("15.00")
    summary = run(env, date(2026, 2, 5))
    assert summary.invoices == 3
    by_buyer = {inv.account_id: (inv, lines) for inv, lines in invoices(env)}
    assert by_buyer[c1][0].issuer_id == adv and by_buyer[c1][0].total == D("10.00")
    assert by_buyer[c2][0].total == D("20.00")
    whole, lines = by_buyer[adv]
    assert whole.issuer_id == prov
    # 3 subscriptions x (4.00 + 10 GB x 0.10) = 15.00, grouped by description
    assert whole.total == D("15.00")
    assert sorted((ln.quantity, ln.unit_price) for ln in lines) == [
        (D(3), D(4)),
        (D(30), D("0.10")),
    ]
    # the reseller's wholesale invoice raises invoice.issued too, once each
    issued = sorted((e.account_id, e.subject_id) for e in _events(env, "invoice.issued"))
    assert issued == sorted((inv.account_id, str(inv.id)) for inv, _ in invoices(env))
    assert run(env, date(2026, 2, 5)).invoices == 0
    assert len(_events(env, "invoice.issued")) == 3
    assert_books_sound(env)


def test_basic_reseller_customers_pay_its_price_list(env: Any) -> None:
    from pba_server.catalog.price_lists import reseller_price_set

    cat = make_plan(env)
    basic = _reseller(env, "Basic", "basic")
    with service_ctx(env) as ctx:
        reseller_price_set(
            ctx,
            reseller_id=basic,
            plan_id=cat.plan_id,
            period_count=1,
            period_unit="month",
            currency="USD",
            setup_fee=D(0),
            recurring_fee=D("12.00"),
        )
    c = customer(env, "BC", country=None, login="basic")
    subscribe(env, cat, c, basic, date(2026, 1, 5))
    run(env, date(2026, 2, 5))
    [(inv, lines)] = invoices(env)
    assert inv.issuer_id == basic and inv.total == D("12.00")
    assert lines[0].link_type == "subscription" and lines[0].link_id is not None


def test_tax_inclusive_plan_extracts_the_tax(env: Any) -> None:
    cat = make_plan(env, tax_inclusive=True)
    with service_ctx(env) as ctx:
        tax_rule_set(ctx, buyer_country="DE", name="VAT", rate=D(25))
    c = customer(env, "C", country="DE")
    subscribe(env, cat, c, _provider(env), date(2026, 1, 5))
    run(env, date(2026, 2, 5))
    [(inv, _lines)] = invoices(env)
    assert (inv.total, inv.subtotal, inv.tax_total) == (D("10.00"), D("8.00"), D("2.00"))


def test_a_subscription_changed_mid_batch_makes_the_batch_start_again(
    env: Any, monkeypatch: Any
) -> None:
    """The run reads subscriptions without locking them (their customers are
    claimed); a change committed meanwhile (an order moving the billing date,
    a cancellation) rolls the batch back and it is billed afresh."""
    if env.backend != "postgresql":
        import pytest

        pytest.skip("SQLite's write lock serializes the run and the change")
    from sqlalchemy import update

    from pba_server.core.db import UnitOfWork
    from pba_server.subscriptions.models import Subscription

    cat = make_plan(env)
    prov = _provider(env)
    c = customer(env, "C", country=None)
    s1 = subscribe(env, cat, c, prov, date(2026, 1, 15))
    s2 = subscribe(env, cat, c, prov, date(2026, 1, 15))
    from pba_server.billing.run import plan as billing_plan

    original = billing_plan.plan_batch
    calls = []

    def racing(*args: Any, **kw: Any) -> Any:
        plan = original(*args, **kw)
        if not calls:
            with UnitOfWork(env.app.engine) as uow:  # someone cancels s2 meanwhile
                uow.session.execute(
                    update(Subscription)
                    .where(Subscription.id == s2)
                    .values(status="cancelled", next_billing_date=None)
                )
                uow.commit()
        calls.append(1)
        return plan

    monkeypatch.setattr(billing_plan, "plan_batch", racing)
    summary = run(env, date(2026, 2, 20))
    assert len(calls) == 2 and summary.subscriptions == 1
    [(_inv, lines)] = invoices(env)
    assert [ln.link_id for ln in lines] == [str(s1)]
    assert sub(env, s2).status == "cancelled"
    assert_books_sound(env)


def test_copy_text_round_trips_awkward_values(env: Any) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from pba_server.billing.run import copy_text

    rows = [
        {
            "a": "tab\there\\back\nline\rcr",
            "b": None,
            "c": True,
            "d": D("12.3400"),
            "e": date(2026, 2, 28),
            "f": datetime(2026, 2, 28, 1, 2, 3, tzinfo=UTC),
        }
    ]
    assert copy_text(rows, list(rows[0])).count(b"\n") == 1
    if env.backend != "postgresql":
        return
    with env.app.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TEMP TABLE t_copy (a text, b text, c boolean, d numeric(19,4), "
                "e date, f timestamptz)"
            )
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy("COPY t_copy FROM STDIN") as cp:
            cp.write(copy_text(rows, list(rows[0])))
        got = conn.execute(text("SELECT a, b, c, d, e, f FROM t_copy")).one()
        assert tuple(got) == tuple(rows[0].values())


# ---------------------------------------------------------------- invoice.issued


def _events(env: Any, type: str | None = None) -> list[Any]:
    from sqlalchemy import select

    from pba_server.core.db import UnitOfWork
    from pba_server.events.models import Event

    with UnitOfWork(env.app.engine) as uow:
        q = select(Event).order_by(Event.id)
        if type is not None:
            q = q.where(Event.type == type)
        rows = list(uow.session.scalars(q))
        uow.session.expunge_all()
        return rows


def _deliveries(env: Any) -> list[tuple[int, int]]:
    from sqlalchemy import select

    from pba_server.core.db import UnitOfWork
    from pba_server.events.models import Delivery

    with UnitOfWork(env.app.engine) as uow:
        return [
            (r.event_id, r.handler_id)
            for r in uow.session.execute(
                select(Delivery.event_id, Delivery.handler_id).order_by(Delivery.id)
            )
        ]


def _event_page(env: Any, after: int = 0, limit: int = 100) -> list[Any]:
    from pba_server.events import service as events

    out: list[Any] = []
    with service_ctx(env) as ctx:
        while True:
            page = events.event_list(ctx, after=after, limit=limit)
            out.extend(page.items)
            if not page.items:
                return out
            after = page.next_cursor


def test_run_raises_invoice_issued_per_invoice_as_issuing_one_does(env: Any) -> None:
    import json

    from pba_server.core.money import quantize
    from pba_server.notify import handlers

    cat = make_plan(env)
    prov = _provider(env)
    with service_ctx(env) as ctx:
        hook = handlers.event_handler_create(
            ctx, name="ops", event_types=["invoice.*"], action="email", email_to="ops@example.com"
        ).id
        other = handlers.event_handler_create(
            ctx, name="orders", event_types=["order.*"], action="email", email_to="o@example.com"
        ).id
        off = handlers.event_handler_create(
            ctx,
            name="off",
            event_types=["*"],
            action="email",
            email_to="x@example.com",
            enabled=False,
        ).id
    c1 = customer(env, "C1", country=None)
    c2 = customer(env, "C2", country=None)
    with service_ctx(env) as ctx:
        payment_terms_set(ctx, account_id=c1, net_days=14)
        mine = handlers.event_handler_create(
            ctx,
            name="c1's",
            event_types=["invoice.issued"],
            action="email",
            email_to="c1@example.com",
            account_id=c1,
        ).id
    subscribe(env, cat, c1, prov, date(2026, 1, 15))
    subscribe(env, cat, c1, prov, date(2026, 1, 15))
    subscribe(env, cat, c2, prov, date(2026, 1, 15))
    before = _event_page(env)
    assert before  # accounts, handlers: raised before the run
    assert run(env, date(2026, 2, 15), dry_run=True).invoices == 2
    assert _events(env, "invoice.issued") == []
    summary = run(env, date(2026, 2, 15))
    assert summary.invoices == 2
    issued = _events(env, "invoice.issued")
    invs = [inv for inv, _lines in invoices(env)]
    assert [(e.subject_type, e.subject_id) for e in issued] == [
        ("invoice", str(inv.id)) for inv in invs
    ]
    for e, inv in zip(issued, invs, strict=True):
        assert e.account_id == inv.account_id
        assert e.account_path.endswith(f"/{inv.account_id}/")
        assert json.loads(e.payload) == {
            "invoice_id": inv.id,
            "number": inv.number,
            "total": str(quantize(inv.total, inv.currency)),
            "currency": inv.currency,
            "due_date": inv.due_date.isoformat(),
        }
        assert e.occurred_at == inv.issued_at
    # the same payload text as the billing core's own invoice.issued
    with service_ctx(env) as ctx:
        from pba_server.billing.models import Invoice

        one = ctx.session.get(Invoice, invs[0].id)
        assert one is not None
        invoice_event(ctx, "invoice.issued", one)
        ctx.session.flush()
        from sqlalchemy import select

        from pba_server.events.models import Event

        manual = ctx.session.scalars(
            select(Event).where(Event.type == "invoice.issued").order_by(Event.id.desc())
        ).first()
        assert manual is not None and manual.payload == issued[0].payload
        ctx.uow.rollback()
    # one delivery per event and matching enabled handler, above or at the account
    by_event = sorted(_deliveries(env))
    c1_inv = next(e.id for e, inv in zip(issued, invs, strict=True) if inv.account_id == c1)
    c2_inv = next(e.id for e, inv in zip(issued, invs, strict=True) if inv.account_id == c2)
    issued_ids = {e.id for e in issued}
    assert sorted(d for d in by_event if d[0] in issued_ids) == sorted(
        [(c1_inv, hook), (c1_inv, mine), (c2_inv, hook)]
    )
    assert not any(h in (other, off) for _e, h in by_event if _e in issued_ids)
    # a rerun raises nothing more
    assert run(env, date(2026, 2, 15)).invoices == 0
    assert len(_events(env, "invoice.issued")) == 2
    # EventList: the run's events after those before it and before those after
    customer(env, "C3", country=None)
    listed = _event_page(env, limit=3)
    assert [e.seq for e in listed] == list(range(1, len(listed) + 1))
    assert [e.id for e in listed] == sorted(e.id for e in listed)
    assert [e.id for e in listed[: len(before)]] == [e.id for e in before]
    types = [e.type for e in listed[len(before) :]]
    assert types[:2] == ["invoice.issued", "invoice.issued"]
    assert len(types) > 2 and "invoice.issued" not in types[2:]
    assert {e.id for e in listed} == {e.id for e in _events(env)}
    # a cursor taken before the run sees exactly the run's and later events
    assert [e.id for e in _event_page(env, after=before[-1].seq)] == [
        e.id for e in listed[len(before) :]
    ]
