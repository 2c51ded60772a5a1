"""The billing run with real processes on PostgreSQL: two runs at once, and a
run killed with SIGKILL then rerun, both end with exactly the invoices of a
clean run (the dry run's), gapless numbers and sound books."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from pba_server.billing import run as billing_run
from pba_server.billing.models import Invoice, InvoiceLine
from pba_server.billing.ports import RenewalOrders
from pba_server.billing.run_models import BilledItem
from pba_server.core.clock import FixedClock
from pba_server.core.db import UnitOfWork
from pba_server.events.models import Event
from tests.billing_support import assert_books_sound
from tests.catalog_support import service_ctx
from tests.serverproc import ROOT, child_env

SPEC = importlib.util.spec_from_file_location(
    "bench_billing", ROOT / "scripts" / "bench_billing.py"
)
assert SPEC and SPEC.loader
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

Canon = dict[int, list[tuple[str | None, str, Decimal, Decimal, Decimal]]]


def _setup(env: Any, n: int, m: int) -> tuple[str, Canon]:
    if env.backend != "postgresql":
        pytest.skip("concurrency and crash tests run real processes on PostgreSQL")
    with service_ctx(env) as ctx:
        prov = ctx.principal.account_id
    clock = FixedClock(datetime(2026, 2, 28, 2, 0, tzinfo=UTC))
    bench.seed(env.app.engine, clock, n=n, m=m, provider_id=prov, usage_every=3)
    renewals = env.app.runtime.port(RenewalOrders)
    dry = billing_run.run(env.app.engine, clock, as_of=bench.AS_OF, dry_run=True, renewals=renewals)
    assert dry.invoices == m
    expected: Canon = {}
    for d in dry.drafts:
        expected[d.account_id] = [
            (
                str(ln.subscription_id) if ln.subscription_id else None,
                ln.description,
                ln.quantity,
                ln.unit_price,
                ln.total,
            )
            for ln in d.lines
        ]
    return env.app.engine.url.render_as_string(hide_password=False), expected


def _actual(env: Any) -> Canon:
    out: Canon = {}
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(
            select(Invoice.account_id, InvoiceLine)
            .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
            .order_by(Invoice.id, InvoiceLine.position)
        )
        for acc, ln in rows:
            assert acc not in out or out[acc] is not None
            out.setdefault(acc, []).append(
                (ln.link_id, ln.description, ln.quantity, ln.unit_price, ln.total)
            )
        # one invoice per customer, numbers gapless per issuer
        per_acc = uow.session.execute(
            select(Invoice.account_id, func.count()).group_by(Invoice.account_id)
        ).all()
        assert all(c == 1 for _a, c in per_acc), "a customer got two invoices"
        seqs = sorted(uow.session.scalars(select(Invoice.seq)))
        assert seqs == list(range(1, len(seqs) + 1))
        # billed items unique by construction; one recurring item per subscription
        items = uow.session.scalar(
            select(func.count()).select_from(BilledItem).where(BilledItem.kind == "recurring")
        )
        assert items == uow.session.scalar(
            select(func.count())
            .select_from(InvoiceLine)
            .where(InvoiceLine.link_type == "subscription")
        )
        # exactly one invoice.issued per invoice written, none for rolled-back work
        raised = list(
            uow.session.scalars(select(Event.subject_id).where(Event.type == "invoice.issued"))
        )
        invoice_ids = uow.session.scalars(select(Invoice.id))
        assert sorted(raised) == sorted(str(i) for i in invoice_ids)
    return out


def _cli(url: str, *extra: str, quiet: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pba_server.cli",
            "billing-run",
            "--database",
            url,
            "--as-of",
            bench.AS_OF.isoformat(),
            *extra,
        ],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _invoice_count(env: Any) -> int:
    with UnitOfWork(env.app.engine) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Invoice)) or 0)


def test_concurrent_runs_never_duplicate_or_miss(env: Any) -> None:
    url, expected = _setup(env, n=1500, m=300)
    procs = [
        _cli(url, "--batch-size", "7"),
        _cli(url, "--batch-size", "5", "--workers", "2"),
        _cli(url, "--batch-size", "11"),
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=240)
        outs.append(out.decode())
        assert p.returncode == 0, out.decode()
    assert _actual(env) == expected
    billed = [int(o.split("billed ")[1].split(" ")[0]) for o in outs]
    assert sum(billed) == 1500, outs  # every subscription billed by exactly one process
    assert_books_sound(env)
    # and a run after all of them writes nothing
    again = _cli(url)
    out, _ = again.communicate(timeout=120)
    assert "billed 0 subscription(s)" in out.decode()


@pytest.mark.parametrize("kill_after", [1, 40])
def test_kill_9_then_rerun_equals_a_clean_run(env: Any, kill_after: int) -> None:
    url, expected = _setup(env, n=1200, m=240)
    p = _cli(url, "--batch-size", "3", quiet=True)
    deadline = time.monotonic() + 120
    while _invoice_count(env) < kill_after and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    partial = _invoice_count(env)
    assert 0 < partial < 240, partial
    rerun = _cli(url, "--batch-size", "50")
    out, _ = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, out.decode()
    assert _actual(env) == expected
    assert_books_sound(env)


def test_cli_argument_errors(env: Any) -> None:
    if env.backend != "postgresql":
        pytest.skip("the CLI runs against the PostgreSQL test database")
    url = env.app.engine.url.render_as_string(hide_password=False)
    out = subprocess.run(
        [sys.executable, "-m", "pba_server.cli", "billing-run", "--database", url, "--as-of", "x"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "is not a date" in out.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "pba_server.cli", "billing-run", "--database", url, "--json"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and '"invoices": 0' in ok.stdout


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _workers_of(p: subprocess.Popen[bytes], n: int) -> list[int]:
    deadline = time.monotonic() + 60
    while len(kids := _children(p.pid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) >= n, kids
    return kids


def test_kill_9_of_the_parent_takes_its_workers(env: Any) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    url, expected = _setup(env, n=1200, m=240)
    p = _cli(url, "--batch-size", "3", "--workers", "2", quiet=True)
    kids = _workers_of(p, 2)
    deadline = time.monotonic() + 120
    while _invoice_count(env) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)  # the parent only, not its process group
    p.wait(timeout=30)
    deadline = time.monotonic() + 5
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [k for k in kids if _alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, "worker processes outlived their parent"
    rerun = _cli(url, "--batch-size", "50")
    out, _ = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, out.decode()
    assert _actual(env) == expected
    assert_books_sound(env)


def test_kill_9_of_one_worker_the_run_still_finishes(env: Any) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    url, expected = _setup(env, n=1200, m=240)
    p = _cli(url, "--batch-size", "3", "--workers", "2", "--json")
    kids = _workers_of(p, 2)
    deadline = time.monotonic() + 120
    while _invoice_count(env) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(kids[0], signal.SIGKILL)
    out, _ = p.communicate(timeout=240)
    text = out.decode()
    assert p.returncode == 0, text
    assert "Traceback" not in text and "BrokenProcessPool" not in text, text
    assert "worker process" in text and "SIGKILL" in text, text  # the loss is logged
    assert '"workers_lost": 1' in text, text
    assert _invoice_count(env) == 240
    assert _actual(env) == expected  # every due subscription billed exactly once
    assert_books_sound(env)
    again = _cli(url)
    out, _ = again.communicate(timeout=120)
    assert "billed 0 subscription(s)" in out.decode()
