"""The billing run's plan, pure: a batch's due subscriptions (with their
resources, unbilled usage, the customers' regions and the run's shared
:class:`~.data.RunData`) -> draft invoices, taxed, with what they bill
(``billed_items`` rows), the subscriptions' new dates and the resellers'
wholesale charges. Takes values and returns values: no session, no engine,
no clock (``now`` is an input); tested without a database.

It memoizes priced period shapes and month counts in ``RunData`` (results
are the same with or without the memo)."""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pba_server.billing.run.data import (
    Acc,
    PlanData,
    Res,
    ResellerPriceData,
    Rule,
    RunData,
    SubRow,
    Wholesale,
)
from pba_server.billing.run.summary import ZERO, DraftInvoice, DraftLine, RunSummary
from pba_server.billing.tax import REVERSE_CHARGE_NOTE, line_amounts
from pba_server.catalog import pricing
from pba_server.core.money import quantize
from pba_server.subscriptions.periods import add_periods as _add_periods

log = logging.getLogger("pba.billing_run")


@functools.lru_cache(maxsize=65536)
def add_periods(start: date, count: int, unit: str, *, anchor_day: int) -> date:
    """The subscriptions' period calendar, memoized: a run asks the same few
    thousand dates again and again."""
    return _add_periods(start, count, unit, anchor_day=anchor_day)


@dataclass
class BatchInput:
    """What the plan of one batch needs beyond the run's shared data (read by
    :func:`pba_server.billing.run.load.read_batch`)."""

    as_of: date
    now: datetime
    subs: Sequence[SubRow]  # due, by account then id
    resources: dict[int, list[Res]]  # by subscription
    # unbilled usage by subscription: (resource, period start, quantity), sorted
    usage: dict[int, list[tuple[int, date, Decimal]]]
    usage_ids: dict[tuple[int, date], list[int]]  # unbilled record ids by (sub, period start)
    # usage already billed of periods that got late usage: (sub, resource, period start)
    billed_before: dict[tuple[int, int, date], Decimal]
    regions: dict[int, str]  # buyer -> the state of its first contact
    migrate: dict[int, int]  # subscription -> the plan version it renews at


@dataclass
class BatchPlan:
    invoices: dict[tuple[int, int, str], DraftInvoice]  # (issuer, buyer, currency)
    items: list[dict[str, Any]]  # billed_items rows (invoice_id filled in later)
    item_invoice: list[tuple[int, int, str] | None]  # the invoice key of each item
    sub_updates: list[dict[str, Any]]
    usage_ids: list[int]
    wholesale: list[tuple[int, dict[str, Any]]]  # (index into items, charge row)
    summary: RunSummary
    # subscriptions moved to another plan version at this renewal:
    # (subscription id, version id, its resources at the new version's rates)
    migrations: list[tuple[int, int, list[Res]]] = field(default_factory=list)


def _resource_line_desc(name: str, unit: str, over: Decimal, ps: date, pe: date) -> str:
    return f"{name}: {_plain(over)} {unit} over the limit, {ps.isoformat()} to {pe.isoformat()}"


def _plain(v: Decimal) -> str:
    return format(v.normalize(), "f") if v != v.to_integral_value() else str(int(v))


