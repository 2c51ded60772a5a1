"""Running operations in the background.

Two ways, both calling :func:`pba_server.provisioning.engine.run_pending`
(which claims each operation exactly once across processes):

- the ``provisioning-run`` job (every 30 s, declared in ``provisioning/jobs.py``):
  picks up retries, polls and operations of other processes;
- a worker thread per app (per engine), woken after each commit that created
  operations, so a new order's services start within seconds, and every
  ``idle_seconds`` (10 s), so an operation whose worker died (its lease
  expired) is recovered within seconds. Started by the server's scheduler
  (:func:`start`); without it (tests, CLI) a kick does nothing and tests call
  ``run_pending`` themselves.

Module calls happen on these threads, never on the reactor.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from pba_server.core.jobs import JobContext
from pba_server.core.runtime import Runtime
from pba_server.provisioning import engine as prov_engine

log = logging.getLogger("pba.provisioning")


class _Worker:
    def __init__(self, engine: Engine, runtime: Runtime, idle_seconds: float) -> None:
        self.engine = engine
        self.runtime = runtime
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
                while not self.stopping and prov_engine.run_pending(self.engine, self.runtime):
                    pass
            except Exception:
                log.exception("provisioning pass failed")


_workers: dict[int, _Worker] = {}  # by id(engine): each app its own thread
_lock = threading.Lock()


def start(engine: Engine, runtime: Runtime, idle_seconds: float = 10.0) -> None:
    """Run due operations on a thread of this process, woken after commits."""
    with _lock:
        w = _workers.get(id(engine))
        if w is None:
            w = _workers[id(engine)] = _Worker(engine, runtime, idle_seconds)
        w.start()
        prov_engine.set_waker(engine, w.wake)


def stop(engine: Engine) -> None:
    with _lock:
        w = _workers.pop(id(engine), None)
        prov_engine.set_waker(engine, None)
    if w is not None:
        w.stopping = True
        w.wake.set()


def job(j: JobContext) -> str:
    """The ``provisioning-run`` job: operations that fell due (retries, polls,
    crashed ones). Uses its own transactions: it commits before each call."""
    n = prov_engine.run_pending(j.engine, j.runtime)
    return f"{n} operation(s) run"
