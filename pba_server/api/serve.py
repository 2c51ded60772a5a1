"""Running the Twisted server: one process, or a master with N worker processes
sharing one listening socket (the kernel spreads connections among them)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import task, threads
from twisted.python.threadpool import ThreadPool

from pba_server.api.admission import ParseGate
from pba_server.api.http import PbaSite, build_root
from pba_server.bootstrap import App
from pba_server.core.db import release_idle
from pba_server.scheduler.jobs import Ticker
from pba_server.sdk.guard import REQUEST_POOL_NAME

log = logging.getLogger("pba")
reactor: Any = _reactor


def make_site(app: App, pool: ThreadPool, reactor_: Any = None) -> PbaSite:
    s = app.settings
    gate = ParseGate(s.parse_concurrency_per_address, s.parse_concurrency, reactor_)
    root = build_root(app.soap, app.xmlrpc, app.health, pool, reactor_, s.public_url or None, gate)
    return PbaSite(
        root,
        s.max_request_bytes,
        request_timeout=s.request_timeout_seconds,
        max_connections=s.max_connections,
    )


def start_pool(threads: int, reactor_: Any = None) -> ThreadPool:
    r = reactor_ or reactor
    # the name marks request threads: plugin calls count their waits (sdk.guard)
    pool = ThreadPool(minthreads=2, maxthreads=threads, name=REQUEST_POOL_NAME)
    pool.start()
    r.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool


def _tls_factory(app: App, site: PbaSite) -> Any:
    return tls_factory(site, app.settings.tls_cert, app.settings.tls_key)


def tls_factory(site: PbaSite, cert_file: str, key_file: str) -> Any:
    """``site`` wrapped in TLS (1.2 or newer, Twisted's default minimum).

    ``cert_file`` may be a full chain (leaf first, then intermediates, as
    certbot's fullchain.pem): every certificate in it is sent, or clients
    that only know the root could not verify the leaf.
    """
    try:
        from twisted.internet import ssl
        from twisted.protocols.tls import TLSMemoryBIOFactory
    except ImportError as exc:  # pyOpenSSL, from the Twisted[tls] extra
        raise SystemExit(f"the TLS listener needs pyOpenSSL (Twisted[tls]): {exc}") from None

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with open(cert_file, "rb") as f:
        certs = x509.load_pem_x509_certificates(f.read())
    with open(key_file, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    # cryptography objects, not pyOpenSSL's X509 (deprecated in pyOpenSSL 26)
    options = ssl.CertificateOptions(privateKey=key, certificate=certs[0], extraCertChain=certs[1:])

    class LimitedTLSFactory(TLSMemoryBIOFactory):  # type: ignore[misc]
        # the site's connection limit counts TLS connections too, and is
        # checked here: TLS would wrap the site's refusal (None) and fail
        def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
            return None if site.full() else super().buildProtocol(addr)

    return LimitedTLSFactory(options, False, site)


class ListenError(OSError):
    """The address is taken, not ours, or not valid: said in one line."""


# Linux spreads new connections evenly over the listening sockets of one
# SO_REUSEPORT group. With one socket shared by all workers, the worker that
# wakes first accepts a whole burst, and keep-alive clients stay on it: in the
# benchmark all 8 connections landed on one of 3 workers.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _profile_worker(pool: ThreadPool, directory: str) -> None:
    """``PBA_PROFILE_DIR``: cProfile (CPU time per thread) the reactor and every call thread of this
    worker, written to ``DIR/worker-PID.prof`` at shutdown (for benchmarks)."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    local = threading.local()
    lock = threading.Lock()
    orig = pool.callInThreadWithCallback

    def call(on_result: Any, func: Any, *a: Any, **kw: Any) -> None:
        def run(*a: Any, **kw: Any) -> Any:
            prof = getattr(local, "prof", None)
            if prof is None:
                prof = local.prof = cProfile.Profile(time.thread_time)
                with lock:
                    profiles.append(prof)
            prof.enable()
            try:
                return func(*a, **kw)
            finally:
                prof.disable()

        orig(on_result, run, *a, **kw)

    pool.callInThreadWithCallback = call  # type: ignore[method-assign,assignment]
    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    main.enable()

    def dump() -> None:
        main.disable()
        with lock:
            stats = pstats.Stats(profiles[0])
            for p in profiles[1:]:
                stats.add(p)
        os.makedirs(directory, exist_ok=True)
        stats.dump_stats(os.path.join(directory, f"worker-{os.getpid()}.prof"))

    reactor.addSystemEventTrigger("after", "shutdown", dump)


# called once the listening sockets are bound, with the port and TLS port
# they are bound to (the "listening on" line is printed only then)
OnListening = Callable[[int, int], None]


def run_worker(
    app: App, fds: list[int] | None = None, on_listening: OnListening | None = None
) -> None:
    """Serve in this process: on inherited sockets (worker) or new ones."""
    s = app.settings
    socks: list[socket.socket] = []
    if fds:
        plain_fd = fds[0]
        tls_fd = fds[1] if len(fds) > 1 else None
    else:
        socks.append(listen_socket(s.host, s.port))
        plain_fd = socks[0].fileno()
        tls_fd = None
        if s.tls_port:
            socks.append(listen_socket(s.host, s.tls_port))
            tls_fd = socks[1].fileno()
    # The pool's threads are not daemons: started before a failure, they
    # would keep the process alive forever, so bind first and stop on error.
    pool = start_pool(s.threads)
    if os.environ.get("PBA_PROFILE_DIR"):
        _profile_worker(pool, os.environ["PBA_PROFILE_DIR"])
    try:
        site = make_site(app, pool)
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        ports = [reactor.adoptStreamPort(plain_fd, family, site)]
        if tls_fd is not None:
            ports.append(reactor.adoptStreamPort(tls_fd, family, _tls_factory(app, site)))
    except BaseException:
        pool.stop()
        raise
    if on_listening is not None and socks:
        on_listening(socks[0].getsockname()[1], socks[1].getsockname()[1] if tls_fd else 0)
    for sk in socks:
        sk.close()  # the reactor holds its own duplicate
    if fds:
        _stop_with_master(os.getppid())
    reactor.suggestThreadPoolSize(4)
    ticker = Ticker(app.engine, app.runtime, app.jobs)
    ticker.start()
    reactor.addSystemEventTrigger("before", "shutdown", ticker.stop)
    _release_idle_connections(app)
    # What start-up built lives as long as the process: keep it out of the
    # collector's way (and out of the final collection, which otherwise makes
    # a SIGTERM take seconds).
    gc.freeze()
    reactor.callWhenRunning(Drain(site, ports).install)
    reactor.run()


def _release_idle_connections(app: App) -> None:
    """Every minute (on a thread: closing connections is I/O), give the
    database back the pool's connections when none was used for
    ``db_pool_idle_seconds``."""
    idle = app.settings.db_pool_idle_seconds
    if idle <= 0:
        return

    def trim() -> Any:
        d = threads.deferToThread(release_idle, app.engine, idle)
        d.addErrback(lambda f: log.warning("releasing idle connections failed: %s", f.value))
        return d

    loop = task.LoopingCall(trim)
    loop.start(min(60.0, float(idle)), now=False)
    reactor.addSystemEventTrigger("before", "shutdown", loop.stop)


# How long a stopping server waits for the calls in flight to answer.
DRAIN_TIMEOUT_S = 10.0


class Drain:
    """SIGTERM or SIGINT: stop accepting connections, let the requests in
    flight answer and their answers go out (up to ``timeout`` seconds), then
    stop the reactor, which closes the remaining (idle) connections. A second
    signal stops at once.

    Twisted's own handlers would stop the reactor at once, and its shutdown
    closes every connection before the calls on the thread pool have
    answered: their work was done, their answers lost."""

    def __init__(self, site: PbaSite, ports: list[Any], timeout: float = DRAIN_TIMEOUT_S) -> None:
        self.site = site
        self.ports = ports
        self.timeout = timeout
        self.deadline: float | None = None

    def install(self) -> None:
        # after Twisted installed its handlers (during startup): ours replace them
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _sig: int, _frame: Any) -> None:
        reactor.callFromThread(self.begin)

    def begin(self) -> None:
        if self.deadline is not None:  # the second signal: do not wait any longer
            self._stop()
            return
        self.deadline = reactor.seconds() + self.timeout
        for port in self.ports:
            port.stopListening()
        if self.site.in_flight:
            log.info("stopping: waiting for %d call(s) in flight", self.site.in_flight)
        self._check()

    def _check(self) -> None:
        assert self.deadline is not None
        # answered is not yet sent: wait until no connection has output queued
        if self.site.in_flight <= 0 and not reactor.getWriters():
            self._stop()
        elif reactor.seconds() >= self.deadline:
            log.warning(
                "stopping: %d call(s) still in flight after %.0f s; closing their connections",
                self.site.in_flight,
                self.timeout,
            )
            self._stop()
        else:
            reactor.callLater(0.05, self._check)

    def _stop(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping
            pass


def _worker_sockets(host: str, port: int, tls_port: int, n: int) -> list[list[socket.socket]]:
    """The listening socket(s) of each of ``n`` workers: on Linux one
    SO_REUSEPORT socket per worker (and port), all bound by the master before
    any worker starts, so connections queue in a backlog until a worker takes
    them, and a restarted worker takes over its predecessor's socket with its
    queue. Elsewhere, one socket shared by all workers."""
    if not REUSE_PORT:
        shared = [listen_socket(host, port)]
        if tls_port:
            shared.append(listen_socket(host, tls_port))
        return [shared] * n
    # An ordinary bind first: it fails, as before, when anything (say another
    # pba-server) holds the port, instead of silently joining its group.
    for p in (port, tls_port) if tls_port else (port,):
        probe = listen_socket(host, p)
        chosen = probe.getsockname()[1]
        probe.close()
        if p == port:
            port = chosen
        else:
            tls_port = chosen
    per_worker: list[list[socket.socket]] = []
    for _ in range(n):
        socks = [listen_socket(host, port, reuse_port=True)]
        if tls_port:
            socks.append(listen_socket(host, tls_port, reuse_port=True))
        per_worker.append(socks)
    return per_worker


def _stop_with_master(master: int) -> None:
    """A worker whose master is gone (killed with SIGKILL) stops instead of lingering."""
    from twisted.internet.task import LoopingCall

    def check() -> None:
        if os.getppid() != master:
            log.warning("worker %d: the master process %d is gone; stopping", os.getpid(), master)
            watch.stop()
            reactor.stop()

    watch = LoopingCall(check)
    watch.start(1.0, now=False)


def run_master(
    argv: list[str],
    settings_workers: int,
    host: str,
    port: int,
    tls_port: int,
    on_listening: OnListening | None = None,
) -> int:
    """Bind, then start ``settings_workers`` copies of this command as workers."""
    worker_socks = _worker_sockets(host, port, tls_port, settings_workers)
    if on_listening is not None:
        # bound and listening: connections wait in the backlog until a worker takes them
        first = worker_socks[0]
        on_listening(first[0].getsockname()[1], first[1].getsockname()[1] if tls_port else 0)
    for socks in worker_socks:
        for sk in socks:
            os.set_inheritable(sk.fileno(), True)

    def cmd(i: int) -> list[str]:
        fds = ",".join(str(sk.fileno()) for sk in worker_socks[i])
        return [sys.executable, "-m", "pba_server.cli", *argv, "--worker-fds", fds]

    def spawn(i: int) -> subprocess.Popen[bytes]:
        pass_fds = tuple(sk.fileno() for sk in worker_socks[i])
        return subprocess.Popen(cmd(i), pass_fds=pass_fds)  # noqa: S603 - our own argv

    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(_sig: int, _frm: Any) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            if c.poll() is None:
                c.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(settings_workers):
        if stopping:  # SIGTERM while starting: start no more
            break
        children.append(spawn(i))
    restarts: list[float] = []
    gave_up = False
    while not stopping:
        time.sleep(0.5)
        for i, c in enumerate(children):
            code = c.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 5 * settings_workers:
                log.error("workers keep dying (last exit %s); giving up", code)
                gave_up = True
                stop(0, None)
                break
            log.warning("worker %d exited with %s; starting a new one", c.pid, code)
            children[i] = spawn(i)
    for c in children:
        try:
            c.wait(timeout=DRAIN_TIMEOUT_S + 5)  # a worker drains its calls first
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    return 1 if gave_up else 0