def _split_discount(
    priced: pricing.Priced, currency: str, inclusive: bool
) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Lines of one priced period (the same rules as billing.rules.plan_lines):
    the discount is taken from the charged lines in order; zero lines are left
    out; a line whose quantity x unit price is not its amount is one unit."""
    left = -sum((ln.amount for ln in priced.lines if ln.kind == "discount"), ZERO)
    out: list[tuple[str, Decimal, Decimal, Decimal]] = []
    for ln in priced.lines:
        if ln.kind == "discount" or ln.amount == 0:
            continue
        cut = min(left, ln.amount)
        left -= cut
        qty, price = ln.quantity, ln.unit_price
        exact = (
            qty > 0
            and qty == qty.quantize(Decimal("0.0001"))
            and price == quantize(price, currency)
            and qty * price == ln.amount
        )
        if not exact:
            qty, price = Decimal(1), ln.amount
        out.append((ln.description[:200], qty, price, cut))
    return out


def money_line(
    desc: str,
    qty: Decimal,
    unit_price: Decimal,
    amount: Decimal,
    currency: str,
    ps: date,
    pe: date,
    sub_id: int | None,
    kind: str,
    inclusive: bool = False,
) -> DraftLine:
    exact = (
        qty > 0
        and qty == qty.quantize(Decimal("0.0001"))
        and unit_price == quantize(unit_price, currency)
        and qty * unit_price == amount
    )
    if not exact:
        qty, unit_price = Decimal(1), amount
    return DraftLine(desc[:255], qty, unit_price, ZERO, inclusive, ps, pe, sub_id, kind)


def plan_batch(data: RunData, batch: BatchInput) -> BatchPlan:
    """Plan one batch: every period of each subscription that has fallen due
    by ``batch.as_of`` (its recurring lines, wholesale charges), the overage
    of the periods that ended and late usage of earlier ones; one invoice per
    customer, issuer and currency, taxed. ``data`` must hold the batch's
    accounts and their sellers, its catalog rows, the issuers' tax rules and
    the advanced resellers' wholesale prices."""
    as_of, now, subs = batch.as_of, batch.now, batch.subs
    res_rows, migrate, usage_by_sub = batch.resources, batch.migrate, batch.usage
    unbilled_ids, billed_before, regions = batch.usage_ids, batch.billed_before, batch.regions
    plan = BatchPlan({}, [], [], [], [], [], RunSummary(as_of=as_of, dry_run=False))
    plan.summary.subscriptions += len(subs)

    for s in subs:
        buyer = data.accounts[s.account_id]
        issuer = data.seller_of(buyer)
        if issuer is None:
            log.warning("subscription %s: account %s has no seller; skipped", s.id, buyer.id)
            continue
        # one invoice per customer and issuer (and currency: a plan priced in
        # another currency than the customer's gets its own invoice)
        key = (issuer.id, buyer.id, s.currency)
        inv = plan.invoices.get(key)
        if inv is None:
            inv = plan.invoices[key] = DraftInvoice(issuer.id, buyer.id, s.currency)
        currency = s.currency
        plan_row = data.plans[s.plan_id]
        srs = res_rows.get(s.id, [])
        limits = {r.resource_id: r for r in srs}  # of the period(s) that ended
        # a scheduled migration: the renewed periods are priced at the new
        # version (its fees and rates, the units bought kept)
        priced_as: Any = s
        new_vid = migrate.get(s.id)
        if new_vid is not None:
            priced_as = s._replace(plan_version_id=new_vid)
            srs = [
                Res(rid, inc, limits[rid].bought if rid in limits else ZERO, urp, op)
                for rid, inc, urp, op in data.version_rates[new_vid]
            ]
        pl = data.price_list_of(buyer)
        rp = (
            data.reseller_prices.get(pl.id, {}).get((s.plan_id, s.period_count, s.period_unit))
            if pl is not None
            else None
        )
        # everything that decides the price of a period, cheap to build: the
        # priced lines are computed once per distinct key and run
        base_key = (
            currency,
            priced_as.plan_version_id,
            s.period_count,
            s.period_unit,
            rp.id if rp is not None else None,
            tuple(srs),
        )
        period_key = (s.period_count, s.period_unit)
        months = data.months.get(period_key)
        if months is None:
            months = data.months[period_key] = pricing.months_in(pricing.Period(*period_key))
        discount = data.promotions.get(s.promotion_id) if s.promotion_id else None
        cycles_left = s.promotion_cycles_left
        wholesale = None
        if issuer.type == "reseller" and issuer.partner_level == "advanced":
            wholesale = data.wholesale.get(issuer.id)
            if wholesale is not None and not wholesale[0] and not wholesale[1]:
                wholesale = None

        ps, pe, nbd = s.period_start, s.period_end, s.next_billing_date
        status = s.status
        note = None
        ended_starts: list[tuple[date, date]] = []
        assert nbd is not None
        while nbd is not None and nbd <= as_of:
            ended_starts.append((ps, pe))
            stop = not s.auto_renew or (s.cancel_on is not None and s.cancel_on <= nbd)
            if stop:
                status = "cancelled" if s.cancel_on is not None and s.auto_renew else "expired"
                why = "cancellation scheduled" if status == "cancelled" else "auto-renew is off"
                note = (
                    f"not renewed: {why}; the term ended on {pe.isoformat()} "
                    f"(billing run as of {as_of.isoformat()})"
                )
                nbd = None
                plan.summary.expired += 1
                break
            new_ps = nbd
            new_pe = add_periods(new_ps, s.period_count, s.period_unit, anchor_day=s.anchor_day)
            disc = None
            if discount is not None and (cycles_left is None or cycles_left > 0):
                disc = discount
                if cycles_left is not None:
                    cycles_left -= 1
            pkey = (base_key, s.promotion_id if disc is not None else None)
            got = data.priced.get(pkey)
            if got is None:
                got = data.priced[pkey] = _price_shape(data, priced_as, srs, rp, currency, disc)
            shape, inclusive = got
            lines = [
                DraftLine(
                    f"{d}, {new_ps.isoformat()} to {new_pe.isoformat()}",
                    q,
                    u,
                    c,
                    inclusive,
                    new_ps,
                    new_pe,
                    s.id,
                    "recurring",
                )
                for d, q, u, c in shape
            ]
            inv.lines.extend(lines)
            plan.items.append(_item(s.id, new_ps, new_pe, "recurring", as_of, now))
            plan.item_invoice.append(key if lines else None)
            if wholesale is not None:
                _wholesale(
                    plan,
                    issuer.id,
                    data,
                    s,
                    plan_row,
                    srs,
                    wholesale,
                    new_ps,
                    new_pe,
                    months,
                    as_of,
                    now,
                )
            plan.summary.periods += 1
            ps, pe, nbd = new_ps, new_pe, new_pe
        # overage of each period that ended here, and late usage of periods
        # billed by earlier runs
        ended_set = {a for a, _b in ended_starts}
        late_lines: list[DraftLine] = []
        usage_periods: set[date] = set()
        for rid, ups, qty_new in usage_by_sub.get(s.id, []):
            late = ups < s.period_start
            if not late and ups not in ended_set:
                continue  # a period that has not ended yet
            usage_periods.add(ups)
            lim = limits.get(rid)
            if lim is None:
                continue
            r = lim
            name, unit = data.resources.get(rid, (str(rid), ""))
            limit = r.included + r.bought
            before = billed_before.get((s.id, rid, ups), ZERO)
            rate = pricing.Rate(rid, name, r.included, overage=r.overage_price)
            charge = pricing.overage_charge(
                rate, used=before + qty_new, bought=r.bought, months=months, currency=currency
            ) - pricing.overage_charge(
                rate, used=before, bought=r.bought, months=months, currency=currency
            )
            if charge <= 0:
                continue
            over = max(before + qty_new - limit, ZERO) - max(before - limit, ZERO)
            upe = add_periods(ups, s.period_count, s.period_unit, anchor_day=s.anchor_day)
            desc = ("Late usage: " if late else "Usage: ") + _resource_line_desc(
                name, unit, over, ups, upe
            )
            kind = "late" if late else "overage"
            ln = money_line(
                desc,
                over,
                r.overage_price * months,
                charge,
                currency,
                ups,
                upe,
                s.id,
                kind,
                data.versions.get(s.plan_version_id, False),
            )
            (late_lines if late else inv.lines).append(ln)
        inv.lines.extend(late_lines)
        for ups in sorted(usage_periods):
            plan.usage_ids.extend(unbilled_ids[(s.id, ups)])
        for a, b in ended_starts:
            if a in usage_periods:
                plan.items.append(_item(s.id, a, b, "overage", as_of, now))
                plan.item_invoice.append(key)
        if any(u < s.period_start for u in usage_periods):
            # one late item per subscription and run, keyed by the newest period billed
            plan.items.append(_item(s.id, ps, pe, "late", as_of, now))
            plan.item_invoice.append(key)
        if not ended_starts:
            continue
        if new_vid is not None and ps != s.period_start:  # renewed at least once
            plan.migrations.append((s.id, new_vid, list(srs)))
        plan.sub_updates.append(
            {
                "b_id": s.id,
                "b_period_start": ps,
                "b_period_end": pe,
                "b_next": nbd,
                "b_status": status,
                "b_cycles": cycles_left,
                "b_reason": note if note is not None else s.cancel_reason,
                "b_updated": now,
                "b_old_next": s.next_billing_date,
            }
        )
    # invoice-level: tax, totals
    for ikey, inv in list(plan.invoices.items()):
        buyer_id = ikey[1]
        if not inv.lines:
            del plan.invoices[ikey]
            continue
        tax(data, inv, data.accounts[buyer_id], regions.get(buyer_id, ""))
    return plan


