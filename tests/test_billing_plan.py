"""The billing run's pure plan (billing/run/plan.py), without a database:
due subscriptions -> draft invoices, from values built by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pba_server.billing.run.data import Acc, PeriodPrice, PlanData, Res, Rule, RunData, SubRow
from pba_server.billing.run.plan import BatchInput, add_periods, plan_batch

D = Decimal

PROVIDER, CUSTOMER, PLAN, VERSION, DISK = 1, 2, 10, 11, 20
NOW = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


def _data(*, country: str | None = None, rules: list[Rule] | None = None) -> RunData:
    data = RunData()
    data.accounts[PROVIDER] = Acc(
        PROVIDER, "provider", None, "/1/", "USD", None, None, None, "active"
    )
    data.accounts[CUSTOMER] = Acc(
        CUSTOMER, "customer_business", PROVIDER, "/1/2/", "USD", None, None, country, "active"
    )
    data.plans[PLAN] = PlanData(PLAN, PROVIDER, "Hosting", "USD")
    data.versions[VERSION] = False
    data.periods[(VERSION, 1, "month")] = PeriodPrice(D(0), D("10.00"), D(0))
    data.resources[DISK] = ("Disk", "GB")
    data.tax_rules[PROVIDER] = rules or []
    return data


def _sub(start: date, *, auto_renew: bool = True, sid: int = 100) -> SubRow:
    end = add_periods(start, 1, "month", anchor_day=start.day)
    return SubRow(
        sid, CUSTOMER, PROVIDER, PLAN, VERSION, "USD", "active", 1, "month", start.day,
        start, end, end, auto_renew, None, None, None, None,
    )  # fmt: skip


def _batch(subs: list[SubRow], as_of: date, usage: dict | None = None) -> BatchInput:
    res = {s.id: [Res(DISK, D(10), D(0), D(0), D("0.50"))] for s in subs}
    usage = usage or {}
    ids = {(sid, ps): [1] for sid, rows in usage.items() for _r, ps, _q in rows}
    return BatchInput(as_of, NOW, subs, res, usage, ids, {}, {}, {})


def test_one_due_period_is_one_recurring_line() -> None:
    s = _sub(date(2026, 1, 15))
    plan = plan_batch(_data(), _batch([s], date(2026, 2, 15)))
    [inv] = plan.invoices.values()
    assert (inv.issuer_id, inv.account_id, inv.currency) == (PROVIDER, CUSTOMER, "USD")
    assert [(ln.kind, ln.total) for ln in inv.lines] == [("recurring", D("10.00"))]
    assert inv.lines[0].period_start == date(2026, 2, 15)
    assert inv.total == D("10.00") and inv.tax_total == 0
    assert [(i["kind"], i["period_start"]) for i in plan.items] == [
        ("recurring", date(2026, 2, 15))
    ]
    [upd] = plan.sub_updates
    assert upd["b_next"] == date(2026, 3, 15) and upd["b_status"] == "active"
    assert (plan.summary.subscriptions, plan.summary.periods) == (1, 1)


def test_nothing_due_plans_nothing() -> None:
    plan = plan_batch(_data(), _batch([], date(2026, 2, 15)))
    assert not plan.invoices and not plan.items and not plan.sub_updates


def test_overage_of_the_period_that_ended_and_tax() -> None:
    s = _sub(date(2026, 1, 15))
    rule = Rule(7, "VAT", "DE", "", D("20"), False)
    usage = {s.id: [(DISK, s.period_start, D(15))]}  # 5 GB over 10 included, 0.50 / GB
    plan = plan_batch(_data(country="DE", rules=[rule]), _batch([s], date(2026, 2, 15), usage))
    [inv] = plan.invoices.values()
    assert [(ln.kind, ln.net) for ln in inv.lines] == [
        ("recurring", D("10.00")),
        ("overage", D("2.50")),
    ]
    assert inv.tax_total == D("2.50") and inv.total == D("15.00")
    assert all(ln.tax_rule_id == 7 for ln in inv.lines)
    assert plan.usage_ids == [1]
    assert sorted(i["kind"] for i in plan.items) == ["overage", "recurring"]


def test_a_customer_without_a_seller_is_skipped() -> None:
    data = _data()
    data.accounts[CUSTOMER] = Acc(
        CUSTOMER, "customer_business", None, "/2/", "USD", None, None, None, "active"
    )
    plan = plan_batch(data, _batch([_sub(date(2026, 1, 15))], date(2026, 2, 15)))
    assert not plan.invoices and not plan.sub_updates


@settings(max_examples=60, deadline=None)
@given(
    day=st.integers(1, 28),
    behind=st.integers(0, 8),
    auto_renew=st.booleans(),
    subs=st.integers(1, 4),
)
def test_each_due_period_billed_once_and_the_dates_move_past_as_of(
    day: int, behind: int, auto_renew: bool, subs: int
) -> None:
    start = date(2025, 12, day)
    rows = [_sub(start, auto_renew=auto_renew, sid=100 + i) for i in range(subs)]
    # as_of: the day the subscription falls due, plus ``behind`` more periods
    as_of = add_periods(rows[0].next_billing_date, behind, "month", anchor_day=day)
    plan = plan_batch(_data(), _batch(rows, as_of))
    periods = behind + 1 if auto_renew else 0
    keys = [(i["subscription_id"], i["period_start"], i["kind"]) for i in plan.items]
    assert len(keys) == len(set(keys))  # billed_items UNIQUE holds by construction
    assert sum(k[2] == "recurring" for k in keys) == periods * subs
    assert plan.summary.periods == periods * subs
    assert plan.summary.expired == (0 if auto_renew else subs)
    assert len(plan.sub_updates) == subs
    for upd in plan.sub_updates:
        if auto_renew:
            assert upd["b_status"] == "active" and upd["b_next"] > as_of
        else:
            assert upd["b_status"] == "expired" and upd["b_next"] is None
    total = sum((inv.total for inv in plan.invoices.values()), D(0))
    assert total == D("10.00") * periods * subs
    assert len(plan.invoices) == (1 if periods else 0)  # one invoice per customer and issuer
