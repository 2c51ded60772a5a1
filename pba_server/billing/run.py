"""The billing run: every due subscription's next period, invoiced exactly once.

For every active subscription whose ``next_billing_date`` is on or before the
run's ``as_of`` date, the run bills, for each period that has fallen due (a
subscription several periods behind gets each missed period once):

- the recurring fee of the next period, in advance, priced from the pinned
  plan version (or the basic reseller's price list) by
  :func:`pba_server.catalog.pricing.price_period` (the renewal fee too, where
  the plan has one; extra units bought at their recurring price; a promotion
  while ``promotion_cycles_left`` lasts);
- the overage of the period that just ended (usage above included + bought,
  at the overage price), and, as a *late* line, usage of earlier periods that
  arrived after they were billed;
- tax by the seller's tax rules, as the billing core does.

One invoice per customer and issuer per run groups the customer's due
subscriptions. A subscription whose term ends without auto-renewal (or with a
scheduled cancellation) is not renewed: its last overage is billed and it
becomes ``expired`` (``cancelled``) with a note in ``cancel_reason``.

For the customers of an advanced reseller the run also stages the reseller's
wholesale charges (its parent's wholesale prices); :func:`invoice_wholesale`
invoices them at the end of the run, one invoice per reseller and issuer.

Exactly once: each billed (subscription, period start, kind) is a row of
``billed_items`` (UNIQUE), written in the transaction that writes the invoice
and advances the subscription. Work is claimed by customer: a batch locks a
range of customer accounts with ``FOR NO KEY UPDATE SKIP LOCKED`` (other
processes skip them), then reads their due subscriptions afresh and locks
them; a batch commits or leaves nothing. A run killed at any point leaves
whole batches; the next run continues with what is still due.

Set-based: a batch is a handful of queries whatever its size; rows are
written with multi-row inserts (PostgreSQL: COPY), ids taken from the
sequences in one statement, invoice numbers taken for the whole batch at once
per issuer.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    Engine,
    Integer,
    Table,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account, Contact
from pba_server.billing.models import (
    AccountBalance,
    BillingCounter,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    LedgerTransaction,
    NumberSequence,
    PaymentTerms,
    TaxRule,
)
from pba_server.billing.run_models import BilledItem, WholesaleCharge
from pba_server.billing.tax import REVERSE_CHARGE_NOTE, line_amounts
from pba_server.catalog import pricing
from pba_server.catalog.models import (
    Plan,
    PlanMigration,
    PlanPeriodRow,
    PlanRateRow,
    PlanVersion,
    Promotion,
    ResellerPrice,
    Resource,
    WholesalePrice,
)
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.money import quantize
from pba_server.events import outbox
from pba_server.orders.models import Order, OrderLine
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.subscriptions.periods import add_periods as _add_periods
from pba_server.usage.models import UsageRecord

log = logging.getLogger("pba.billing_run")

ZERO = Decimal(0)
DEFAULT_BATCH = 500
FEED = "invoice_feed"
NUMBER_FORMAT = "INV-{year}-{seq:06d}"
SELLERS = ("provider", "reseller")
RUN_LOGIN = "system:billing-run"
SUB_COLUMNS = (
    "id",
    "account_id",
    "vendor_id",
    "plan_id",
    "plan_version_id",
    "currency",
    "status",
    "period_count",
    "period_unit",
    "anchor_day",
    "period_start",
    "period_end",
    "next_billing_date",
    "auto_renew",
    "promotion_id",
    "promotion_cycles_left",
    "cancel_on",
    "cancel_reason",
)
# invoice_lines.link_type of each kind of line the run writes
LINK_TYPES = {
    "recurring": "subscription",
    "overage": "usage",
    "late": "usage",
    "wholesale": "one_off",
}


@functools.lru_cache(maxsize=65536)
def add_periods(start: date, count: int, unit: str, *, anchor_day: int) -> date:
    """The subscriptions' period calendar, memoized: a run asks the same few
    thousand dates again and again."""
    return _add_periods(start, count, unit, anchor_day=anchor_day)


class BatchConflict(Exception):
    """A subscription changed under the batch (an order, a cancellation): the
    batch is rolled back and done again."""


# ---------------------------------------------------------------- results


@dataclass
class DraftLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    tax_inclusive: bool
    period_start: date | None
    period_end: date | None
    subscription_id: int | None
    kind: str  # recurring | overage | late | wholesale
    net: Decimal = ZERO
    tax: Decimal = ZERO
    total: Decimal = ZERO
    tax_rule_id: int | None = None
    tax_name: str | None = None
    tax_rate: Decimal = ZERO


@dataclass
class DraftInvoice:
    issuer_id: int
    account_id: int
    currency: str
    lines: list[DraftLine] = field(default_factory=list)
    subtotal: Decimal = ZERO
    tax_total: Decimal = ZERO
    total: Decimal = ZERO
    reverse_charge: bool = False
    buyer_tax_id: str | None = None
    notes: str | None = None
    invoice_id: int | None = None
    number: str | None = None
    due_date: date | None = None


@dataclass
class RunSummary:
    as_of: date
    dry_run: bool
    subscriptions: int = 0  # subscriptions billed (renewed or ended)
    periods: int = 0  # periods billed in advance
    expired: int = 0  # not renewed at term end
    invoices: int = 0
    lines: int = 0
    rows_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    totals: dict[str, Decimal] = field(default_factory=dict)  # by currency
    drafts: list[DraftInvoice] = field(default_factory=list)  # dry run only
    staged: list[dict[str, Any]] = field(default_factory=list)  # dry run: wholesale charges

    def add(self, other: RunSummary) -> None:
        for name in ("subscriptions", "periods", "expired", "invoices", "lines", "rows_written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.batches += other.batches
        for c, v in other.totals.items():
            self.totals[c] = self.totals.get(c, ZERO) + v
        self.drafts.extend(other.drafts)
        self.staged.extend(other.staged)

    def line(self) -> str:
        money = ", ".join(f"{v} {c}" for c, v in sorted(self.totals.items())) or "nothing"
        what = "would bill" if self.dry_run else "billed"
        return (
            f"billing run as of {self.as_of}: {what} {self.subscriptions} subscription(s), "
            f"{self.periods} period(s), {self.expired} ended without renewal; "
            f"{self.invoices} invoice(s), {self.lines} line(s), {money}; "
            f"{self.rows_written} row(s) written in {self.seconds:.1f} s"
        )


# ---------------------------------------------------------------- caches (per run)


@dataclass(frozen=True)
class Acc:
    id: int
    type: str
    parent_id: int | None
    path: str
    currency: str
    partner_level: str | None
    tax_id: str | None
    country: str | None
    status: str

    def ancestors(self) -> list[int]:
        return [int(p) for p in self.path.strip("/").split("/") if p][:-1]


class Res(NamedTuple):
    """A subscription's resource as the run reads it."""

    resource_id: int
    included: Decimal
    bought: Decimal
    unit_recurring_price: Decimal
    overage_price: Decimal


@dataclass(frozen=True)
class PeriodPrice:
    setup: Decimal
    recurring: Decimal
    renewal: Decimal


