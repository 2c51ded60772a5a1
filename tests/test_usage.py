"""Usage rules at the service layer (SQLite and PostgreSQL): reports,
duplicates, overage and late usage billed by the run, thresholds, UsageGet,
and the provisioning sync sink."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.core.errors import Forbidden, NotFound, ValidationError
from pba_server.events.models import Event
from pba_server.provisioning.registry import USAGE_SINKS
from pba_server.usage import service as usage
from pba_server.usage.types import UsageRecordInput
from tests.billing_support import assert_books_sound, customer
from tests.billrun_support import at, invoices, make_plan, run, subscribe
from tests.catalog_support import service_ctx

D = Decimal


def _ts(d: date, hour: int = 12) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def _setup(env: Any) -> tuple[Any, int, int]:
    cat = make_plan(env)
    with service_ctx(env) as ctx:
        prov = ctx.principal.account_id
    c = customer(env, "C", country=None)
    s = subscribe(env, cat, c, prov, date(2026, 1, 10))
    return cat, c, s


def _report(env: Any, s: int, res: int, qty: str, when: date, rid: str) -> Any:
    with service_ctx(env) as ctx:
        return usage.usage_report(
            ctx,
            subscription_id=s,
            resource_id=res,
            quantity=D(qty),
            timestamp=_ts(when),
            record_id=rid,
        )


def test_overage_is_billed_and_repeats_are_ignored(env: Any) -> None:
    cat, _c, s = _setup(env)
    env.clock.freeze(at(date(2026, 2, 1)))
    assert _report(env, s, cat.disk, "8", date(2026, 1, 20), "r1").accepted == 1
    assert _report(env, s, cat.disk, "8", date(2026, 1, 20), "r1").duplicates == 1
    with service_ctx(env) as ctx:
        res = usage.usage_report_batch(
            ctx,
            records=[
                UsageRecordInput(s, cat.disk, D("4.5"), _ts(date(2026, 1, 25)), f"b{i}")
                for i in range(2)
            ]
            + [UsageRecordInput(s, cat.disk, D(1), _ts(date(2026, 1, 25)), "r1")],
        )
    assert (res.accepted, res.duplicates) == (2, 1)
    with service_ctx(env) as ctx:
        got = usage.usage_get(ctx, subscription_id=s)
    [r] = got.resources
    assert (r.used, r.included, r.bought, r.billable) == (D(17), D(10), D(0), D(7))
    assert r.overage_amount == D("3.50") and got.billed is False
    run(env, date(2026, 2, 10))
    [(inv, lines)] = invoices(env)
    over = [ln for ln in lines if ln.link_type == "usage"]
    assert len(over) == 1 and over[0].total == D("3.50") and over[0].quantity == D(7)
    assert over[0].period_start == date(2026, 1, 10)
    assert inv.total == D("13.50")
    with service_ctx(env) as ctx:
        assert usage.usage_get(ctx, subscription_id=s, period_start=date(2026, 1, 15)).billed
    assert_books_sound(env)


def test_late_usage_goes_on_the_next_invoice_once(env: Any) -> None:
    cat, _c, s = _setup(env)
    env.clock.freeze(at(date(2026, 2, 1)))
    _report(env, s, cat.disk, "12", date(2026, 1, 20), "a")  # 2 over
    run(env, date(2026, 2, 10))
    env.clock.freeze(at(date(2026, 2, 12)))
    _report(env, s, cat.disk, "3", date(2026, 1, 30), "late")  # arrives after billing
    _report(env, s, cat.disk, "1", date(2026, 2, 11), "now")  # current period, under
    run(env, date(2026, 3, 10))
    inv1, inv2 = invoices(env)
    assert [ln.total for ln in inv1[1] if ln.link_type == "usage"] == [D("1.00")]
    late = [ln for ln in inv2[1] if ln.description.startswith("Late usage")]
    assert len(late) == 1 and late[0].quantity == D(3) and late[0].total == D("1.50")
    assert late[0].period_start == date(2026, 1, 10)
    run(env, date(2026, 4, 10))
    inv3 = invoices(env)[2]
    assert not [ln for ln in inv3[1] if ln.link_type == "usage"]
    assert_books_sound(env)


def test_thresholds_once_per_period(env: Any) -> None:
    cat, c, s = _setup(env)
    env.clock.freeze(at(date(2026, 2, 1)))
    _report(env, s, cat.disk, "7", date(2026, 1, 20), "1")
    _report(env, s, cat.disk, "1", date(2026, 1, 21), "2")  # 8 = 80 %
    _report(env, s, cat.disk, "1", date(2026, 1, 22), "3")
    _report(env, s, cat.disk, "5", date(2026, 1, 23), "4")  # 14 >= 100 %
    _report(env, s, cat.disk, "5", date(2026, 1, 24), "5")
    with service_ctx(env) as ctx:
        evs = ctx.session.scalars(
            select(Event).where(Event.type == "usage.threshold_reached").order_by(Event.id)
        ).all()
        import json

        assert [json.loads(e.payload)["threshold_percent"] for e in evs] == [80, 100]
        assert all(e.account_id == c for e in evs)


def test_report_validation_and_scope(env: Any) -> None:
    cat, c, s = _setup(env)
    env.clock.freeze(at(date(2026, 2, 1)))
    with service_ctx(env) as ctx:
        for kw, field in (
            ({"quantity": D(-1)}, "record.quantity"),
            ({"resource_id": 999999}, "record.resource_id"),
            ({"timestamp": _ts(date(2026, 3, 1))}, "record.timestamp"),
            ({"timestamp": _ts(date(2025, 12, 1))}, "record.timestamp"),
            ({"record_id": " "}, "record.record_id"),
        ):
            args = {
                "subscription_id": s,
                "resource_id": cat.disk,
                "quantity": D(1),
                "timestamp": _ts(date(2026, 1, 20)),
                "record_id": "x",
                **kw,
            }
            with pytest.raises(ValidationError) as e:
                usage.usage_report(ctx, **args)
            assert e.value.field == field
        with pytest.raises(NotFound):
            usage.usage_get(ctx, subscription_id=999999)
    # a customer cannot report its own usage
    from pba_server.accounts import users

    with service_ctx(env) as ctx:
        users.user_create(
            ctx,
            account_id=c,
            login="cust",
            password="a-long-password-1",
            full_name="Cust",
            roles=["admin"],
        )
    with service_ctx(env, "cust") as ctx:
        with pytest.raises(Forbidden):
            usage.usage_report(
                ctx,
                subscription_id=s,
                resource_id=cat.disk,
                quantity=D(1),
                timestamp=_ts(date(2026, 1, 20)),
                record_id="self",
            )
        assert usage.usage_get(ctx, subscription_id=s).resources[0].used == D(0)


def test_sync_usage_sink_records_the_difference(env: Any) -> None:
    _cat, _c, s = _setup(env)
    env.clock.freeze(at(date(2026, 2, 1)))
    assert usage.sync_usage_sink in USAGE_SINKS
    with service_ctx(env) as ctx:
        usage.sync_usage_sink(ctx, s, {"Disk": D(6)}, _ts(date(2026, 1, 20)))
        usage.sync_usage_sink(ctx, s, {"Disk": D(6), "Unknown": D(1)}, _ts(date(2026, 1, 21)))
        usage.sync_usage_sink(ctx, s, {"Disk": D(13)}, _ts(date(2026, 1, 22)))
    with service_ctx(env) as ctx:
        assert usage.usage_get(ctx, subscription_id=s).resources[0].used == D(13)