def _price_shape(
    data: RunData,
    s: Any,
    srs: Sequence[Any],
    rp: ResellerPriceData | None,
    currency: str,
    disc: pricing.Discount | None,
) -> tuple[list[tuple[str, Decimal, Decimal, Decimal]], bool]:
    """Price one renewal period of ``s`` (the catalog's price_period) into
    line shapes (description, quantity, unit price, discount) and whether
    its prices include tax."""
    pp = data.periods.get((s.plan_version_id, s.period_count, s.period_unit))
    inclusive = data.versions.get(s.plan_version_id, False)
    fees = pricing.Fees(pp.setup, pp.recurring, pp.renewal) if pp else pricing.Fees(ZERO, ZERO)
    if rp is not None:
        fees = pricing.Fees(rp.setup_fee, rp.recurring_fee, rp.renewal_fee)
        inclusive = rp.tax_inclusive
    rates = [
        pricing.Rate(
            resource_id=r.resource_id,
            name=data.resources.get(r.resource_id, (str(r.resource_id), ""))[0],
            included=r.included,
            unit_recurring=r.unit_recurring_price,
            overage=r.overage_price,
        )
        for r in srs
    ]
    priced = pricing.price_period(
        currency=currency,
        period=pricing.Period(s.period_count, s.period_unit),
        fees=fees,
        rates=rates,
        extra={r.resource_id: r.bought for r in srs},
        discount=disc,
        cycle=2,
    )
    return _split_discount(priced, currency, inclusive), inclusive


