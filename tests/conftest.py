"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL: each test session creates its own database (so parallel runs do
not collide) at ``PBA_TEST_POSTGRES_URL`` (default: the local server's
``postgres`` database as an admin connection) and drops it at the end. If
PostgreSQL cannot be reached the PostgreSQL half is skipped, unless
``PBA_REQUIRE_POSTGRES=1`` (as in .ci/run): then it fails.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pba_server import migrate
from pba_server.bootstrap import App, build_app
from pba_server.config import Settings
from pba_server.core.clock import FixedClock, SystemClock
from pba_server.core.db import make_engine
from pba_server.core.secrets import SecretBox
from pba_server.models import metadata

PG_ADMIN_URL = os.environ.get(
    "PBA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# PBA_TEST_TRAVEL=YYYY-MM-DD moves this process's wall clock there (and on
# with real time) for the whole run: tests/test_clock_travel.py runs the
# date-sensitive files so, to prove no test depends on today's date.
TRAVEL = os.environ.get("PBA_TEST_TRAVEL", "")
REQUIRE_PG = os.environ.get("PBA_REQUIRE_POSTGRES", "") in ("1", "true", "yes")
TEST_KEY = SecretBox.generate_key().decode()
ADMIN_PASSWORD = "admin-password-1"
# the tests' receivers, fakes and upstreams listen on loopback: the one private
# network the outgoing-address policy allows them (as an operator would allow one)
TEST_NETWORKS = "127.0.0.0/8, ::1/128"


def pytest_configure(config: pytest.Config) -> None:
    from pba_server.core import netpolicy

    netpolicy.configure(allowed_networks=TEST_NETWORKS)  # plugin unit tests build no app
    if TRAVEL:
        import time_machine

        config._pba_travel = time_machine.travel(  # type: ignore[attr-defined]
            datetime.fromisoformat(TRAVEL).replace(tzinfo=UTC), tick=True
        )
        config._pba_travel.start()  # type: ignore[attr-defined]


def _pg_admin_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    import psycopg

    name = f"pba_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        admin = psycopg.connect(_pg_admin_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (PBA_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(_pg_admin_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'pba.sqlite'}"


_engines: dict[str, Engine] = {}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_engine(backend: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = make_engine(url, pool_size=20)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def clean(engine: Engine) -> None:
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                conn.execute(text(f"DELETE FROM {t}"))
            conn.execute(text("DELETE FROM sqlite_sequence")) if conn.execute(
                text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")
            ).first() else None


class TestClock(FixedClock):
    """Follows real time unless frozen, so 5-minute windows behave."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self.frozen = False
        self._real = SystemClock()

    def now(self) -> datetime:
        return super().now() if self.frozen else self._real.now()

    def freeze(self, at: datetime) -> None:
        self.frozen = True
        self.set(at)


@dataclass
class Env:
    app: App
    clock: TestClock
    backend: str
    admin_login: str = "admin"
    admin_password: str = ADMIN_PASSWORD


_apps: dict[str, tuple[App, TestClock]] = {}


@pytest.fixture
def env(migrated_engine: Engine, backend: str, tmp_path: Path) -> Iterator[Env]:
    """A clean database with a provider and admin, and the app wired to it."""
    from pba_server.accounts import setup

    clean(migrated_engine)
    if backend not in _apps:
        clock = TestClock()
        settings = Settings(
            database=str(migrated_engine.url.render_as_string(False)),
            secret_key=TEST_KEY,
            threads=8,
            outbound_allowed_networks=TEST_NETWORKS,
        )
        _apps[backend] = (build_app(settings, clock=clock, engine=migrated_engine), clock)
    app, clock = _apps[backend]
    clock.frozen = False
    from pba_server.sdk import guard as plugincall

    plugincall.runtime().reset()  # instance ids start again at 1 in every test
    setup.initialize(app.engine, clock, app.secrets, admin_password=ADMIN_PASSWORD)
    yield Env(app=app, clock=clock, backend=backend)


# ---------------------------------------------------------------- live server

_reactor_thread: threading.Thread | None = None
_servers: dict[str, str] = {}


def _start_reactor() -> None:
    global _reactor_thread
    if _reactor_thread is not None:
        return
    from twisted.internet import reactor

    _reactor_thread = threading.Thread(
        target=lambda: reactor.run(installSignalHandlers=False), daemon=True
    )
    _reactor_thread.start()


def _listen(app: App) -> str:
    from twisted.internet import reactor, threads

    from pba_server.api.serve import make_site, start_pool

    def setup() -> int:
        pool = start_pool(app.settings.threads, reactor)
        port = reactor.listenTCP(0, make_site(app, pool), interface="127.0.0.1")
        return int(port.getHost().port)

    port = threads.blockingCallFromThread(reactor, setup)
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def server(env: Env) -> str:
    """Base URL of a real Twisted server (SOAP + XML-RPC) over ``env``'s database."""
    _start_reactor()
    if env.backend not in _servers:
        _servers[env.backend] = _listen(env.app)
    return _servers[env.backend]


@pytest.fixture
def api(server: str, env: Env) -> Iterator[Any]:
    from tests.support import Api

    client = Api(server, env)
    yield client
    client.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _reactor_thread is not None:
        from twisted.internet import reactor

        reactor.callFromThread(reactor.stop)
        _reactor_thread.join(timeout=10)


__all__ = ["Env", "TestClock", "replace"]
