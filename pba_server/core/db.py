"""Engine, declarative base and the unit of work.

One transaction per API call or job step: a :class:`UnitOfWork` rolls back
unless :meth:`UnitOfWork.commit` was called. Transport code never commits;
the dispatcher does, once the operation has returned.

Row locks are taken in one global order, so two transactions never wait on
each other in a cycle (docs/locking.md has the why and the paths):

1. ``scheduled_jobs``, then ``orders`` (SKIP LOCKED claims of runners);
2. ``accounts`` (``FOR UPDATE``: credit checks, status changes), lower id first;
3. the documents an operation works on: ``subscriptions``, ``invoices``,
   ``payments``, ``gateway_payments`` (ascending id within a table);
4. ``account_balances``, ordered by (account_id, currency);
5. ``number_sequences``, ordered by (issuer_id, kind);
6. ``billing_counters`` (the server-wide invoice feed: one row every issuing
   transaction holds until commit, so it is taken last and held shortest).

A path that posts to the ledger and issues a numbered document therefore locks
the buyer's balance row before it takes a number. What still deadlocks (an
order not foreseen here) is retried whole by :func:`run_in_transaction`.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    CHAR,
    DateTime,
    Engine,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import StaticPool

log = logging.getLogger("pba.db")
T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def Money() -> Numeric[Decimal]:  # noqa: N802 - reads as a column type
    return Numeric(19, 4, asdecimal=True)


def CurrencyCode() -> CHAR:  # noqa: N802
    return CHAR(3)


def Name(length: int = 255) -> String:  # noqa: N802
    return String(length)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 0,
    pool_timeout: float = 30.0,
    pool_recycle: int = 1800,
    echo: bool = False,
) -> Engine:
    """The engine of ``url``. On PostgreSQL it holds at most ``pool_size +
    max_overflow`` connections (the overflow ones are closed when returned);
    a call waits ``pool_timeout`` seconds for one, then fails with the pool's
    TimeoutError (answered ``Server.Unavailable``). See :func:`connection_budget`."""
    if is_sqlite(url):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, echo=echo, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit one is lazy
            # and breaks SAVEPOINT); IMMEDIATE takes the write lock up front so
            # two writers queue instead of failing with "database is locked".
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection idle longer than this is checked with a round trip
# before use. SQLAlchemy's pool_pre_ping would do it on every checkout, which
# is one extra round trip per API call; a connection used moments ago is
# known to work, and if the server went away since, the failed call is
# answered Server.Unavailable and the pool discards its connections.
PING_IDLE_S = 5.0

# when a connection was last returned to each engine's pool (release_idle)
_last_checkin: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        now = time.monotonic()
        _last_checkin[engine] = now
        if record is not None:
            record.info["pba_idle_since"] = now

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("pba_idle_since")
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_conn, None):
                # the pool retries the checkout with a fresh connection
                raise DisconnectionError(str(exc)) from exc
            raise


class UnitOfWork:
    """A session and its transaction; rolled back unless committed.

    ``after_commit`` callbacks run only once the transaction has committed
    (outbox delivery, caches), never for a rolled-back one.
    """

    def __init__(self, engine: Engine) -> None:
        self.session = Session(engine, expire_on_commit=False, autoflush=True)
        self._committed = False
        self._after_commit: list[Callable[[], None]] = []

    @property
    def committed_once(self) -> bool:
        """Whether some of this unit's work is committed (it cannot be undone
        by throwing the unit away)."""
        return self._committed

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._committed:
                self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
        self._committed = True
        callbacks, self._after_commit = self._after_commit, []
        for cb in callbacks:
            cb()

    def rollback(self) -> None:
        self.session.rollback()
        self._after_commit = []

    def after_commit(self, cb: Callable[[], None]) -> None:
        self._after_commit.append(cb)


# ---------------------------------------------------------------- connections


def connection_budget(
    *, workers: int, pool_size: int, max_overflow: int, billing_run_workers: int
) -> int:
    """The most connections the server takes from its database.

    Each worker process has one engine, shared by its request threads and its
    background threads (scheduler tick, order runner, provisioning, event
    delivery): ``pool_size + max_overflow`` at most. The scheduled billing
    run, in whichever one process claims it, forks ``billing_run_workers``
    processes with an engine of 2 connections each (:data:`BILLING_WORKER_POOL`).
    """
    return workers * (pool_size + max_overflow) + billing_run_workers * BILLING_WORKER_POOL


BILLING_WORKER_POOL = 2  # billing/run.py's workers: make_engine(url, pool_size=2)


def check_connection_budget(engine: Engine, budget: int, share_percent: int) -> str | None:
    """On PostgreSQL: a warning (also logged) when ``budget`` is more than
    ``share_percent`` of the server's ``max_connections``, else None. Other
    clients (``verify-ledger``, psql, backups) need the rest."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        total = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
    allowed = total * share_percent // 100
    if budget <= allowed:
        return None
    text = (
        f"the settings let this server open {budget} database connections, more than "
        f"db_connection_share={share_percent}% of max_connections={total} ({allowed}); "
        "lower workers, db_pool_size, db_max_overflow or billing_run_workers"
    )
    log.warning("%s", text)
    return text