@dataclass(frozen=True)
class PlanData:
    id: int
    owner_id: int
    name: str
    currency: str


class Cache:
    """Catalog and account data read once per run (small, shared by every batch)."""

    def __init__(self) -> None:
        self.accounts: dict[int, Acc] = {}
        self.plans: dict[int, PlanData] = {}
        self.versions: dict[int, bool] = {}  # version id -> tax_inclusive
        self.periods: dict[tuple[int, int, str], PeriodPrice | None] = {}
        self.resources: dict[int, tuple[str, str]] = {}  # id -> (name, unit)
        self.promotions: dict[int, pricing.Discount | None] = {}
        self.reseller_prices: dict[int, dict[tuple[int, int, str], ResellerPrice]] = {}
        self.wholesale: dict[int, tuple[dict[int, WholesalePrice], dict[int, WholesalePrice]]] = {}
        self.tax_rules: dict[int, list[TaxRule]] = {}
        # priced period shapes (description, quantity, unit price, discount) by
        # everything that decides them: most subscriptions share a few
        self.priced: dict[
            tuple[Any, ...], tuple[list[tuple[str, Decimal, Decimal, Decimal]], bool]
        ] = {}
        self.months: dict[tuple[int, str], Decimal] = {}
        # scheduled subscriber migrations (PlanMigrateSubscribers) by plan:
        # from version number -> to version number; version ids <-> numbers;
        # the rates of a version subscriptions migrate to
        self.migrations: dict[int, dict[int, int]] = {}
        self.version_number: dict[int, tuple[int, int]] = {}
        self.version_id: dict[tuple[int, int], int] = {}
        self.version_rates: dict[int, list[tuple[int, Decimal, Decimal, Decimal]]] = {}

    def load_accounts(self, session: Session, ids: Iterable[int]) -> None:
        want = {i for i in ids if i not in self.accounts}
        if not want:
            return
        rows = session.execute(
            select(
                Account.id,
                Account.type,
                Account.parent_id,
                Account.path,
                Account.currency,
                Account.partner_level,
                Account.tax_id,
                Account.country,
                Account.status,
            ).where(Account.id.in_(want))
        )
        for r in rows:
            self.accounts[r.id] = Acc(*r)
        parents = {a for i in want if i in self.accounts for a in self.accounts[i].ancestors()}
        self.load_accounts(session, parents)

    def forget_customers(self) -> None:
        """Keep only sellers: memory must not grow with the number of customers."""
        if len(self.accounts) > 10_000:
            self.accounts = {k: v for k, v in self.accounts.items() if v.type in SELLERS}

    def seller_of(self, acc: Acc) -> Acc | None:
        for aid in reversed(acc.ancestors()):
            a = self.accounts[aid]
            if a.type in SELLERS:
                return a
        return None

    def price_list_of(self, acc: Acc) -> Acc | None:
        if acc.type == "reseller" and acc.partner_level == "basic":
            return acc
        if acc.parent_id is not None:
            p = self.accounts[acc.parent_id]
            if p.type == "reseller" and p.partner_level == "basic":
                return p
        return None

    def load_catalog(self, session: Session, subs: Sequence[Any]) -> None:
        plan_ids = {s.plan_id for s in subs} - set(self.plans)
        if plan_ids:
            for p in session.execute(
                select(Plan.id, Plan.owner_id, Plan.name, Plan.currency).where(
                    Plan.id.in_(plan_ids)
                )
            ):
                self.plans[p.id] = PlanData(*p)
        vids = {s.plan_version_id for s in subs} - set(self.versions)
        if vids:
            for vid, incl in session.execute(
                select(PlanVersion.id, PlanVersion.tax_inclusive).where(PlanVersion.id.in_(vids))
            ):
                self.versions[vid] = bool(incl)
            for r in session.scalars(
                select(PlanPeriodRow).where(PlanPeriodRow.version_id.in_(vids))
            ):
                self.periods[(r.version_id, r.count, r.unit)] = PeriodPrice(
                    r.setup_fee, r.recurring_fee, r.renewal_fee
                )
        promo_ids = {s.promotion_id for s in subs if s.promotion_id} - set(self.promotions)
        if promo_ids:
            for pr in session.scalars(select(Promotion).where(Promotion.id.in_(promo_ids))):
                self.promotions[pr.id] = pricing.Discount(
                    percent=pr.percent,
                    amount=pr.amount,
                    on_setup=pr.on_setup,
                    on_recurring=pr.on_recurring,
                    cycles=None,  # the subscription counts its cycles left
                )
        sellers = {a for a in (self.price_list_of(self.accounts[s.account_id]) for s in subs) if a}
        for rid in {a.id for a in sellers} - set(self.reseller_prices):
            self.reseller_prices[rid] = {
                (p.plan_id, p.period_count, p.period_unit): p
                for p in session.scalars(
                    select(ResellerPrice).where(ResellerPrice.reseller_id == rid)
                )
            }

    def load_resources(self, session: Session, ids: Iterable[int]) -> None:
        want = set(ids) - set(self.resources)
        if want:
            for rid, name, unit in session.execute(
                select(Resource.id, Resource.name, Resource.unit).where(Resource.id.in_(want))
            ):
                self.resources[rid] = (name, unit)

    def rules_of(self, session: Session, issuer_id: int) -> list[TaxRule]:
        if issuer_id not in self.tax_rules:
            self.tax_rules[issuer_id] = list(
                session.scalars(
                    select(TaxRule).where(TaxRule.seller_id == issuer_id, TaxRule.active.is_(True))
                )
            )
        return self.tax_rules[issuer_id]

    def wholesale_of(
        self, session: Session, reseller_id: int
    ) -> tuple[dict[int, WholesalePrice], dict[int, WholesalePrice]]:
        if reseller_id not in self.wholesale:
            by_plan: dict[int, WholesalePrice] = {}
            by_res: dict[int, WholesalePrice] = {}
            for w in session.scalars(
                select(WholesalePrice).where(WholesalePrice.reseller_id == reseller_id)
            ):
                if w.plan_id is not None:
                    by_plan[w.plan_id] = w
                elif w.resource_id is not None:
                    by_res[w.resource_id] = w
            self.wholesale[reseller_id] = (by_plan, by_res)
        return self.wholesale[reseller_id]


# ---------------------------------------------------------------- database helpers


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def alloc_ids(session: Session, table: str, n: int) -> list[int]:
    """``n`` new primary keys of ``table`` in one statement.

    PostgreSQL: from the table's sequence. SQLite: above the current maximum;
    safe because the run's transaction holds SQLite's write lock (BEGIN
    IMMEDIATE) from its start."""
    if n == 0:
        return []
    if _is_pg(session):
        rows = session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": n},
        )
        return [int(r[0]) for r in rows]
    top = session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
    start = int(top) + 1
    return list(range(start, start + n))


