"""Stopping the server: SIGTERM drains the calls in flight.

A call is held in flight for real: the test holds a row lock on the account
in PostgreSQL, so the server's AccountUpdate waits for it. SIGTERM arrives;
the server stops accepting connections, the test lets the lock go, and the
call in flight must still be answered (and its change committed) before the
process exits with status 0.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import xmlrpc.client
from typing import Any

import psycopg
import pytest

from tests.serverproc import cli, fresh_pg_database, running

pytestmark = pytest.mark.slow


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _waiting_on_a_lock(dsn: str, database: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (database,),
        ).fetchone()
        return bool(row and row[0])


def test_sigterm_answers_the_call_in_flight_then_exits(tmp_path):
    with fresh_pg_database() as url:
        assert cli("migrate", "--database", url, cwd=tmp_path).returncode == 0
        database = url.rsplit("/", 1)[1]
        with running("--database", url, cwd=tmp_path) as server:
            password = server.wait_for_output(r"password: (\S+)")[1]
            address = server.base.removeprefix("http://")
            endpoint = f"http://admin:{password}@{address}/xmlrpc"
            with xmlrpc.client.ServerProxy(endpoint) as api:
                acc = api.AccountCreate({"type": "customer_personal", "name": "Before"})
            answer: dict[str, Any] = {}

            def update() -> None:
                try:
                    with xmlrpc.client.ServerProxy(endpoint) as api:
                        answer["ok"] = api.AccountUpdate({"account_id": acc["id"], "name": "After"})
                except Exception as exc:  # the assertion below shows it
                    answer["error"] = exc

            with psycopg.connect(_dsn(url)) as lock:
                lock.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (acc["id"],))
                caller = threading.Thread(target=update)
                caller.start()
                deadline = time.monotonic() + 20
                while not _waiting_on_a_lock(_dsn(url), database):
                    assert time.monotonic() < deadline, "the call never reached the lock"
                    time.sleep(0.05)
                server.proc.send_signal(signal.SIGTERM)
                server.wait_for_output(r"stopping: waiting for 1 call\(s\) in flight")
                # no new connections while draining
                host, port = address.rsplit(":", 1)
                with socket.socket() as sk, pytest.raises(ConnectionRefusedError):
                    sk.connect((host, int(port)))
                assert server.proc.poll() is None  # still there, for the call in flight
                lock.rollback()  # the call goes on
            caller.join(30)
            assert "error" not in answer, (answer, server.output[-3000:])
            assert answer["ok"]["name"] == "After"
            assert server.proc.wait(timeout=20) == 0
        with psycopg.connect(_dsn(url)) as conn:
            row = conn.execute("SELECT name FROM accounts WHERE id = %s", (acc["id"],)).fetchone()
            assert row == ("After",)
