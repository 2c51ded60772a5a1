#!/usr/bin/env python3
"""Throughput benchmark: AccountGet and AccountCreate over SOAP and XML-RPC.

What it does, all on 127.0.0.1:

1. creates a fresh PostgreSQL database (dropped again at the end),
2. runs ``pba-server migrate`` and ``pba-server init``,
3. starts ``pba-server serve --workers N --threads T`` on a free port,
4. seeds a few customer accounts (and, with ``--auth apikey``, an API key),
5. drives each scenario for a fixed time over keep-alive HTTP/1.1 connections
   with pre-built request bodies (the point is to measure the server, not a
   SOAP client library), checking every response for success,
6. prints requests/s, p50/p99 latency and errors per scenario.

The load generator is ``wrk`` when it is installed (``apt-get install wrk``;
it costs far less CPU than Python, which matters when client, server and
PostgreSQL share one small machine), otherwise several Python processes
with raw sockets (``--loadgen python`` forces that).

Every scenario is bounded by ``--duration`` and ``--max-requests``; the server
processes and the database are removed on exit, Ctrl-C and errors too.

Example::

    PYTHONPATH=. .venv/bin/python scripts/bench_api.py --workers 2 --duration 10
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ADMIN_LOGIN = "benchadmin"
ADMIN_PASSWORD = "bench-" + uuid.uuid4().hex  # only for this throw-away database
SCENARIOS = ("soap-get", "xmlrpc-get", "soap-create", "xmlrpc-create", "mixed")

SOAP_ENV = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:tns="urn:pba-server:v1"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>'
)


# ---------------------------------------------------------------- requests


@dataclass
class Stream:
    """One kind of request, sent on ``connections`` connections."""

    name: str
    path: str
    bodies: list[bytes]
    headers: dict[str, str]
    marker: bytes  # a successful response contains this and no fault
    connections: int


@dataclass
class Result:
    name: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    conns: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def soap_get(account_id: int) -> bytes:
    return SOAP_ENV.format(
        f"<tns:AccountGet><tns:account_id>{account_id}</tns:account_id></tns:AccountGet>"
    ).encode()


def soap_create(i: int) -> bytes:
    return SOAP_ENV.format(
        "<tns:AccountCreate><tns:type>customer_business</tns:type>"
        f"<tns:name>Bench customer {i}</tns:name><tns:country>DE</tns:country>"
        "</tns:AccountCreate>"
    ).encode()


def xmlrpc_body(method: str, params: dict[str, Any]) -> bytes:
    return xmlrpc.client.dumps((params,), method, allow_none=True).encode()


def make_streams(scenario: str, auth: str, ids: list[int], connections: int) -> list[Stream]:
    basic = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    soap_h = {**basic, "Content-Type": "text/xml; charset=utf-8"}
    xr_h = {**basic, "Content-Type": "text/xml"}
    kinds = {
        "soap-get": lambda c: Stream(
            "soap-get",
            "/soap",
            [soap_get(i) for i in ids],
            {**soap_h, "SOAPAction": '"AccountGet"'},
            b"AccountGetResponse>",
            c,
        ),
        "xmlrpc-get": lambda c: Stream(
            "xmlrpc-get",
            "/xmlrpc",
            [xmlrpc_body("AccountGet", {"account_id": i}) for i in ids],
            xr_h,
            b"<params>",
            c,
        ),
        "soap-create": lambda c: Stream(
            "soap-create",
            "/soap",
            [soap_create(i) for i in range(64)],
            {**soap_h, "SOAPAction": '"AccountCreate"'},
            b"AccountCreateResponse>",
            c,
        ),
        "xmlrpc-create": lambda c: Stream(
            "xmlrpc-create",
            "/xmlrpc",
            [
                xmlrpc_body(
                    "AccountCreate",
                    {"type": "customer_business", "name": f"Bench customer {i}", "country": "DE"},
                )
                for i in range(64)
            ],
            xr_h,
            b"<params>",
            c,
        ),
    }
    if scenario != "mixed":
        return [kinds[scenario](connections)]
    # mixed: mostly reads, some writes, all four at once
    share = {"soap-get": 3, "xmlrpc-get": 3, "soap-create": 1, "xmlrpc-create": 1}
    total = sum(share.values())
    return [kinds[k](max(1, round(connections * v / total))) for k, v in share.items()]


def raw_request(stream: Stream, body: bytes, port: int) -> bytes:
    head = [f"POST {stream.path} HTTP/1.1", f"Host: {HOST}:{port}"]
    head += [f"{k}: {v}" for k, v in stream.headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def ok_response(status: int, body: bytes, marker: bytes) -> bool:
    return status == 200 and marker in body and b"Fault>" not in body and b"<fault>" not in body


# ---------------------------------------------------------------- python load generator


def _conn_loop(
    port: int,
    stream: Stream,
    offset: int,
    deadline: float,
    max_requests: int,
    out: list[float],
    errs: list[int],
) -> None:
    payloads = [raw_request(stream, b, port) for b in stream.bodies]
    sock = None
    rfile = None
    n = offset
    done = 0
    while done < max_requests and time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection((HOST, port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rfile = sock.makefile("rb")
            assert rfile is not None
            t0 = time.perf_counter()
            sock.sendall(payloads[n % len(payloads)])
            status_line = rfile.readline()
            status = int(status_line.split()[1])
            length = 0
            close = False
            while True:
                line = rfile.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"connection" and v.strip().lower() == b"close":
                    close = True
            body = rfile.read(length)
            out.append(time.perf_counter() - t0)
            if not ok_response(status, body, stream.marker):
                errs[0] += 1
            if close:
                sock.close()
                sock = None
        except (OSError, ValueError, IndexError):
            errs[0] += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
        n += 1
        done += 1
    if sock is not None:
        sock.close()


def _py_process(
    port: int,
    assignments: list[tuple[int, Stream, int, int]],
    start_at: float,
    duration: float,
    q: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.monotonic()
    deadline = started + duration
    per: dict[int, tuple[list[float], list[int]]] = {}
    threads = []
    for idx, stream, offset, cap in assignments:
        lat, errs = per.setdefault(idx, ([], [0]))
        t = threading.Thread(
            target=_conn_loop,
            args=(port, stream, offset, deadline, cap, lat, errs),
            daemon=True,
        )
        threads.append(t)
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    elapsed = time.monotonic() - started
    q.put((elapsed, {idx: (lat, errs[0]) for idx, (lat, errs) in per.items()}))


def run_python(
    streams: list[Stream], port: int, duration: float, max_requests: int, procs: int
) -> list[Result]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    conns: list[tuple[int, Stream, int, int]] = []
    for idx, s in enumerate(streams):
        cap = max(1, max_requests // s.connections)  # --max-requests per stream
        conns += [(idx, s, k * 7, cap) for k in range(s.connections)]
    nprocs = max(1, min(procs, len(conns)))
    buckets: list[list[tuple[int, Stream, int, int]]] = [[] for _ in range(nprocs)]
    for k, c in enumerate(conns):
        buckets[k % nprocs].append(c)
    start_at = time.time() + 1.0  # let all processes start before the clock runs
    ps = [
        ctx.Process(target=_py_process, args=(port, b, start_at, duration, q), daemon=True)
        for b in buckets
    ]
    for p in ps:
        p.start()
    merged: dict[int, tuple[list[float], int]] = {}
    elapsed = 0.0
    try:
        for _ in ps:
            took, part = q.get(timeout=duration + 90)
            elapsed = max(elapsed, took)
            for idx, (lat, e) in part.items():
                old = merged.get(idx, ([], 0))
                merged[idx] = (old[0] + lat, old[1] + e)
    finally:
        for p in ps:
            p.join(5)
            if p.is_alive():
                p.terminate()
    results = []
    for idx, s in enumerate(streams):
        lat, e = merged.get(idx, ([], 0))
        results.append(summarize(s.name, lat, e, elapsed or duration))
    return results


def summarize(name: str, lat: list[float], errors: int, seconds: float) -> Result:
    r = Result(name, requests=len(lat), errors=errors, seconds=seconds)
    if lat:
        lat.sort()
        r.p50_ms = statistics.median(lat) * 1000
        r.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        r.max_ms = lat[-1] * 1000
    return r


# ---------------------------------------------------------------- wrk load generator

WRK_LUA = r"""
local bodies = {%(bodies)s}
local marker = %(marker)s
local reqs = {}
local n = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  errors = 0
  local headers = {%(headers)s}
  for i, b in ipairs(bodies) do
    reqs[i] = wrk.format("POST", %(path)s, headers, b)
  end
  n = math.random(#reqs)
end
function request()
  n = n %% #reqs + 1
  return reqs[n]
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, marker, 1, true)
     or string.find(body, "Fault>", 1, true) or string.find(body, "<fault>", 1, true) then
    errors = errors + 1
  end
