"""Run ``pba-server`` as a real subprocess in tests.

The virtualenv's editable install may point at another checkout, so the
command is ``python -m pba_server.cli`` with PYTHONPATH set to this
repository. Output goes to a file (no pipe to fill up); every process is
started in its own session and, whatever happens, terminated and waited for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "PBA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("PBA_REQUIRE_POSTGRES", "") in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBA_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one short pba-server command to completion, stdin closed."""
    return subprocess.run(
        [sys.executable, "-m", "pba_server.cli", *args],
        cwd=cwd,
        env=env or child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers.items()), e.read()


def health(base: str) -> tuple[int, dict[str, Any]]:
    status, _h, body = http_get(f"{base}/health")
    return status, json.loads(body)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, base: str) -> None:
        self.proc = proc
        self.out_path = out
        self.base = base

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.output, re.MULTILINE)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in server output:\n{self.output}")
            time.sleep(0.05)


def wait_ready(server: Server, timeout: float = 30) -> None:
    """Poll /health until the server answers (any status) or the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output}")
        try:
            http_get(f"{server.base}/health")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"server not ready after {timeout}s:\n{server.output}")
        time.sleep(0.1)


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces or parentheses
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM, wait; SIGKILL the process group we created if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own session, if any
    except (ProcessLookupError, PermissionError):
        pass
    if code is None:
        proc.wait(timeout=10)
        raise AssertionError("server did not stop on SIGTERM")
    return code


@contextmanager
def running(
    *args: str, cwd: Path, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """``pba-server serve ARGS --port <free>``; yields once /health answers."""
    port = free_port()
    out = cwd / f"server-{uuid.uuid4().hex[:8]}.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pba_server.cli", "serve", "--port", str(port), *args],
            cwd=cwd,
            env=env or child_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, out, f"http://127.0.0.1:{port}")
    try:
        if ready:
            wait_ready(server)
        yield server
    finally:
        stop(proc)


# ---------------------------------------------------------------- PostgreSQL


def _admin_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


def pg_admin() -> Any:
    """An autocommit admin connection, or skip (fail with PBA_REQUIRE_POSTGRES=1)."""
    import psycopg

    try:
        return psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (PBA_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    name = f"pba_cli_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        drop_pg_database(name)


def drop_pg_database(name: str) -> None:
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
