"""Transient database errors: a deadlock or serialization failure retries the
whole unit of work (with after-commit work run once, for the attempt that
committed); one that keeps failing is answered ``Server.Busy``. Connection
limits: the budget check against PostgreSQL's max_connections, idle release."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import zeep.exceptions
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from pba_server.accounts import tree
from pba_server.billing.models import PaymentTerms
from pba_server.core import db
from pba_server.core.db import TransientFailure, UnitOfWork, run_in_transaction
from pba_server.core.errors import Busy
from tests.catalog_support import Caller, service_ctx
from tests.prov_support import Script, fake_module, instance, plan, provision, run, subscribe

__all__ = ["fake_module"]

OP = "PaymentTermsSet"
LOCK = text("SELECT id FROM accounts WHERE id = :a FOR UPDATE")


def _customer(call: Caller) -> int:
    return int(call("AccountCreate", type="customer_business", name="Acme", country="DE")["id"])


@pytest.fixture
def patched(env: Any) -> Iterator[Any]:
    """Replace the operation's function for the test (the dispatcher and both
    adapters look it up in the one table)."""
    ops = env.app.dispatcher.operations
    original = ops[OP]

    def patch(func: Any) -> None:
        ops[OP] = dataclasses.replace(original, func=func)

    yield patch
    ops[OP] = original


def _deadlock(statement: str = "SELECT 1") -> OperationalError:
    return OperationalError(statement, {}, psycopg.errors.DeadlockDetected("deadlock detected"))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_real_deadlock_is_retried_and_answers_success(
    env: Any, api: Any, pg_url: str, patched: Any
) -> None:
    call = Caller(api, "xmlrpc")
    acc = _customer(call)
    me = call("WhoAmI")["account_id"]
    original = env.app.dispatcher.operations[OP].func
    attempts: list[int] = []
    committed: list[int] = []
    other_has_b = threading.Event()
    we_have_a = threading.Event()
    other_done: list[str] = []

    def other() -> None:
        # a second connection taking the two rows in the opposite order
        with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
            conn.execute("SET deadlock_timeout = '10s'")  # so the server picks our call
            conn.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (acc,))
            other_has_b.set()
            we_have_a.wait(10)
            conn.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (me,))
            conn.commit()
            other_done.append("committed")

    def func(ctx: Any, **kw: Any) -> Any:
        attempts.append(len(attempts) + 1)
        n = len(attempts)
        ctx.uow.after_commit(lambda: committed.append(n))
        if n == 1:
            ctx.session.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
            ctx.session.execute(LOCK, {"a": me})
            assert other_has_b.wait(10)
            we_have_a.set()
            # the other connection waits for our row, we for its row: deadlock
            ctx.session.execute(LOCK, {"a": acc})
        return original(ctx, **kw)

    patched(func)
    t = threading.Thread(target=other)
    t.start()
    try:
        terms = call(OP, account_id=acc, net_days=21, idempotency_key="terms-1")
    finally:
        t.join(20)
    assert terms["net_days"] == 21
    assert attempts == [1, 2]  # the first was the deadlock's victim, run again whole
    assert committed == [2]  # after-commit work ran once, for the attempt that committed
    assert other_done == ["committed"]
    assert call(OP, account_id=acc, net_days=21, idempotency_key="terms-1") == terms


@pytest.mark.parametrize("protocol", ["xmlrpc", "soap"])
def test_a_deadlock_on_every_attempt_is_server_busy(
    env: Any, api: Any, patched: Any, protocol: str
) -> None:
    call = Caller(api, protocol)
    acc = _customer(call)
    original = env.app.dispatcher.operations[OP].func
    attempts: list[int] = []
    committed: list[int] = []

    def func(ctx: Any, **kw: Any) -> Any:
        attempts.append(1)
        original(ctx, **kw)  # its writes are rolled back with the attempt
        ctx.uow.after_commit(lambda: committed.append(1))
        raise _deadlock()

    patched(func)
    if protocol == "xmlrpc":
        with pytest.raises(xmlrpc.client.Fault) as x:
            call.proxy.PaymentTermsSet({"account_id": acc, "net_days": 45})
        assert x.value.faultCode == Busy.number == 5031
        assert x.value.faultString.startswith("Server.Busy: ")
    else:
        with pytest.raises(zeep.exceptions.Fault) as f:
            call.proxy.PaymentTermsSet(account_id=acc, net_days=45)
        assert str(f.value.code).endswith("Server.Busy")
    assert len(attempts) == env.app.settings.db_retry_attempts == 3
    assert committed == []
    with UnitOfWork(env.app.engine) as uow:  # nothing of any attempt was written
        assert uow.session.get(PaymentTerms, acc) is None


def test_run_in_transaction_retries_a_locked_sqlite_and_gives_up(env: Any) -> None:
    engine = env.app.engine
    tries: list[int] = []
    pauses: list[float] = []

    def locked(uow: UnitOfWork) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked"))
        uow.commit()
        return "ok"

    assert run_in_transaction(engine, locked, attempts=3, sleep=pauses.append) == "ok"
    assert len(tries) == 3 and len(pauses) == 2
    assert all(0 <= p <= db.BACKOFF_S * 2 for p in pauses)

    def always(uow: UnitOfWork) -> None:
        raise _deadlock()

    with pytest.raises(TransientFailure) as e:
        run_in_transaction(engine, always, attempts=2, sleep=pauses.append)
    assert isinstance(e.value.__cause__, OperationalError)

    # not transient: raised at once
    other: list[int] = []

    def broken(uow: UnitOfWork) -> None:
        other.append(1)
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))

    with pytest.raises(OperationalError):
        run_in_transaction(engine, broken, attempts=3, sleep=pauses.append)
    assert other == [1]

    # part of the work committed (an intent row): never run again
    once: list[int] = []

    def half(uow: UnitOfWork) -> None:
        once.append(1)
        uow.commit()
        raise _deadlock()

    with pytest.raises(OperationalError):
        run_in_transaction(engine, half, attempts=3, sleep=pauses.append)
    assert once == [1]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_connection_budget_is_checked_against_max_connections(env: Any) -> None:
    engine = env.app.engine
    with engine.connect() as conn:
        total = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
    assert db.check_connection_budget(engine, total // 2, 80) is None
    warning = db.check_connection_budget(engine, total, 80)
    assert warning is not None and f"max_connections={total}" in warning
    assert (
        db.connection_budget(workers=2, pool_size=16, max_overflow=8, billing_run_workers=4)
        == 2 * 24 + 4 * db.BILLING_WORKER_POOL
    )


def test_idle_connections_are_given_back(pg_url: str) -> None:
    import time

    engine = db.make_engine(pg_url, pool_size=3)
    try:
        conns = [engine.connect() for _ in range(3)]
        for c in conns:
            c.close()
        assert engine.pool.checkedin() == 3  # type: ignore[attr-defined]
        assert not db.release_idle(engine, 60)  # used moments ago
        busy = engine.connect()
        time.sleep(0.05)
        assert not db.release_idle(engine, 0.01)  # one is in use
        busy.close()
        time.sleep(0.05)
        assert db.release_idle(engine, 0.01)
        assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        with engine.connect() as c:  # and the engine still works
            assert c.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_provisioning_result_is_recorded_despite_a_deadlock_and_a_full_pool(
    env: Any, fake_module: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from pba_server.provisioning import engine as prov_engine
    from pba_server.provisioning.models import ProvisioningOperation

    instance(env)
    with service_ctx(env) as ctx:
        cust = tree.account_create(ctx, type="customer_personal", name="C").id
    provision(env, subscribe(env, cust, plan(env)))
    failures: list[Exception] = [_deadlock(), PoolTimeout("QueuePool limit reached")]
    apply = prov_engine.apply_result

    def flaky(*a: Any, **kw: Any) -> None:
        apply(*a, **kw)  # rolled back with the attempt
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(prov_engine, "RECORD_BACKOFF_S", 0.001)
    monkeypatch.setattr(prov_engine, "apply_result", flaky)
    assert run(env) == 1
    assert failures == []
    with UnitOfWork(env.app.engine) as uow:
        (op,) = uow.session.scalars(select(ProvisioningOperation)).all()
        assert op.status == "done"
