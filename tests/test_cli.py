"""The ``pba-server`` command as operators use it: real processes, real ports.

Each server runs as ``python -m pba_server.cli serve`` (see tests/serverproc.py)
and is always stopped and waited for, even when a test fails.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import zeep
import zeep.exceptions
from sqlalchemy import create_engine

from pba_server import bootstrap, cli
from pba_server.config import Settings
from tests.serverproc import (
    Server,
    child_env,
    children_of,
    drop_pg_database,
    free_port,
    fresh_pg_database,
    health,
    http_get,
    running,
    stop,
)
from tests.serverproc import cli as run_cli

pytestmark = pytest.mark.slow

LOG_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def proxy(base: str, login: str, password: str, **kw) -> xmlrpc.client.ServerProxy:
    host = base.removeprefix("http://")
    url = f"http://{quote(login, safe='')}:{quote(password, safe='')}@{host}/xmlrpc"
    return xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True, **kw)


def whoami(base: str, login: str, password: str) -> dict:
    with proxy(base, login, password) as p:
        return p.WhoAmI({})


# ---------------------------------------------------------------- --help


@pytest.mark.parametrize("command", ["serve", "migrate", "init", "export-wsdl"])
def test_help_on_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pba-server {command}")
    if command in ("serve", "migrate", "init"):
        assert "--database URL" in out and "--config FILE" in out
    if command == "serve":
        assert all(f in out for f in ("--host", "--port", "--workers"))
    if command == "init":
        assert "--admin-login" in out and "--admin-password" in out


def test_help_as_a_command(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for command in ("serve", "migrate", "init", "export-wsdl"):
        assert command in r.stdout


# ---------------------------------------------------------------- first start


def test_first_start_on_sqlite_creates_migrates_and_prints_the_password_once(tmp_path):
    with running(cwd=tmp_path) as s:
        out = s.output
        assert (tmp_path / "pba-data" / "pba.sqlite").is_file()
        assert f"listening on {s.base}" in out
        assert f"WSDL: {s.base}/soap?wsdl" in out
        assert f"XML-RPC: {s.base}/xmlrpc" in out
        passwords = re.findall(r"password: (\S+)", out)
        assert len(passwords) == 1, out
        me = whoami(s.base, "admin", passwords[0])
        assert me["login"] == "admin" and me["account_type"] == "provider"
        status, info = health(s.base)
        assert status == 200 and info["schema"] == "current"
    with running(cwd=tmp_path) as again:
        assert f"listening on {again.base}" in again.output
        assert "password" not in again.output
        assert whoami(again.base, "admin", passwords[0])["login"] == "admin"
        assert stop(again.proc) == 0  # SIGTERM: a clean exit


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_a_clear_error_not_a_hang(workers, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(
            "serve",
            "--database",
            f"sqlite:///{tmp_path / 'p.sqlite'}",
            "--port",
            str(port),
            "--workers",
            workers,
            cwd=tmp_path,
            timeout=30,  # it used to hang: the thread pool kept the process alive
        )
    assert r.returncode == 2
    assert f"pba-server: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- init


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'init.sqlite'}"
    else:
        with fresh_pg_database() as url:
            yield url


def test_init_creates_provider_and_admin_without_prompt_and_only_once(empty_database, tmp_path):
    args = ("init", "--database", empty_database)
    creds = ("--admin-login", "root", "--admin-password", "s3cret-enough")
    r = run_cli(*args, *creds, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "admin 'root'" in r.stdout
    assert "s3cret-enough" not in r.stdout  # the operator chose it: not echoed

    again = run_cli(*args, *creds, cwd=tmp_path)
    assert again.returncode != 0
    assert "already initialized" in again.stderr

    other = run_cli(*args, "--admin-login", "other", cwd=tmp_path)
    assert other.returncode != 0 and "already initialized" in other.stderr

    from sqlalchemy import text

    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            logins = conn.execute(text("SELECT login FROM users")).scalars().all()
            providers = conn.execute(
                text("SELECT count(*) FROM accounts WHERE type = 'provider'")
            ).scalar()
    finally:
        engine.dispose()
    assert logins == ["root"] and providers == 1


def test_init_without_password_and_no_terminal_generates_one(tmp_path):
    # stdin closed outright (fd 0 not open at all), as under some supervisors
    r = subprocess.run(
        [
            *("sh", "-c", 'exec "$0" -m pba_server.cli "$@" <&-', sys.executable),
            *("init", "--database", f"sqlite:///{tmp_path / 'g.sqlite'}"),
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"password: \S{12,}", r.stdout), r.stdout


# ------------------------------------------------- a configured SQLite server


ADMIN = ("ops", "ops-password-1")


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> Iterator[Server]:
    """A server configured only by a config file (--config), initialized by `init`."""
    home = tmp_path_factory.mktemp("configured")
    db = home / "data" / "configured.sqlite"
    conf = home / "pba.conf"
    conf.write_text(
        "[server]\n"
        f"database = sqlite:///{db}\n"
        f"secret_key_file = {home / 'secret.key'}\n"
        "port = 1\n"  # the --port flag given by running() wins
        "threads = 4\n"
    )
    r = run_cli(
        "init",
        "--config",
        str(conf),
        "--admin-login",
        ADMIN[0],
        "--admin-password",
        ADMIN[1],
        cwd=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with running("--config", str(conf), cwd=home) as s:
        assert f"database sqlite:///{db}" in s.output
        assert "password" not in s.output
        s.db = db  # type: ignore[attr-defined]
        yield s


def _log_line(server: Server, cid: str) -> re.Match[str]:
    return server.wait_for_output(
        rf"^(?P<time>{LOG_TIME}) user=(?P<user>\S+) op=(?P<op>\S+) proto=(?P<proto>\S+) "
        rf"dur_ms=(?P<dur>\d+\.\d) result=(?P<result>\S+) http=(?P<http>\d+) "
        rf"cid={re.escape(cid)} addr=\S+ pid=(?P<pid>\d+)$"
    )


def test_every_call_is_logged_in_one_line(configured):
    ok_cid, fault_cid, soap_cid = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(3))
    with proxy(configured.base, *ADMIN, headers=[("X-Correlation-Id", ok_cid)]) as p:
        assert p.WhoAmI({})["login"] == ADMIN[0]
    with proxy(configured.base, *ADMIN, headers=[("X-Correlation-Id", fault_cid)]) as p:
        with pytest.raises(xmlrpc.client.Fault) as e:
            p.AccountGet({"account_id": 999999})
        assert e.value.faultString.startswith("Client.NotFound")
    session = requests.Session()
    session.auth = ADMIN
    with session:
        client = zeep.Client(
            f"{configured.base}/soap?wsdl", transport=zeep.Transport(session=session)
        )
        session.headers["X-Correlation-Id"] = soap_cid  # for the call, not the WSDL
        with pytest.raises(zeep.exceptions.Fault) as f:
            client.service.AccountGet(account_id=999999)
        assert f.value.code.endswith("Client.NotFound")

    ok = _log_line(configured, ok_cid)
    assert ok["user"] == ADMIN[0] and ok["op"] == "WhoAmI" and ok["proto"] == "xmlrpc"
    assert ok["result"] == "OK" and ok["http"] == "200"
    assert int(ok["pid"]) == configured.proc.pid
    fault = _log_line(configured, fault_cid)
    assert (fault["user"], fault["op"], fault["result"]) == (
        ADMIN[0],
        "AccountGet",
        "Client.NotFound",
    )
    soap = _log_line(configured, soap_cid)
    assert (soap["op"], soap["proto"], soap["result"], soap["http"]) == (
        "AccountGet",
        "soap",
        "Client.NotFound",
        "500",
    )
    for line in (ok, fault, soap):
        assert "\n" not in line.group(0)


def test_other_requests_are_logged_too(configured):
    wsdl_cid, missing_cid = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(2))
    status, _h, body = http_get(f"{configured.base}/soap?wsdl", {"X-Correlation-Id": wsdl_cid})
    assert status == 200 and b"urn:pba-server:v1" in body
    status, _h, _b = http_get(
        f"{configured.base}/no/such%20thing", {"X-Correlation-Id": missing_cid}
    )
    assert status == 404
    wsdl = _log_line(configured, wsdl_cid)
    assert (wsdl["user"], wsdl["op"], wsdl["result"], wsdl["http"]) == (
        "-",
        "GET:/soap?wsdl",
        "OK",
        "200",
    )
    missing = _log_line(configured, missing_cid)
    assert (missing["op"], missing["result"], missing["http"]) == (
        "GET:/no/such%20thing",
        "HTTP.404",
        "404",
    )


def test_correlation_id_is_echoed_or_made_up(configured):
    host, port = configured.base.removeprefix("http://").split(":")
    body = xmlrpc.client.dumps(({},), "WhoAmI").encode()
    for sent in ("my-corr.id_42", "not a valid id!"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(
                "POST",
                "/xmlrpc",
                body,
                {"Content-Type": "text/xml", "X-Correlation-Id": sent},
            )
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        cid = resp.getheader("X-Correlation-Id")
        assert resp.status == 200
        if sent == "my-corr.id_42":
            assert cid == sent
        else:
            assert cid and re.fullmatch(r"[0-9a-f]{32}", cid)
        # no credentials were sent: the log line says so, under the same id
        line = _log_line(configured, cid)
        assert line["op"] == "WhoAmI" and line["result"] == "Client.AuthFailed"


def test_system_list_methods_and_method_help(configured):
    ops = bootstrap.load_operations()
    with proxy(configured.base, *ADMIN) as p:
        listed = p.system.listMethods()
        assert set(ops) <= set(listed)
        assert {"system.listMethods", "system.methodHelp"} <= set(listed)
        for name in ("AccountCreate", "WhoAmI"):
            text = p.system.methodHelp(name)
            assert text.startswith(f"{name}(struct)")
            assert ops[name].doc.strip().splitlines()[0] in text
        assert "account_id" in p.system.methodHelp("AccountGet")


def test_health_is_503_when_the_schema_is_not_current(configured):
    assert health(configured.base)[0] == 200
    db = sqlite3.connect(configured.db)  # type: ignore[attr-defined]
    try:
        (rev,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        with db:
            db.execute("UPDATE alembic_version SET version_num = 'ffffffff_from_the_future'")
        try:
            status, info = health(configured.base)
            assert status == 503
            assert info["database"] == "reachable" and info["schema"] == "ahead"
        finally:
            with db:
                db.execute("UPDATE alembic_version SET version_num = ?", (rev,))
    finally:
        db.close()
    status, info = health(configured.base)
    assert status == 200 and info["status"] == "ok"


# ---------------------------------------------------------------- PostgreSQL


def test_check_schema_refuses_a_behind_postgresql_schema(monkeypatch):
    monkeypatch.setattr(bootstrap.migrate, "schema_state", lambda _e: ("behind", "0000", "0001"))
    url = "postgresql+psycopg://pba:s3cret-pw@127.0.0.1:5432/never_connected"
    engine = create_engine(url)
    with pytest.raises(bootstrap.SchemaNotCurrent) as e:
        bootstrap.check_schema(engine, Settings(database=url))
    engine.dispose()
    message = str(e.value)
    assert "behind" in message and "pba-server migrate --database" in message
    assert "s3cret-pw" not in message  # the message ends up in logs


@pytest.mark.parametrize("command", ["serve", "migrate", "init"])
def test_unreachable_database_is_one_clear_line(command, tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens
    r = run_cli(command, "--database", url, cwd=tmp_path, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("pba-server: cannot use the database: connection failed")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_postgresql_refuses_to_serve_until_migrated(tmp_path):
    with fresh_pg_database() as url:
        name = url.rsplit("/", 1)[1]
        refused = run_cli(
            "serve", "--database", url, "--port", str(free_port()), cwd=tmp_path, timeout=30
        )
        assert refused.returncode != 0
        assert "pba-server migrate" in refused.stderr
        assert "empty" in refused.stderr

        env = child_env(PBA_DATABASE_URL=url)  # stands for --database from here on
        m = run_cli("migrate", cwd=tmp_path, env=env)
        assert m.returncode == 0, m.stderr
        assert "empty -> " in m.stdout
        i = run_cli(
            "init",
            "--admin-login",
            "pgadmin",
            "--admin-password",
            "pg-password-1",
            cwd=tmp_path,
            env=env,
        )
        assert i.returncode == 0, i.stderr

        with running(cwd=tmp_path, env=env) as s:
            assert f"database postgresql+psycopg://postgres@127.0.0.1:5432/{name}" in s.output
            assert "password" not in s.output
            assert whoami(s.base, "pgadmin", "pg-password-1")["login"] == "pgadmin"
            status, info = health(s.base)
            assert status == 200 and info["schema"] == "current"

            drop_pg_database(name)  # the database goes away under the server
            status, info = health(s.base)
            assert status == 503 and info["database"] == "unreachable"
        assert not (tmp_path / "pba-data" / "pba.sqlite").exists()


def _served_by(server: Server, rounds: int, want: set[int] | None = None) -> set[int]:
    """Send /health requests on fresh connections, concurrently; the pids that answered."""
    seen: set[int] = set()

    def one(cid: str) -> None:
        http_get(f"{server.base}/health", {"X-Correlation-Id": cid})

    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            cids = [f"w-{uuid.uuid4().hex[:12]}" for _ in range(16)]
            list(pool.map(one, cids))
            seen |= {int(_log_line(server, c)["pid"]) for c in cids}
            if (want is None and len(seen) >= 2) or (want is not None and want <= seen):
                break
    return seen


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_workers_share_one_port_restart_and_stop_cleanly(tmp_path):
    with fresh_pg_database() as url:
        assert run_cli("migrate", "--database", url, cwd=tmp_path).returncode == 0
        with running("--database", url, "--workers", "2", "--threads", "4", cwd=tmp_path) as s:
            master = s.proc.pid
            workers = _wait_for(
                lambda: len(children_of(master)) == 2 and children_of(master),
                20,
                "two workers",
            )
            password = s.wait_for_output(r"password: (\S+)")[1]
            served = _served_by(s, rounds=40)
            assert len(served) == 2 and served <= workers, (served, workers)
            assert master not in served

            killed = min(workers)
            os.kill(killed, signal.SIGKILL)
            replaced = _wait_for(
                lambda: (c := children_of(master)) and len(c) == 2 and killed not in c and c,
                20,
                "a replacement worker",
            )
            (new,) = replaced - workers
            s.wait_for_output(rf"worker {killed} exited")
            assert new in _served_by(s, rounds=40, want={new})
            assert whoami(s.base, "admin", password)["login"] == "admin"

            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(timeout=20) == 0
            for pid in replaced:  # stopped and reaped by the master, not orphaned
                assert not Path(f"/proc/{pid}").exists(), pid
            with socket.socket() as sk, pytest.raises(ConnectionRefusedError):
                sk.connect(("127.0.0.1", int(s.base.rsplit(":", 1)[1])))


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited, waiting for init to reap it


def test_workers_stop_when_the_master_is_killed(tmp_path):
    with running("--workers", "2", "--threads", "2", cwd=tmp_path) as s:
        master = s.proc.pid
        workers = _wait_for(
            lambda: len(children_of(master)) == 2 and children_of(master), 20, "two workers"
        )
        assert _served_by(s, rounds=40) == workers  # both up and serving
        os.kill(master, signal.SIGKILL)
        s.proc.wait(timeout=10)
        _wait_for(lambda: all(_gone(p) for p in workers), 15, "orphaned workers to stop")
