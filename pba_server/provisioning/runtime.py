"""Running operations in the background.

Two ways, both calling :func:`pba_server.provisioning.engine.run_pending`
(which claims each operation exactly once across processes):

- the ``provisioning-run`` job (every 30 s, declared in ``provisioning/jobs.py``):
  picks up retries, polls and operations of other processes;
- a worker thread per process, woken after each commit that created
  operations, so a new order's services start within seconds. Started by the
  server's scheduler (:func:`start`); without it (tests, CLI) a kick does
  nothing and tests call ``run_pending`` themselves.

Module calls happen on these threads, never on the reactor.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.provisioning import engine as prov_engine

log = logging.getLogger("pba.provisioning")


class _Worker:
    def __init__(self, engine: Engine, clock: Clock, idle_seconds: float) -> None:
        self.engine = engine
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="pba-provisioning", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.idle_seconds)
            self.wake.clear()
            try:
                while not self.stopping and prov_engine.run_pending(self.engine, self.clock):
                    pass
            except Exception:
                log.exception("provisioning pass failed")


_workers: dict[int, _Worker] = {}
_lock = threading.Lock()


def _kick(engine: Engine) -> None:
    w = _workers.get(id(engine))
    if w is not None and w.thread is not None:
        w.wake.set()


def start(engine: Engine, clock: Clock, idle_seconds: float = 10.0) -> None:
    """Run due operations on a thread of this process, woken after commits."""
    with _lock:
        w = _workers.get(id(engine))
        if w is None:
            w = _workers[id(engine)] = _Worker(engine, clock, idle_seconds)
        w.start()
    prov_engine.set_kicker(_kick)


def stop(engine: Engine) -> None:
    with _lock:
        w = _workers.pop(id(engine), None)
    if w is not None:
        w.stopping = True
        w.wake.set()


def job(uow: UnitOfWork, clock: Clock) -> str:
    """The ``provisioning-run`` job: operations that fell due (retries, polls,
    crashed ones). Uses its own transactions: it commits before each call."""
    bind = uow.session.get_bind()
    assert isinstance(bind, Engine)
    n = prov_engine.run_pending(bind, clock)
    return f"{n} operation(s) run"