def bulk_insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` (dicts with the same keys): COPY on PostgreSQL, a
    multi-row INSERT on SQLite."""
    if not rows:
        return 0
    tbl = table.__table__ if hasattr(table, "__table__") else table
    started = time.perf_counter()
    try:
        return _bulk_insert(session, tbl, rows)
    finally:
        log.debug("%s: %d rows in %.3f s", tbl.name, len(rows), time.perf_counter() - started)


def _bulk_insert(session: Session, tbl: Any, rows: list[dict[str, Any]]) -> int:
    if _is_pg(session):
        cols = list(rows[0])
        raw = session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            sql = f"COPY {tbl.name} ({', '.join(cols)}) FROM STDIN"
            with cur.copy(sql) as cp:
                for i in range(0, len(rows), 5000):
                    cp.write(copy_text(rows[i : i + 5000], cols))
    else:
        for i in range(0, len(rows), 5000):
            session.execute(tbl.insert(), rows[i : i + 5000])
    return len(rows)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if v is True:
        return "t"
    if v is False:
        return "f"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)  # int, Decimal, date


_TRANSLATE = operator.methodcaller("translate", _COPY_ESCAPES)


def _column_text(values: list[Any]) -> Iterable[str]:
    """One column's values as COPY text, with a C-level formatter when the
    column holds one plain type (most do), else value by value."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind in (int, Decimal):
            return map(str, values)
        if kind is date:
            return map(date.isoformat, values)
        if kind is datetime:
            return map(datetime.isoformat, values)
        if kind is str:
            return map(_TRANSLATE, values)
    return map(_copy_value, values)


def copy_text(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> bytes:
    """Rows in COPY's text format, formatted column by column (several times
    cheaper than the driver's per-value dumpers)."""
    columns = [_column_text([r[c] for r in rows]) for c in cols]
    return "".join([line + "\n" for line in map("\t".join, zip(*columns, strict=True))]).encode()


def _in(session: Session, col: Any, ids: Iterable[int]) -> Any:
    """``col IN ids``; on PostgreSQL ``col = ANY(:array)``: one parameter
    instead of thousands (the driver parses each statement's placeholders)."""
    values = list(ids)
    if _is_pg(session):
        return col == any_(bindparam(None, values, type_=ARRAY(Integer)))
    return col.in_(values)


def _upsert(session: Session) -> Any:
    return pg_insert if _is_pg(session) else sqlite_insert


# ---------------------------------------------------------------- pricing one subscription


def _resource_line_desc(name: str, unit: str, over: Decimal, ps: date, pe: date) -> str:
    return f"{name}: {_plain(over)} {unit} over the limit, {ps.isoformat()} to {pe.isoformat()}"


def _plain(v: Decimal) -> str:
    return format(v.normalize(), "f") if v != v.to_integral_value() else str(int(v))


def _split_discount(
    priced: pricing.Priced, currency: str, inclusive: bool
) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Lines of one priced period (the same rules as billing.service.plan_lines):
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


def _money_line(
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


# ---------------------------------------------------------------- one batch


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


class _AtVersion:
    """A subscription row seen at another plan version (for pricing)."""

    def __init__(self, row: Any, version_id: int) -> None:
        self._row = row
        self.plan_version_id = version_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _migration_targets(session: Session, cache: Cache, subs: Sequence[Any]) -> dict[int, int]:
    """Subscription id -> the plan version id it renews at, for subscriptions
    whose plan has a scheduled subscriber migration from their version (the
    chain of requests followed as :func:`pba_server.catalog.service.renewal_version`
    does). A couple of small queries per batch; none when no plan has one."""
    want = {s.plan_id for s in subs} - set(cache.migrations)
    if want:
        for pid in want:
            cache.migrations[pid] = {}
        for pid, frm, to in session.execute(
            select(
                PlanMigration.plan_id, PlanMigration.from_version, PlanMigration.to_version
            ).where(PlanMigration.plan_id.in_(want))
        ):
            cache.migrations[pid][frm] = to
    moving = [s for s in subs if cache.migrations.get(s.plan_id)]
    if not moving:
        return {}
    pids = {s.plan_id for s in moving if s.plan_version_id not in cache.version_number}
    if pids:
        for vid, pid, num in session.execute(
            select(PlanVersion.id, PlanVersion.plan_id, PlanVersion.version).where(
                PlanVersion.plan_id.in_(pids)
            )
        ):
            cache.version_number[vid] = (pid, num)
            cache.version_id[(pid, num)] = vid
    out: dict[int, int] = {}
    for s in moving:
        pid, num = cache.version_number[s.plan_version_id]
        chain, seen = cache.migrations[pid], {num}
        while num in chain and chain[num] not in seen:
            num = chain[num]
            seen.add(num)
        target = cache.version_id.get((pid, num))
        if target is not None and target != s.plan_version_id:
            out[s.id] = target
    new = set(out.values()) - set(cache.version_rates)
    if new:
        for vid in new:
            cache.version_rates[vid] = []
        for r in session.scalars(
            select(PlanRateRow)
            .where(PlanRateRow.version_id.in_(new))
            .order_by(PlanRateRow.version_id, PlanRateRow.resource_id)
        ):
            cache.version_rates[r.version_id].append(
                (r.resource_id, r.included, r.unit_recurring_price, r.overage_price)
            )
        cache.load_catalog(
            session, [_AtVersion(s, out[s.id]) for s in moving if out.get(s.id) in new]
        )
    return out


def _renewal_in_flight(sub_id: Any) -> Any:
    """A manual renewal order (SubscriptionRenew) of the subscription not
    applied yet: it bills the period the run would bill and moves the
    subscription's dates when it completes, so the run leaves the subscription
    alone meanwhile (if the order is rejected, the next run bills it)."""
    return exists().where(
        OrderLine.subscription_id == sub_id,
        OrderLine.kind == "renewal",
        Order.id == OrderLine.order_id,
        Order.status.in_(("running", "waiting")),
        Order.applied.is_(False),
    )


def _plan_batch(
    session: Session,
    cache: Cache,
    account_ids: Sequence[int],
    as_of: date,
    now: datetime,
    *,
    lock: bool,
    summary: RunSummary,
) -> BatchPlan:
    cache.load_accounts(session, account_ids)
    t = Subscription.__table__
    assert isinstance(t, Table)
    q = (
        select(*(t.c[name] for name in SUB_COLUMNS))
        .where(
            _in(session, t.c.account_id, account_ids),
            t.c.status == "active",
            t.c.next_billing_date <= as_of,
            ~_renewal_in_flight(t.c.id),
        )
        .order_by(t.c.account_id, t.c.id)
    )
    # no row locks: the customers are claimed (locked) by this batch, and the
    # update checks that no subscription changed since it was read
    subs: Sequence[Any] = session.execute(q).all()
    plan = BatchPlan({}, [], [], [], [], [], summary)
    if not subs:
        return plan
    sub_ids = [s.id for s in subs]
    cache.load_catalog(session, subs)
    migrate = _migration_targets(session, cache, subs)
    res_rows: dict[int, list[Res]] = defaultdict(list)
    rt = SubscriptionResource.__table__
    assert isinstance(rt, Table)
    for sid, *rest in session.execute(
        select(
            rt.c.subscription_id,
            rt.c.resource_id,
            rt.c.included,
            rt.c.bought,
            rt.c.unit_recurring_price,
            rt.c.overage_price,
        ).where(_in(session, rt.c.subscription_id, sub_ids))
    ).all():
        res_rows[sid].append(Res(*rest))
    cache.load_resources(session, {r.resource_id for rs in res_rows.values() for r in rs})
    # unbilled usage, by record (ids are marked billed; later arrivals stay unbilled)
    unbilled: dict[tuple[int, int, date], Decimal] = defaultdict(lambda: ZERO)
    unbilled_ids: dict[tuple[int, date], list[int]] = defaultdict(list)
    for uid, sid, rid, ps, qty in session.execute(
        select(
            UsageRecord.id,
            UsageRecord.subscription_id,
            UsageRecord.resource_id,
            UsageRecord.period_start,
            UsageRecord.quantity,
        ).where(UsageRecord.billed.is_(False), _in(session, UsageRecord.subscription_id, sub_ids))
    ).all():
        unbilled[(sid, rid, ps)] += qty
        unbilled_ids[(sid, ps)].append(uid)
    usage_by_sub: dict[int, list[tuple[int, date, Decimal]]] = defaultdict(list)
    for (sid, rid, ps), qty in sorted(unbilled.items()):
        usage_by_sub[sid].append((rid, ps, qty))
    by_sub_start = {s.id: s.period_start for s in subs}
    late_pairs = [(sid, ps) for (sid, ps) in unbilled_ids if ps < by_sub_start[sid]]
    billed_before: dict[tuple[int, int, date], Decimal] = defaultdict(lambda: ZERO)
    if late_pairs:
        for sid, rid, ps, qty in session.execute(
            select(
                UsageRecord.subscription_id,
                UsageRecord.resource_id,
                UsageRecord.period_start,
                func.sum(UsageRecord.quantity),
            )
            .where(
                UsageRecord.billed.is_(True),
                tuple_(UsageRecord.subscription_id, UsageRecord.period_start).in_(late_pairs),
            )
            .group_by(
                UsageRecord.subscription_id, UsageRecord.resource_id, UsageRecord.period_start
            )
        ):
            billed_before[(sid, rid, ps)] = Decimal(qty)
    regions: dict[int, str] = {}
    for aid, state in session.execute(
        select(Contact.account_id, Contact.state)
        .where(_in(session, Contact.account_id, account_ids))
        .order_by(Contact.account_id, Contact.id.desc())
    ):
        regions[aid] = (state or "").strip()  # the last wins: the first contact by id
    plan.summary.subscriptions += len(subs)

    for s in subs:
        buyer = cache.accounts[s.account_id]
        issuer = cache.seller_of(buyer)
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
        plan_row = cache.plans[s.plan_id]
        srs = res_rows.get(s.id, [])
        limits = {r.resource_id: r for r in srs}  # of the period(s) that ended
        # a scheduled migration: the renewed periods are priced at the new
        # version (its fees and rates, the units bought kept)
        priced_as: Any = s
        new_vid = migrate.get(s.id)
        if new_vid is not None:
            priced_as = _AtVersion(s, new_vid)
            srs = [
                Res(rid, inc, limits[rid].bought if rid in limits else ZERO, urp, op)
                for rid, inc, urp, op in cache.version_rates[new_vid]
            ]
        pl = cache.price_list_of(buyer)
        rp = (
            cache.reseller_prices.get(pl.id, {}).get((s.plan_id, s.period_count, s.period_unit))
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
        months = cache.months.get(period_key)
        if months is None:
            months = cache.months[period_key] = pricing.months_in(pricing.Period(*period_key))
        discount = cache.promotions.get(s.promotion_id) if s.promotion_id else None
        cycles_left = s.promotion_cycles_left
        wholesale = None
        if issuer.type == "reseller" and issuer.partner_level == "advanced":
            wholesale = cache.wholesale_of(session, issuer.id)
            if not wholesale[0] and not wholesale[1]:
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
            got = cache.priced.get(pkey)
            if got is None:
                got = cache.priced[pkey] = _price_shape(cache, priced_as, srs, rp, currency, disc)
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
                    cache,
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
            name, unit = cache.resources.get(rid, (str(rid), ""))
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
            ln = _money_line(
                desc,
                over,
                r.overage_price * months,
                charge,
                currency,
                ups,
                upe,
                s.id,
                kind,
                cache.versions.get(s.plan_version_id, False),
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
        _tax(session, cache, inv, cache.accounts[buyer_id], regions.get(buyer_id, ""))
    cache.forget_customers()
    return plan


def _price_shape(
    cache: Cache,
    s: Any,
    srs: Sequence[Any],
    rp: ResellerPrice | None,
    currency: str,
    disc: pricing.Discount | None,
) -> tuple[list[tuple[str, Decimal, Decimal, Decimal]], bool]:
    """Price one renewal period of ``s`` (the catalog's price_period) into
    line shapes (description, quantity, unit price, discount) and whether
    its prices include tax."""
    pp = cache.periods.get((s.plan_version_id, s.period_count, s.period_unit))
    inclusive = cache.versions.get(s.plan_version_id, False)
    fees = pricing.Fees(pp.setup, pp.recurring, pp.renewal) if pp else pricing.Fees(ZERO, ZERO)
    if rp is not None:
        fees = pricing.Fees(rp.setup_fee, rp.recurring_fee, rp.renewal_fee)
        inclusive = rp.tax_inclusive
    rates = [
        pricing.Rate(
            resource_id=r.resource_id,
            name=cache.resources.get(r.resource_id, (str(r.resource_id), ""))[0],
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
    cache: Cache,
    s: Subscription,
    plan_row: PlanData,
    srs: Sequence[Res],
    prices: tuple[dict[int, WholesalePrice], dict[int, WholesalePrice]],
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
        name, unit = cache.resources.get(r.resource_id, (str(r.resource_id), ""))
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


def _tax(session: Session, cache: Cache, inv: DraftInvoice, buyer: Acc, region: str) -> None:
    """Tax and amounts of every line, as billing.service._price_line does at issue."""
    rule: TaxRule | None = None
    if buyer.country:
        rules = [
            r
            for r in cache.rules_of(session, inv.issuer_id)
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


# ---------------------------------------------------------------- writing


def _take_numbers(
    session: Session, issuer_ids: Sequence[int], counts: dict[int, int], now: datetime
) -> dict[int, tuple[int, str]]:
    """Lock each issuer's invoice sequence (in issuer order, so concurrent
    batches never deadlock) and take ``counts[issuer]`` numbers at once.
    Returns issuer -> (first seq, format)."""
    ins = _upsert(session)
    out: dict[int, tuple[int, str]] = {}
    for iid in sorted(issuer_ids):
        session.execute(
            ins(NumberSequence)
            .values(issuer_id=iid, kind="invoice", format=NUMBER_FORMAT, last_number=0)
            .on_conflict_do_nothing()
        )
        last, fmt = session.execute(
            select(NumberSequence.last_number, NumberSequence.format)
            .where(NumberSequence.issuer_id == iid, NumberSequence.kind == "invoice")
            .with_for_update()
        ).one()
        session.execute(
            update(NumberSequence)
            .where(NumberSequence.issuer_id == iid, NumberSequence.kind == "invoice")
            .values(last_number=last + counts[iid])
        )
        out[iid] = (last + 1, fmt)
    return out


def _take_feed(session: Session, n: int) -> int:
    ins = _upsert(session)
    session.execute(ins(BillingCounter).values(name=FEED, value=0).on_conflict_do_nothing())
    last = session.execute(
        select(BillingCounter.value).where(BillingCounter.name == FEED).with_for_update()
    ).scalar_one()
    session.execute(
        update(BillingCounter).where(BillingCounter.name == FEED).values(value=last + n)
    )
    return int(last) + 1


def _add_to_balances(session: Session, balances: dict[tuple[int, str], Decimal]) -> int:
    """Add to the cached receivables (upserting, in key order); rows written."""
    if not balances:
        return 0
    ins = _upsert(session)
    stmt = ins(AccountBalance)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "currency"],
        set_={"receivable": AccountBalance.receivable + stmt.excluded.receivable},
    )
    rows = [
        {"account_id": a, "currency": c, "receivable": v, "credit": ZERO}
        for (a, c), v in sorted(balances.items())
    ]
    session.execute(stmt, rows)
    return len(rows)


def write_invoices(
    session: Session,
    drafts: Sequence[DraftInvoice],
    due_days: dict[int, int],
    now: datetime,
) -> int:
    """Issue ``drafts`` (taxed, with totals) in bulk: numbers, invoices, lines,
    ledger transactions and entries, cached balances. Returns rows written."""
    drafts = [d for d in drafts if d.lines]
    if not drafts:
        return 0
    today = now.astimezone(UTC).date()
    counts: dict[int, int] = defaultdict(int)
    for d in drafts:
        counts[d.issuer_id] += 1
    # lock order (core/db.py): the balance rows (sorted) before the number
    # sequences and the feed counter, as InvoiceIssue takes them
    balances: dict[tuple[int, str], Decimal] = defaultdict(lambda: ZERO)
    for d in drafts:
        if d.total > 0:
            balances[(d.account_id, d.currency)] += d.total
    n = _add_to_balances(session, balances)
    firsts = _take_numbers(session, list(counts), counts, now)
    feed = _take_feed(session, len(drafts))
    inv_ids = alloc_ids(session, "invoices", len(drafts))
    posted = [d for d in drafts if d.total > 0]
    tx_ids = alloc_ids(session, "ledger_transactions", len(posted))
    next_seq = {i: firsts[i][0] for i in firsts}
    inv_rows, line_rows, tx_rows, entry_rows = [], [], [], []
    tx_iter = iter(tx_ids)
    for d, iid in zip(drafts, inv_ids, strict=True):
        seq = next_seq[d.issuer_id]
        next_seq[d.issuer_id] += 1
        d.invoice_id = iid
        d.number = firsts[d.issuer_id][1].format(seq=seq, year=now.year)
        d.due_date = today + timedelta(days=due_days.get(d.account_id, 0))
        paid = d.total == 0
        inv_rows.append(
            {
                "id": iid,
                "issuer_id": d.issuer_id,
                "account_id": d.account_id,
                "currency": d.currency,
                "status": "paid" if paid else "issued",
                "number": d.number,
                "seq": seq,
                "feed_position": feed,
                "created_at": now,
                "issued_at": now,
                "due_date": d.due_date,
                "voided_at": None,
                "subtotal": d.subtotal,
                "tax_total": d.tax_total,
                "total": d.total,
                "paid_amount": ZERO,
                "credited_amount": ZERO,
                "reverse_charge": d.reverse_charge,
                "buyer_tax_id": d.buyer_tax_id,
                "notes": d.notes,
            }
        )
        feed += 1
        for pos, ln in enumerate(d.lines, 1):
            line_rows.append(
                {
                    "invoice_id": iid,
                    "position": pos,
                    "description": ln.description[:255],
                    "quantity": ln.quantity,
                    "unit_price": ln.unit_price,
                    "discount": ln.discount,
                    "tax_inclusive": ln.tax_inclusive,
                    "tax_rule_id": ln.tax_rule_id,
                    "explicit_tax_rule": False,
                    "tax_name": ln.tax_name,
                    "tax_rate": ln.tax_rate,
                    "net": ln.net,
                    "tax": ln.tax,
                    "total": ln.total,
                    "credited": ZERO,
                    "period_start": ln.period_start,
                    "period_end": ln.period_end,
                    "link_type": LINK_TYPES[ln.kind],
                    "link_id": str(ln.subscription_id) if ln.subscription_id else None,
                }
            )
        if d.total > 0:
            tid = next(tx_iter)
            tx_rows.append(
                {
                    "id": tid,
                    "at": now,
                    "kind": "invoice",
                    "currency": d.currency,
                    "account_id": d.account_id,
                    "document_type": "invoice",
                    "document_id": iid,
                    "memo": f"invoice {d.number}",
                    "reverses_id": None,
                    "user_login": RUN_LOGIN,
                }
            )
            legs: list[tuple[str, int, Decimal, str | None]] = [
                ("receivable", d.account_id, d.total, None),
                ("revenue", d.issuer_id, -d.subtotal, None),
            ]
            tax_by_rule: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
            for ln in d.lines:
                if ln.tax:
                    tax_by_rule[ln.tax_rule_id] += ln.tax
            legs += [("tax_payable", d.issuer_id, -t, str(r)) for r, t in tax_by_rule.items() if t]
            for acct, owner, amount, ref in legs:
                if amount != 0:
                    entry_rows.append(
                        {
                            "transaction_id": tid,
                            "ledger_account": acct,
                            "owner_id": owner,
                            "ref": ref,
                            "currency": d.currency,
                            "amount": amount,
                        }
                    )
    n += bulk_insert(session, Invoice, inv_rows)
    n += bulk_insert(session, InvoiceLine, line_rows)
    n += bulk_insert(session, LedgerTransaction, tx_rows)
    n += bulk_insert(session, LedgerEntry, entry_rows)
    n += _emit_issued(session, drafts, now)
    return n


def _emit_issued(session: Session, drafts: Sequence[DraftInvoice], now: datetime) -> int:
    """``invoice.issued`` for each invoice just written, with the payload the
    billing core's ``_issue`` gives it, in the same transaction (an invoice
    rolled back raises nothing; one committed raises its event once)."""
    buyers = {d.account_id for d in drafts}
    paths = dict(
        session.execute(
            select(Account.id, Account.path).where(_in(session, Account.id, buyers))
        ).all()
    )
    new = [
        outbox.NewEvent(
            ("invoice", d.invoice_id),
            {
                "invoice_id": d.invoice_id,
                "number": d.number,
                "total": quantize(d.total, d.currency),
                "currency": d.currency,
                "due_date": d.due_date,
            },
            d.account_id,
            str(paths[d.account_id]),
        )
        for d in drafts
    ]
    # the run's COPY writer: a batch's events cost little next to its invoices
    ids = outbox.emit_many(
        session, "invoice.issued", new, now=now, correlation_id=RUN_LOGIN, writer=bulk_insert
    )
    return len(ids)


def _write_batch(session: Session, plan: BatchPlan, due_days: dict[int, int], now: datetime) -> int:
    drafts = list(plan.invoices.values())
    # the subscriptions first: a conflict is found before any other work, the
    # issuer's number sequence is locked for less time, and the foreign-key
    # checks of billed_items find rows this transaction already locked
    n = _update_subscriptions(session, plan.sub_updates)
    n += _migrate_subscriptions(session, plan.migrations)
    n += write_invoices(session, drafts, due_days, now)
    ids = {k: d.invoice_id for k, d in plan.invoices.items()}
    item_ids = alloc_ids(session, "billed_items", len(plan.items))
    rows = []
    for iid, item, key in zip(item_ids, plan.items, plan.item_invoice, strict=True):
        rows.append({"id": iid, **item, "invoice_id": ids.get(key) if key else None})
    n += bulk_insert(session, BilledItem, rows)
    n += bulk_insert(
        session,
        WholesaleCharge,
        [{**row, "billed_item_id": item_ids[idx]} for idx, row in plan.wholesale],
    )
    for i in range(0, len(plan.usage_ids), 5000):
        chunk = plan.usage_ids[i : i + 5000]
        session.execute(
            update(UsageRecord)
            .where(_in(session, UsageRecord.id, chunk))
            .values(billed=True)
            .execution_options(synchronize_session=False)
        )
        n += len(chunk)
    plan.summary.invoices += len(drafts)
    plan.summary.lines += sum(len(d.lines) for d in drafts)
    for d in drafts:
        plan.summary.totals[d.currency] = plan.summary.totals.get(d.currency, ZERO) + d.total
    return n


def _migrate_subscriptions(session: Session, moves: list[tuple[int, int, list[Res]]]) -> int:
    """Pin the migrated subscriptions to their new plan version and its rates
    (rare: a few statements per subscription)."""
    for sid, vid, srs in moves:
        session.execute(
            update(Subscription)
            .where(Subscription.id == sid)
            .values(plan_version_id=vid)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            delete(SubscriptionResource)
            .where(SubscriptionResource.subscription_id == sid)
            .execution_options(synchronize_session=False)
        )
        if srs:
            session.execute(
                insert(SubscriptionResource),
                [{"subscription_id": sid, **r._asdict()} for r in srs],
            )
    return len(moves)


def _update_subscriptions(session: Session, updates: list[dict[str, Any]]) -> int:
    """Advance the billed subscriptions: PostgreSQL copies the new values into
    a temporary table and updates from it in one statement; SQLite runs one
    prepared UPDATE for all rows."""
    if not updates:
        return 0
    if _is_pg(session):
        session.execute(
            text(
                "CREATE TEMP TABLE IF NOT EXISTS billing_run_subs (id integer, "
                "period_start date, period_end date, next_billing_date date, "
                "status varchar(16), promotion_cycles_left integer, cancel_reason text, "
                "updated_at timestamptz, old_next date) ON COMMIT DELETE ROWS"
            )
        )
        cols = (
            "id",
            "period_start",
            "period_end",
            "next",
            "status",
            "cycles",
            "reason",
            "updated",
            "old_next",
        )
        raw = session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur, cur.copy("COPY billing_run_subs FROM STDIN") as cp:  # type: ignore[attr-defined]
            cp.write(copy_text(updates, [f"b_{c}" for c in cols]))
        result = session.execute(
            text(
                "UPDATE subscriptions s SET period_start = v.period_start, "
                "period_end = v.period_end, next_billing_date = v.next_billing_date, "
                "status = v.status, promotion_cycles_left = v.promotion_cycles_left, "
                "cancel_reason = v.cancel_reason, updated_at = v.updated_at "
                "FROM billing_run_subs v WHERE s.id = v.id "
                "AND s.next_billing_date = v.old_next AND s.status = 'active'"
            )
        )
        changed = getattr(result, "rowcount", -1)
        session.execute(text("DELETE FROM billing_run_subs"))
        if changed != len(updates):
            raise BatchConflict(f"{len(updates) - changed} subscription(s) changed meanwhile")
        return len(updates)
    t = Subscription.__table__
    assert isinstance(t, Table)
    session.execute(
        update(t)
        .where(
            t.c.id == bindparam("b_id"),
            t.c.next_billing_date == bindparam("b_old_next"),
            t.c.status == "active",
        )
        .values(
            period_start=bindparam("b_period_start"),
            period_end=bindparam("b_period_end"),
            next_billing_date=bindparam("b_next"),
            status=bindparam("b_status"),
            promotion_cycles_left=bindparam("b_cycles"),
            cancel_reason=bindparam("b_reason"),
            updated_at=bindparam("b_updated"),
        )
        .execution_options(synchronize_session=False),
        updates,
    )
    return len(updates)


def _apply_prepaid_credit(session: Session, clock: Clock, drafts: Sequence[DraftInvoice]) -> None:
    """Settle new invoices of accounts holding prepaid credit (rare: the ORM path)."""
    owed = [d for d in drafts if d.total > 0 and d.invoice_id]
    if not owed:
        return
    keys = [(d.account_id, d.currency) for d in owed]
    with_credit = {
        (a, c)
        for a, c in session.execute(
            select(AccountBalance.account_id, AccountBalance.currency).where(
                tuple_(AccountBalance.account_id, AccountBalance.currency).in_(keys),
                AccountBalance.credit < 0,
            )
        )
    }
    if not with_credit:
        return
    from pba_server.billing import service as billing

    for d in owed:
        if (d.account_id, d.currency) not in with_credit:
            continue
        acc = session.get(Account, d.account_id)
        inv = session.get(Invoice, d.invoice_id, populate_existing=True)
        assert acc is not None and inv is not None
        ctx = _system_ctx(session, clock, acc)
        billing._apply_credit(ctx, acc, [inv])


def _system_ctx(session: Session, clock: Clock, acc: Account) -> Any:
    from pba_server.core.auth import Principal
    from pba_server.core.context import CallContext, process_secrets
    from pba_server.core.secrets import SecretBox

    class _Uow:
        """The batch's session as a unit of work: the batch commits it; the
        event delivery thread finds events without a nudge."""

        def __init__(self, s: Session) -> None:
            self.session = s

        def after_commit(self, cb: Callable[[], None]) -> None:
            pass

    try:
        box = process_secrets()
    except RuntimeError:
        box = SecretBox(SecretBox.generate_key())
    principal = Principal(
        user_id=0,
        login=RUN_LOGIN,
        account_id=acc.id,
        account_path=acc.path,
        roles=frozenset({"admin"}),
        via="system",
    )
    return CallContext(
        uow=_Uow(session),  # type: ignore[arg-type]
        principal=principal,
        clock=clock,
        secrets=box,
        operation="BillingRun",
    )


# ---------------------------------------------------------------- claiming


@contextmanager
def _tx(engine: Engine, session: Session | None) -> Iterator[tuple[Session, Callable[[], None]]]:
    """A transaction per batch, or the caller's session (the BillingRun
    operation: everything in the caller's one transaction)."""
    if session is not None:
        yield session, session.flush
        return
    with UnitOfWork(engine) as uow:
        yield uow.session, uow.commit


def _due_accounts(as_of: date, after: int, limit: int, subtree: str | None, lock: bool) -> Any:
    due = exists().where(
        Subscription.account_id == Account.id,
        Subscription.status == "active",
        Subscription.next_billing_date <= as_of,
    )
    q = select(Account.id).where(Account.id > after, due)
    if subtree is not None:
        q = q.where(Account.path.startswith(subtree, autoescape=True))
    q = q.order_by(Account.id).limit(limit)
    if lock:
        q = q.with_for_update(skip_locked=True, key_share=True)
    return q


def run_batches(
    engine: Engine,
    clock: Clock,
    *,
    as_of: date,
    dry_run: bool = False,
    account_id: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[RunSummary], None] | None = None,
    stop_after: int | None = None,
    session: Session | None = None,
) -> RunSummary:
    """One worker's share of the run: claim due customers by key range and
    bill them, one transaction per batch. Several workers (threads,
    processes, servers) may run this at once."""
    summary = RunSummary(as_of=as_of, dry_run=dry_run)
    cache = Cache()
    subtree = None
    if account_id is not None:
        with _tx(engine, session) as (s, _commit):
            path = s.scalar(select(Account.path).where(Account.id == account_id))
        if path is None:
            from pba_server.core.errors import NotFound

            raise NotFound(f"account {account_id} not found")
        subtree = str(path)
    after = 0
    conflicts = 0
    while True:
        try:
            part = _one_batch(
                engine, clock, session, cache, as_of, after, batch_size, subtree, dry_run
            )
        except BatchConflict:
            conflicts += 1
            if session is not None or conflicts > 5:
                raise
            log.info("batch after account %s: a subscription changed meanwhile; again", after)
            continue
        if part is None:
            break
        after = part[0]
        summary.add(part[1])
        if progress:
            progress(summary)
        if stop_after is not None and summary.batches >= stop_after:
            break
    return summary


def _one_batch(
    engine: Engine,
    clock: Clock,
    session: Session | None,
    cache: Cache,
    as_of: date,
    after: int,
    batch_size: int,
    subtree: str | None,
    dry_run: bool,
) -> tuple[int, RunSummary] | None:
    """Claim and bill the next batch of due customers after account ``after``;
    None when there is none left. Returns (last account id, summary)."""
    with _tx(engine, session) as (s, commit):
        ids = list(s.scalars(_due_accounts(as_of, after, batch_size, subtree, not dry_run)))
        if not ids:
            return None
        now = clock.now()
        t0 = time.perf_counter()
        part = RunSummary(as_of=as_of, dry_run=dry_run, batches=1)
        plan = _plan_batch(s, cache, ids, as_of, now, lock=not dry_run, summary=part)
        due_days = dict(
            s.execute(
                select(PaymentTerms.account_id, PaymentTerms.net_days).where(
                    _in(s, PaymentTerms.account_id, ids)
                )
            ).all()
        )
        if dry_run:
            part.staged = [row for _idx, row in plan.wholesale]
            part.drafts = list(plan.invoices.values())
            part.invoices = len(part.drafts)
            part.lines = sum(len(d.lines) for d in part.drafts)
            for d in part.drafts:
                part.totals[d.currency] = part.totals.get(d.currency, ZERO) + d.total
        else:
            t1 = time.perf_counter()
            part.rows_written = _write_batch(s, plan, due_days, now)
            _apply_prepaid_credit(s, clock, list(plan.invoices.values()))
            t2 = time.perf_counter()
            commit()
            log.debug(
                "batch of %d accounts: plan %.3f s, write %.3f s, commit %.3f s",
                len(ids),
                t1 - t0,
                t2 - t1,
                time.perf_counter() - t2,
            )
    return ids[-1], part


# ---------------------------------------------------------------- wholesale invoices


def _wholesale_draft(
    s: Session, cache: Cache, rid: int, charges: Sequence[tuple[str, Decimal, date, date, Decimal]]
) -> DraftInvoice | None:
    """The reseller's invoice for ``charges`` (description, unit price,
    period start, period end, quantity), grouped, taxed; None if nothing."""
    cache.load_accounts(s, [rid])
    reseller = cache.accounts[rid]
    issuer = cache.seller_of(reseller)
    if issuer is None:
        return None
    grouped: dict[tuple[str, Decimal, date, date], Decimal] = defaultdict(lambda: ZERO)
    for desc, price, ps, pe, qty in charges:
        grouped[(desc, price, ps, pe)] += qty
    inv = DraftInvoice(issuer.id, rid, reseller.currency)
    for (desc, price, ps, pe), qty in sorted(grouped.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        amount = quantize(qty * price, reseller.currency)
        if amount > 0:
            inv.lines.append(
                _money_line(desc, qty, price, amount, reseller.currency, ps, pe, None, "wholesale")
            )
    if not inv.lines:
        return None
    region = s.scalar(
        select(Contact.state).where(Contact.account_id == rid).order_by(Contact.id).limit(1)
    )
    _tax(s, cache, inv, reseller, (region or "").strip())
    return inv


def _count(summary: RunSummary, inv: DraftInvoice, subs: int) -> None:
    summary.subscriptions += subs
    summary.invoices += 1
    summary.lines += len(inv.lines)
    summary.totals[inv.currency] = summary.totals.get(inv.currency, ZERO) + inv.total


def invoice_wholesale(
    engine: Engine,
    clock: Clock,
    *,
    dry_run: bool = False,
    session: Session | None = None,
    subtree: str | None = None,
    exclude_id: int | None = None,
    staged: Sequence[dict[str, Any]] = (),
) -> RunSummary:
    """Invoice every advanced reseller's staged wholesale charges (only those
    in ``subtree``, never ``exclude_id``'s): one invoice per reseller and
    issuer (its seller) per call, lines grouped by description, price and
    period. A dry run shows the invoices, adding the charges a dry run of the
    batches would have staged (``staged``)."""
    summary = RunSummary(as_of=clock.now().date(), dry_run=dry_run)
    cache = Cache()
    pending = exists().where(
        WholesaleCharge.reseller_id == Account.id, WholesaleCharge.invoice_id.is_(None)
    )

    def candidates(after: int) -> Any:
        q = select(Account.id).where(Account.id > after, pending)
        if subtree is not None:
            q = q.where(Account.path.startswith(subtree, autoescape=True))
        if exclude_id is not None:
            q = q.where(Account.id != exclude_id)
        return q.order_by(Account.id)

    def pending_of(s: Session, rid: int) -> list[WholesaleCharge]:
        return list(
            s.scalars(
                select(WholesaleCharge)
                .where(WholesaleCharge.reseller_id == rid, WholesaleCharge.invoice_id.is_(None))
                .order_by(WholesaleCharge.id)
            )
        )

    if dry_run:
        with _tx(engine, session) as (s, _commit):
            extra: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in staged:
                if row["reseller_id"] != exclude_id:
                    extra[row["reseller_id"]].append(row)
            for rid in sorted(set(s.scalars(candidates(0))) | set(extra)):
                charges = [
                    (c.description, c.unit_price, c.period_start, c.period_end, c.quantity)
                    for c in pending_of(s, rid)
                ] + [
                    (
                        r["description"],
                        r["unit_price"],
                        r["period_start"],
                        r["period_end"],
                        r["quantity"],
                    )
                    for r in extra.get(rid, [])
                ]
                inv = _wholesale_draft(s, cache, rid, charges)
                if inv is not None:
                    _count(summary, inv, 0)
                    summary.drafts.append(inv)
        return summary
    after = 0
    while True:
        with _tx(engine, session) as (s, commit):
            q = candidates(after).limit(1).with_for_update(skip_locked=True, key_share=True)
            rid = s.scalar(q)
            if rid is None:
                break
            after = rid
            rows = pending_of(s, rid)
            inv = _wholesale_draft(
                s,
                cache,
                rid,
                [
                    (c.description, c.unit_price, c.period_start, c.period_end, c.quantity)
                    for c in rows
                ],
            )
            if inv is None:
                continue
            _count(summary, inv, len({c.subscription_id for c in rows}))
            terms = s.get(PaymentTerms, rid)
            summary.rows_written += write_invoices(
                s, [inv], {rid: terms.net_days if terms else 0}, clock.now()
            )
            ids = [c.id for c in rows]
            s.execute(
                update(WholesaleCharge)
                .where(WholesaleCharge.id.in_(ids))
                .values(invoice_id=inv.invoice_id)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(BilledItem)
                .where(BilledItem.id.in_({c.billed_item_id for c in rows}))
                .values(invoice_id=inv.invoice_id)
                .execution_options(synchronize_session=False)
            )
            summary.rows_written += len(ids)
            _apply_prepaid_credit(s, clock, [inv])
            commit()
    return summary


# ---------------------------------------------------------------- the whole run


def run(
    engine: Engine,
    clock: Clock,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    account_id: int | None = None,
    workers: int = 1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[RunSummary], None] | None = None,
    session: Session | None = None,
    exclude_wholesale: int | None = None,
) -> RunSummary:
    """The billing run as of ``as_of`` (default: today, UTC): the due
    subscriptions in batches (``workers`` threads claiming batches side by
    side), then the resellers' wholesale invoices."""
    started = time.monotonic()
    day = as_of or clock.now().astimezone(UTC).date()
    total = RunSummary(as_of=day, dry_run=dry_run)
    if workers <= 1 or dry_run or session is not None:
        total.add(
            run_batches(
                engine,
                clock,
                as_of=day,
                dry_run=dry_run,
                account_id=account_id,
                batch_size=batch_size,
                progress=progress,
                session=session,
            )
        )
    else:
        total.add(_run_processes(engine, clock, day, account_id, workers, batch_size, progress))
    subtree = None
    if account_id is not None:
        with _tx(engine, session) as (s, _commit):
            subtree = s.scalar(select(Account.path).where(Account.id == account_id))
    wholesale = invoice_wholesale(
        engine,
        clock,
        dry_run=dry_run,
        session=session,
        subtree=subtree,
        exclude_id=exclude_wholesale,
        staged=total.staged,
    )
    total.invoices += wholesale.invoices
    total.lines += wholesale.lines
    total.rows_written += wholesale.rows_written
    for c, v in wholesale.totals.items():
        total.totals[c] = total.totals.get(c, ZERO) + v
    total.drafts.extend(wholesale.drafts)
    total.seconds = time.monotonic() - started
    return total


_fork_clock: list[Clock] = []  # the parent's clock, inherited by forked workers


def _worker(url: str, as_of: date, account_id: int | None, batch: int) -> RunSummary:
    from pba_server.core.db import make_engine

    clock = _fork_clock[0]
    engine = make_engine(url, pool_size=2)
    try:
        return run_batches(engine, clock, as_of=as_of, account_id=account_id, batch_size=batch)
    finally:
        engine.dispose()


def due_count(engine: Engine, as_of: date, account_id: int | None = None) -> int:
    """How many subscriptions are due by ``as_of`` (for progress)."""
    with UnitOfWork(engine) as uow:
        q = (
            select(func.count())
            .select_from(Subscription)
            .where(Subscription.status == "active", Subscription.next_billing_date <= as_of)
        )
        if account_id is not None:
            path = uow.session.scalar(select(Account.path).where(Account.id == account_id))
            sub_acc = select(Account.id).where(Account.path.startswith(str(path), autoescape=True))
            q = q.where(Subscription.account_id.in_(sub_acc))
        return int(uow.session.scalar(q) or 0)


def _run_processes(
    engine: Engine,
    clock: Clock,
    as_of: date,
    account_id: int | None,
    workers: int,
    batch: int,
    progress: Callable[[RunSummary], None] | None,
) -> RunSummary:
    """``workers`` processes claiming batches side by side (SKIP LOCKED)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    url = engine.url.render_as_string(hide_password=False)
    start_due = due_count(engine, as_of, account_id)
    engine.dispose()  # no pooled connection crosses the fork
    overall = RunSummary(as_of=as_of, dry_run=False)
    ctx = multiprocessing.get_context("fork")
    _fork_clock[:] = [clock]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = {pool.submit(_worker, url, as_of, account_id, batch) for _ in range(workers)}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                overall.add(f.result())
            if progress:
                shown = RunSummary(as_of=as_of, dry_run=False)
                shown.add(overall)
                if pending:
                    shown.subscriptions = max(
                        start_due - due_count(engine, as_of, account_id), overall.subscriptions
                    )
                progress(shown)
    return overall


JOB_NAME = "billing-run"


def job(uow: UnitOfWork, clock: Clock) -> str:
    """The scheduler's ``billing-run`` job: today's run (it commits per batch)."""
    engine = uow.session.get_bind()
    assert isinstance(engine, Engine)
    return run(engine, clock, workers=_settings["workers"]).line()


_settings: dict[str, int] = {"workers": 1}


def configure(interval_hours: int, workers: int) -> None:
    """Apply the config file's schedule (``billing_run_interval_hours``,
    default 24: daily) and worker count to the scheduler's job."""
    import dataclasses

    from pba_server.scheduler.jobs import JOBS

    _settings["workers"] = max(1, workers)
    if JOB_NAME in JOBS and interval_hours > 0:
        JOBS[JOB_NAME] = dataclasses.replace(
            JOBS[JOB_NAME], interval=timedelta(hours=interval_hours)
        )


def summary_json(s: RunSummary) -> str:
    return json.dumps(
        {
            "as_of": s.as_of.isoformat(),
            "dry_run": s.dry_run,
            "subscriptions": s.subscriptions,
            "periods": s.periods,
            "expired": s.expired,
            "invoices": s.invoices,
            "lines": s.lines,
            "rows_written": s.rows_written,
            "seconds": round(s.seconds, 3),
            "totals": {c: str(v) for c, v in s.totals.items()},
        },
        sort_keys=True,
    )
