"""Benchmark of the billing run on PostgreSQL.

Creates a fresh database, seeds N active monthly subscriptions over M
customers (half of the subscriptions with usage records, some above their
included amount) with COPY, runs the billing run and prints subscriptions/s,
invoices/s, rows written/s, wall time and peak RSS; then runs it again at the
same date (which must write nothing) and prints that too.

    PYTHONPATH=$PWD python scripts/bench_billing.py            # N=100,000, M=20,000
    PYTHONPATH=$PWD python scripts/bench_billing.py --n 1000000 --m 200000 --workers 2

The admin connection defaults to PBA_TEST_POSTGRES_URL or the local server's
``postgres`` database; the benchmark database is dropped at the end unless
--keep. ``seed`` is also used by the billing run's process tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, select, text

from pba_server import bootstrap, migrate
from pba_server.accounts import setup
from pba_server.accounts.models import Account
from pba_server.billing import run as billing_run
from pba_server.billing.ports import RenewalOrders
from pba_server.catalog.models import PlanVersion
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.resources import resource_create
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import PlanPeriod, ResourceRate, TemplateResource
from pba_server.config import Settings
from pba_server.core.clock import FixedClock
from pba_server.core.context import system_context
from pba_server.core.db import UnitOfWork, make_engine
from pba_server.core.runtime import Runtime
from pba_server.core.secrets import SecretBox
from pba_server.subscriptions.models import Subscription, SubscriptionResource
from pba_server.usage.models import UsageRecord

ADMIN_URL = os.environ.get(
    "PBA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START = date(2026, 1, 1)
AS_OF = date(2026, 2, 28)
CHUNK = 50_000


def _catalog(engine: Engine, clock: FixedClock, provider_id: int) -> tuple[int, int, int]:
    """A monthly plan (10.00, 10 GB included, 0.50 / GB over) -> (plan, version, resource)."""
    with UnitOfWork(engine) as uow:
        path = uow.session.scalar(select(Account.path).where(Account.id == provider_id))
        ctx = system_context(
            uow,
            clock,
            account_id=provider_id,
            account_path=str(path),
            operation="bench",
            secrets=SecretBox(SecretBox.generate_key()),
        )
        r = resource_create(ctx, name="Disk", unit="GB", kind="allocated")
        t = service_template_create(
            ctx,
            name="Bench hosting",
            service_type="hosting",
            module="manual",
            resources=[TemplateResource(r.id, Decimal(10))],
        )
        p = plan_create(
            ctx,
            template_id=t.id,
            name="Bench plan",
            periods=[PlanPeriod(1, "month", Decimal(0), Decimal("10.00"))],
            rates=[ResourceRate(r.id, Decimal(10), overage_price=Decimal("0.50"))],
        )
        plan_publish(ctx, plan_id=p.id)
        vid = uow.session.scalar(select(PlanVersion.id).where(PlanVersion.plan_id == p.id))
        uow.commit()
        return p.id, int(vid), r.id


def seed(
    engine: Engine,
    clock: FixedClock,
    *,
    n: int,
    m: int,
    provider_id: int,
    usage_every: int = 2,
    log: bool = False,
) -> int:
    """Seed ``m`` customers and ``n`` monthly subscriptions due by AS_OF (one
    usage record for every ``usage_every``-th). Returns rows written."""
    plan_id, version_id, disk = _catalog(engine, clock, provider_id)
    now = clock.now()
    rows = 0
    with UnitOfWork(engine) as uow:
        s = uow.session
        ppath = str(s.scalar(select(Account.path).where(Account.id == provider_id)))
        currency = str(s.scalar(select(Account.currency).where(Account.id == provider_id)))
        acc_ids = billing_run.alloc_ids(s, "accounts", m)
        accounts = [
            {
                "id": a,
                "number": f"B{a}",
                "type": "customer_business",
                "parent_id": provider_id,
                "path": f"{ppath}{a}/",
                "name": f"Bench customer {i}",
                "status": "active",
                "currency": currency,
                "credit_limit": Decimal(0),
                "partner_level": None,
                "tax_id": None,
                "country": None,
                "created_at": now,
                "updated_at": now,
            }
            for i, a in enumerate(acc_ids)
        ]
        rows += billing_run.bulk_insert(s, Account, accounts)
        uow.commit()
    done = 0
    while done < n:
        k = min(CHUNK, n - done)
        with UnitOfWork(engine) as uow:
            s = uow.session
            ids = billing_run.alloc_ids(s, "subscriptions", k)
            subs, res, usage = [], [], []
            for j, sid in enumerate(ids):
                i = done + j
                day = 1 + i % 28
                start = START.replace(day=day)
                end = start.replace(month=2)
                subs.append(
                    {
                        "id": sid,
                        "account_id": acc_ids[i % m],
                        "vendor_id": provider_id,
                        "plan_id": plan_id,
                        "plan_version_id": version_id,
                        "name": "Bench plan",
                        "currency": currency,
                        "status": "active",
                        "period_count": 1,
                        "period_unit": "month",
                        "anchor_day": day,
                        "started_on": start,
                        "period_start": start,
                        "period_end": end,
                        "next_billing_date": end,
                        "trial_ends_on": None,
                        "auto_renew": True,
                        "promotion_id": None,
                        "promotion_cycles_left": None,
                        "parameters": "{}",
                        "cancel_on": None,
                        "cancel_reason": None,
                        "suspended_reason": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                res.append(
                    {
                        "subscription_id": sid,
                        "resource_id": disk,
                        "included": Decimal(10),
                        "bought": Decimal(0),
                        "unit_recurring_price": Decimal(0),
                        "overage_price": Decimal("0.50"),
                    }
                )
                if usage_every and i % usage_every == 0:
                    usage.append(
                        {
                            "subscription_id": sid,
                            "resource_id": disk,
                            "record_id": f"u{i}",
                            "quantity": Decimal(5 + i % 11),  # 5..15 GB: some over 10
                            "at": datetime(2026, 1, day, 12, tzinfo=UTC) + timedelta(days=10),
                            "period_start": start,
                            "received_at": now,
                            "billed": False,
                        }
                    )
            rows += billing_run.bulk_insert(s, Subscription, subs)
            rows += billing_run.bulk_insert(s, SubscriptionResource, res)
            rows += billing_run.bulk_insert(s, UsageRecord, usage)
            uow.commit()
        done += k
        if log:
            print(f"\rseeded {done}/{n} subscriptions", end="", file=sys.stderr, flush=True)
    if log:
        print(file=sys.stderr)
    with engine.connect() as c:
        c.execute(text("ANALYZE"))
        c.commit()
    return rows


_seed_rss = [0]
_pg_seen: dict[int, float] = {}


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - _seed_cpu[0]


_seed_cpu = [0.0]


def _pg_cpu(engine: Engine, dbname: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends of the benchmark
    database (from /proc; backends that ended keep their last reading)."""
    with engine.connect() as c:
        pids = [
            int(p)
            for (p,) in c.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": dbname}
            )
        ]
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            _pg_seen[pid] = (int(parts[11]) + int(parts[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return sum(_pg_seen.values())


def _rss_mb() -> float:
    """Peak RSS of this process and of the run's worker processes (not the seeder)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids if kids > _seed_rss[0] else 0) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="subscriptions")
    ap.add_argument("--m", type=int, default=None, help="customers (default: n / 5)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=billing_run.DEFAULT_BATCH)
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument("--seed-into", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--provider", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    m = args.m or max(1, args.n // 5)
    if args.seed_into:  # the child that seeds, so the parent's peak RSS is the run's
        engine = make_engine(args.seed_into)
        prov = int(args.provider)
        clock = FixedClock(datetime(2026, 2, 28, 2, 0, tzinfo=UTC))
        seed(engine, clock, n=args.n, m=m, provider_id=prov, log=True)
        engine.dispose()
        return 0
    import psycopg

    name = f"pba_bench_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    engine = make_engine(url, pool_size=max(2, args.workers))
    try:
        migrate.upgrade(engine)
        clock = FixedClock(datetime(2026, 2, 28, 2, 0, tzinfo=UTC))
        box = SecretBox(SecretBox.generate_key())
        prov = setup.initialize(engine, clock, box, admin_password="bench-password-1").provider_id
        runtime = Runtime(settings=Settings(), clock=clock, secrets=box)
        bootstrap.wire_ports(runtime)
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--n",
                str(args.n),
                "--m",
                str(m),
                "--seed-into",
                url,
                "--provider",
                str(prov),
            ],
            check=True,
        )
        _seed_rss[0] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        _seed_cpu[0] = kids.ru_utime + kids.ru_stime
        print(
            f"seeded {args.n} subscriptions, {m} customers in {time.monotonic() - t0:.1f} s "
            f"(in a child process: the peak RSS below is the billing run's)"
        )
        for label in ("first run", "second run (same date)"):
            pg0 = _pg_cpu(engine, name)
            cpu0 = _own_cpu()
            t0 = time.monotonic()
            s = billing_run.run(
                engine,
                clock,
                as_of=AS_OF,
                workers=args.workers,
                batch_size=args.batch_size,
                secrets=box,
                renewals=runtime.port(RenewalOrders),
            )
            wall = time.monotonic() - t0
            client = _own_cpu() - cpu0
            pg = _pg_cpu(engine, name) - pg0
            print(
                f"  CPU: client {client:.1f} s, PostgreSQL backends {pg:.1f} s (load average "
                f"{os.getloadavg()[0]:.1f}: the machine is shared)"
            )
            print(
                f"{label}: {s.subscriptions} subscriptions, {s.invoices} invoices, "
                f"{s.lines} lines, {s.rows_written} rows written in {wall:.2f} s: "
                f"{s.subscriptions / wall:,.0f} subscriptions/s, {s.invoices / wall:,.0f} "
                f"invoices/s, {s.rows_written / wall:,.0f} rows/s; peak RSS {_rss_mb():.0f} MB"
            )
    finally:
        engine.dispose()
        if not args.keep:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