def _item(sub_id: int, ps: date, pe: date, kind: str, as_of: date, now: datetime) -> dict[str, Any]:
    return {
        "subscription_id": sub_id,
        "period_start": ps,
        "period_end": pe,
        "kind": kind,
        "billed_on": as_of,
        "created_at": now,
    }


def _wholesale(
    plan: BatchPlan,
    reseller_id: int,
    data: RunData,
    s: SubRow,
    plan_row: PlanData,
    srs: Sequence[Res],
    prices: Wholesale,
    ps: date,
    pe: date,
    months: Decimal,
    as_of: date,
    now: datetime,
) -> None:
    by_plan, by_res = prices
    rows: list[dict[str, Any]] = []
    w = by_plan.get(s.plan_id)
    if w is not None and w.recurring_fee:
        rows.append(
            {
                "description": f"Wholesale: {plan_row.name}, {ps.isoformat()} to {pe.isoformat()}",
                "quantity": Decimal(1),
                "unit_price": quantize(w.recurring_fee * months, w.currency),
                "currency": w.currency,
            }
        )
    for r in srs:
        wr = by_res.get(r.resource_id)
        units = r.included + r.bought
        if wr is None or not wr.recurring_fee or units <= 0:
            continue
        name, unit = data.resources.get(r.resource_id, (str(r.resource_id), ""))
        rows.append(
            {
                "description": f"Wholesale: {name} ({unit}), {ps.isoformat()} to {pe.isoformat()}",
                "quantity": units,
                "unit_price": wr.recurring_fee * months,
                "currency": wr.currency,
            }
        )
    if not rows:
        return
    idx = len(plan.items)
    plan.items.append(_item(s.id, ps, pe, "wholesale", as_of, now))
    plan.item_invoice.append(None)
    for row in rows:
        plan.wholesale.append(
            (
                idx,
                {
                    **row,
                    "reseller_id": reseller_id,
                    "subscription_id": s.id,
                    "period_start": ps,
                    "period_end": pe,
                    "invoice_id": None,
                },
            )
        )


def tax(data: RunData, inv: DraftInvoice, buyer: Acc, region: str) -> None:
    """Tax and amounts of every line, as billing.invoices._price_line does at
    issue (the issuer's rules from ``data.tax_rules``)."""
    rule: Rule | None = None
    if buyer.country:
        rules = [
            r
            for r in data.tax_rules.get(inv.issuer_id, [])
            if r.buyer_country == buyer.country and r.buyer_region in ("", region)
        ]
        rule = max(rules, key=lambda r: r.buyer_region != "", default=None)
    reverse = bool(rule and rule.reverse_charge and buyer.tax_id)
    rate = ZERO if rule is None or reverse else rule.rate
    inv.buyer_tax_id = buyer.tax_id
    inv.reverse_charge = reverse
    if reverse:
        inv.notes = REVERSE_CHARGE_NOTE.format(tax_id=buyer.tax_id)
    for ln in inv.lines:
        a = line_amounts(
            ln.quantity,
            ln.unit_price,
            ln.discount,
            rate,
            inclusive=ln.tax_inclusive,
            currency=inv.currency,
        )
        ln.net, ln.tax, ln.total = a.net, a.tax, a.total
        ln.tax_rule_id = rule.id if rule else None
        ln.tax_name = rule.name if rule else None
        ln.tax_rate = rate
    inv.subtotal = sum((ln.net for ln in inv.lines), ZERO)
    inv.tax_total = sum((ln.tax for ln in inv.lines), ZERO)
    inv.total = sum((ln.total for ln in inv.lines), ZERO)


def wholesale_draft(
    data: RunData,
    reseller_id: int,
    charges: Sequence[tuple[str, Decimal, date, date, Decimal]],
    region: str,
) -> DraftInvoice | None:
    """The reseller's invoice for ``charges`` (description, unit price,
    period start, period end, quantity), grouped, taxed; None if nothing."""
    reseller = data.accounts[reseller_id]
    issuer = data.seller_of(reseller)
    if issuer is None:
        return None
    grouped: dict[tuple[str, Decimal, date, date], Decimal] = defaultdict(lambda: ZERO)
    for desc, price, ps, pe, qty in charges:
        grouped[(desc, price, ps, pe)] += qty
    inv = DraftInvoice(issuer.id, reseller_id, reseller.currency)
    for (desc, price, ps, pe), qty in sorted(grouped.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        amount = quantize(qty * price, reseller.currency)
        if amount > 0:
            inv.lines.append(
                money_line(desc, qty, price, amount, reseller.currency, ps, pe, None, "wholesale")
            )
    if not inv.lines:
        return None
    tax(data, inv, reseller, region)
    return inv