end
function done(summary, latency, requests)
  local e = 0
  for _, t in ipairs(threads) do e = e + t:get("errors") end
  local s = summary.errors
  io.write(string.format("WRKRESULT %%d %%d %%d %%d %%d %%d\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e + s.connect + s.read + s.write + s.timeout))
end
"""


def _lua_str(b: bytes | str) -> str:
    s = b.decode() if isinstance(b, bytes) else b
    return "[==[" + s + "]==]"


def run_wrk(
    streams: list[Stream], port: int, duration: float, tmp: Path, timeout_ms: int = 5000
) -> list[Result]:
    procs = []
    for k, s in enumerate(streams):
        script = tmp / f"wrk-{k}.lua"
        script.write_text(
            WRK_LUA
            % {
                "bodies": ", ".join(_lua_str(b) for b in s.bodies),
                "marker": _lua_str(s.marker),
                "headers": ", ".join(
                    f"[ {_lua_str(h)} ] = {_lua_str(v)}" for h, v in s.headers.items()
                ),
                "path": _lua_str(s.path),
            }
        )
        cmd = [
            "wrk",
            "-t1",
            f"-c{s.connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            f"{max(1, timeout_ms // 1000)}s",
            "-s",
            str(script),
            f"http://{HOST}:{port}",
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    results = []
    outputs = []
    try:
        for p in procs:
            try:
                out, _ = p.communicate(timeout=duration + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:  # interrupted: no wrk outlives us
                p.kill()
                p.wait()
    for s, out in zip(streams, outputs, strict=True):
        line = next((x for x in out.decode().splitlines() if x.startswith("WRKRESULT")), None)
        if line is None:
            raise RuntimeError(f"wrk failed for {s.name}:\n{out.decode()}")
        reqs, dur_us, p50, p99, mx, errs = (int(x) for x in line.split()[1:])
        results.append(
            Result(
                s.name,
                requests=reqs,
                errors=errs,
                seconds=dur_us / 1e6,
                p50_ms=p50 / 1000,
                p99_ms=p99 / 1000,
                max_ms=mx / 1000,
            )
        )
    return results


# ---------------------------------------------------------------- setup and cleanup


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _pids_matching(pred: Any) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if pred(int(d), cmd):
                out.append(int(d))
    return out


class CpuMeter:
    """CPU used by the server's processes and by PostgreSQL backends serving
    the benchmark database (Linux /proc), and the machine's total busy time,
    so figures can be judged against whatever else runs on the machine."""

    def __init__(self, server_pgid: int, db_name: str) -> None:
        self.pgid = server_pgid
        self.db = db_name

    def _machine(self) -> tuple[float, float]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return (sum(v) - idle) / os.sysconf("SC_CLK_TCK"), sum(v) / os.sysconf("SC_CLK_TCK")

    def snapshot(self) -> dict[str, Any]:
        def in_group(pid: int, _cmd: str) -> bool:
            try:
                return os.getpgid(pid) == self.pgid
            except OSError:
                return False

        server = _pids_matching(in_group)
        pg = _pids_matching(lambda _p, cmd: cmd.startswith("postgres:") and self.db in cmd)
        busy, total = self._machine()
        return {
            "server": {p: _proc_cpu(p) for p in server},
            "pg": {p: _proc_cpu(p) for p in pg},
            "busy": busy,
            "total": total,
        }

    @staticmethod
    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        def used(kind: str) -> float:
            return sum(v - a[kind].get(p, 0.0) for p, v in b[kind].items())

        per_proc = sorted(
            (v - a["server"].get(p, 0.0) for p, v in b["server"].items()), reverse=True
        )
        srv = sum(per_proc)
        return {
            "server": srv,
            "pg": used("pg"),
            "busy": b["busy"] - a["busy"],
            "total": b["total"] - a["total"],
            # how evenly the server's processes shared the work (master included)
            "split": [round(x / srv, 2) for x in per_proc if srv and x / srv >= 0.01],
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.db_name = f"pba_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        base = args.postgres.rsplit("/", 1)[0]
        self.db_url = f"{base}/{self.db_name}"
        self.tmp = Path(tempfile.mkdtemp(prefix="pba-bench-"))
        self.server: subprocess.Popen[bytes] | None = None
        self.port = args.port or free_port()
        self.db_created = False
        from cryptography.fernet import Fernet

        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PBA_SECRET_KEY": Fernet.generate_key().decode(),
            "PBA_DATABASE_URL": self.db_url,
        }
        self.env.pop("PBA_CONFIG", None)
        if args.profile_dir:
            self.env["PBA_PROFILE_DIR"] = str(Path(args.profile_dir).resolve())

    # -- database

    def _admin(self) -> Any:
        import psycopg

        dsn = self.args.postgres.replace("postgresql+psycopg://", "postgresql://")
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)

    def create_db(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True

    def drop_db(self) -> None:
        if not self.db_created:
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        self.db_created = False

    # -- server

    def cli(self, *argv: str, timeout: float = 120) -> str:
        cmd = [sys.executable, "-m", "pba_server.cli", *argv]
        r = subprocess.run(
            cmd, cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def start_server(self) -> None:
        a = self.args
        cmd = [
            sys.executable,
            "-m",
            "pba_server.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(a.workers),
        ]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        self.log = open(self.tmp / "server.log", "wb")  # noqa: SIM115 - closed in stop_server
        self.server = subprocess.Popen(
            cmd,
            cwd=self.tmp,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers die with it
        )
        deadline = time.monotonic() + 60
        url = f"http://{HOST}:{self.port}/health"
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError("server exited:\n" + self.server_log())
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become healthy in 60 s:\n" + self.server_log())

    def server_log(self, tail: int = 40) -> str:
        try:
            lines = (self.tmp / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def stop_server(self) -> None:
        if self.server is None:
            return
        try:
            pgid = os.getpgid(self.server.pid)
        except ProcessLookupError:
            pgid = None
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)  # any worker left behind
            except ProcessLookupError:
                pass
        if self.server.poll() is None:
            self.server.wait(5)
        self.server = None
        self.log.close()

    def cleanup(self) -> None:
        try:
            self.stop_server()
        finally:
            try:
                self.drop_db()
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- seeding

    def proxy(self, login: str, password: str) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(
            f"http://{login}:{password}@{HOST}:{self.port}/xmlrpc", allow_none=True
        )

    def seed(self) -> tuple[str, list[int]]:
        p = self.proxy(ADMIN_LOGIN, ADMIN_PASSWORD)
        ids = []
        for i in range(self.args.accounts):
            acc = p.AccountCreate(
                {
                    "type": "customer_business",
                    "name": f"Seed customer {i}",
                    "country": "DE",
                    "contacts": [
                        {
                            "kind": "billing",
                            "name": f"Billing {i}",
                            "email": f"billing{i}@example.com",
                            "phone": "+49 30 1234567",
                        }
                    ],
                }
            )
            ids.append(int(acc["id"]))
        auth = f"{ADMIN_LOGIN}:{ADMIN_PASSWORD}"
        if self.args.auth == "apikey":
            who = p.WhoAmI({})
            key = p.ApiKeyCreate({"user_id": who["user_id"], "name": "bench"})
            auth = f"{key['key_id']}:{key['secret']}"
        p("close")()
        return auth, ids

    # -- running

    def loadgen(self) -> str:
        want = self.args.loadgen
        if want == "auto":
            return "wrk" if shutil.which("wrk") else "python"
        if want == "wrk" and not shutil.which("wrk"):
            raise SystemExit("wrk is not installed (apt-get install wrk), use --loadgen python")
        return str(want)

    def drive(self, streams: list[Stream], duration: float) -> list[Result]:
        a = self.args
        if self.loadgen() == "wrk":
            return run_wrk(streams, self.port, duration, self.tmp)
        return run_python(streams, self.port, duration, a.max_requests, a.procs)


def print_table(rows: list[tuple[str, Result]], out: Any = sys.stdout) -> None:
    print(
        f"{'scenario':<14} {'stream':<14} {'conns':>5} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'requests':>9} {'errors':>6}  "
        f"{'srv cpu ms/req':>14} {'pg cpu ms/req':>13} {'machine busy':>12}  srv cpu split",
        file=out,
    )
    per_scen: dict[str, int] = {}
    for scen, r in rows:
        per_scen[scen] = per_scen.get(scen, 0) + r.requests
    for scen, r in rows:
        n = max(1, per_scen[scen])
        c = r.cpu
        busy = c.get("busy", 0) / c["total"] if c.get("total") else 0.0
        print(
            f"{scen:<14} {r.name:<14} {r.conns:>5} {r.rps:>8.0f} "
            f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.max_ms:>7.1f} {r.requests:>9} {r.errors:>6}  "
            f"{1000 * c.get('server', 0) / n:>14.2f} {1000 * c.get('pg', 0) / n:>13.2f} "
            f"{busy:>11.0%}  {'/'.join(f'{x:.0%}' for x in c.get('split', []))}",
            file=out,
        )
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=0, help="threads per worker (server default)")
    ap.add_argument(
        "--duration", type=float, default=10.0, help="seconds per scenario (default 10)"
    )
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (default 2)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    ap.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument(
        "--procs", type=int, default=2, help="load generator processes (python, default 2)"
    )
    ap.add_argument(
        "--max-requests",
        type=int,
        default=500_000,
        help="cap on requests per stream and scenario (python load generator; "
        "wrk is bounded by --duration alone)",
    )
    ap.add_argument("--accounts", type=int, default=50, help="accounts seeded for AccountGet")
    ap.add_argument("--auth", choices=("password", "apikey"), default="password")
    ap.add_argument(
        "--postgres",
        default=os.environ.get(
            "PBA_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of the PostgreSQL server (a database is created next to it)",
    )
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument(
        "--profile-dir",
        metavar="DIR",
        help="let each server worker write a cProfile file here (slows it down)",
    )
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if "@127.0.0.1" not in args.postgres and "@localhost" not in args.postgres:
        ap.error("this benchmark only talks to a PostgreSQL on 127.0.0.1")
    if not 0 < args.duration <= 600:
        ap.error("--duration must be in (0, 600]")

    def on_term(_sig: int, _frm: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    rows: list[tuple[str, Result]] = []
    try:
        bench.create_db()
        bench.cli("migrate", "--database", bench.db_url)
        bench.cli(
            "init",
            "--database",
            bench.db_url,
            "--admin-login",
            ADMIN_LOGIN,
            "--admin-password",
            ADMIN_PASSWORD,
        )
        bench.start_server()
        auth, ids = bench.seed()
        gen = bench.loadgen()
        print(
            f"load average before: {os.getloadavg()[0]:.2f} (other work on this machine "
            "skews the figures; CPU per request below is less sensitive to it)",
        )
        print(
            f"pba-server bench: workers={args.workers} threads={args.threads or 'default'} "
            f"connections={args.connections} duration={args.duration:g}s loadgen={gen} "
            f"auth={args.auth} cpus={os.cpu_count()} db={bench.db_name}",
            flush=True,
        )
        if args.warmup > 0:
            # every worker pays one scrypt check, SQLAlchemy compiles its statements
            warm = make_streams("mixed", auth, ids, max(4, args.connections))
            bench.drive(warm, args.warmup)
        assert bench.server is not None
        meter = CpuMeter(os.getpgid(bench.server.pid), bench.db_name)
        for scen in scenarios:
            streams = make_streams(scen, auth, ids, args.connections)
            before = meter.snapshot()
            results = bench.drive(streams, args.duration)
            cpu = CpuMeter.diff(before, meter.snapshot())
            for st, r in zip(streams, results, strict=True):
                r.conns = st.connections
                r.cpu = cpu
                rows.append((scen, r))
            print(f"  done: {scen}", file=sys.stderr, flush=True)
        print()
        print_table(rows)
        if "mixed" in scenarios:
            mixed = [r for s, r in rows if s == "mixed"]
            total = sum(r.rps for r in mixed)
            print(f"mixed total: {total:.0f} req/s")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "workers": args.workers,
                        "threads": args.threads,
                        "connections": args.connections,
                        "loadgen": gen,
                        "results": [
                            {
                                "scenario": s,
                                "stream": r.name,
                                "rps": round(r.rps, 1),
                                "p50_ms": round(r.p50_ms, 2),
                                "p99_ms": round(r.p99_ms, 2),
                                "requests": r.requests,
                                "errors": r.errors,
                                "cpu_s": r.cpu,
                            }
                            for s, r in rows
                        ],
                    },
                    indent=2,
                )
            )
        errors = sum(r.errors for _s, r in rows)
        if errors:
            print(f"{errors} failed requests; server log tail:\n{bench.server_log(20)}")
        return 1 if errors else 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