def release_idle(engine: Engine, idle_seconds: float) -> bool:
    """Close the pool's connections when none was used for ``idle_seconds``
    (a QueuePool otherwise keeps ``pool_size`` of them open for ever, and idle
    servers then hold connections other clients need). Returns whether it did.

    The engine gets a fresh pool; a call in flight keeps its connection, which
    the old pool closes when it is returned."""
    if idle_seconds <= 0 or engine.dialect.name == "sqlite":
        return False
    pool: Any = engine.pool
    last = _last_checkin.get(engine)
    if last is None or pool.checkedout() or not pool.checkedin():
        return False
    if time.monotonic() - last < idle_seconds:
        return False
    engine.dispose()
    return True


# ---------------------------------------------------------------- transient failures

# SQLSTATEs worth trying again: the database chose this transaction as the
# victim of a deadlock, or could not serialize it
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(exc: BaseException) -> bool:
    """A deadlock, a serialization failure or a locked SQLite database: the
    same unit of work may well succeed if run again."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    if state in TRANSIENT_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        msg = str(orig).lower()
        return "database is locked" in msg or "database table is locked" in msg
    return False


class TransientFailure(Exception):
    """Still a deadlock/serialization failure after every attempt; ``__cause__``
    is the last one."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"still failing after {attempts} attempt(s)")
        self.attempts = attempts


BACKOFF_S = 0.02  # first retry within 20 ms, doubling: full jitter
_jitter = random.Random()
_jitter_lock = threading.Lock()


def run_in_transaction(
    engine: Engine,
    fn: Callable[[UnitOfWork], T],
    *,
    attempts: int = 3,
    backoff: float = BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "unit of work",
    retry_unavailable: bool = False,
) -> T:
    """Run ``fn`` in a new :class:`UnitOfWork`; ``fn`` commits (or not).

    A deadlock, serialization failure or locked SQLite database throws the
    whole unit of work away and runs ``fn`` again in a fresh one, up to
    ``attempts`` times in all, after a jittered pause (0..backoff*2^n s).
    After-commit callbacks of a failed attempt are dropped with it, so they
    run once, for the attempt that committed. An attempt that already
    committed part of its work (an intent row before a gateway call) is not
    run again: its failure is the caller's. When every attempt failed,
    :class:`TransientFailure` is raised from the last error.

    ``retry_unavailable`` also retries a wait for a pooled connection that
    timed out and a connection the database dropped (work that must not be
    lost for that, such as recording a provisioning result; a caller of the
    API rather gets its answer at once).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        uow = UnitOfWork(engine)
        try:
            with uow:
                return fn(uow)
        except (DBAPIError, PoolTimeout) as exc:
            transient = is_transient(exc)
            unavailable = isinstance(exc, PoolTimeout) or bool(
                getattr(exc, "connection_invalidated", False)
            )
            if uow.committed_once or not (transient or (retry_unavailable and unavailable)):
                raise
            if attempt == attempts:
                log.warning("%s: %s, giving up after %d attempt(s)", what, _short(exc), attempt)
                if not transient:
                    raise
                raise TransientFailure(attempts) from exc
            with _jitter_lock:
                pause = _jitter.uniform(0, backoff * 2 ** (attempt - 1))
            log.info("%s: %s, attempt %d again in %.3f s", what, _short(exc), attempt + 1, pause)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: Exception) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}{f' [{state}]' if state else ''}: {first}"[:300]
