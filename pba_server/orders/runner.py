"""The workflow thread of each app, and waking it after a commit that made an
order due (:func:`kick`). What a pass runs is the engine's
:func:`pba_server.orders.engine.run_orders`, handed in by :func:`start`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from pba_server.core.db import UnitOfWork
from pba_server.core.runtime import Runtime

log = logging.getLogger("pba.orders")

RunPass = Callable[[Engine, Runtime], int]


class _Runner:
    """The workflow thread of one app (one engine): runs a pass when kicked
    after a commit, and every ``idle_seconds``."""

    def __init__(
        self, engine: Engine, runtime: Runtime, idle_seconds: float, run_pass: RunPass
    ) -> None:
        self.engine, self.runtime, self.idle_seconds = engine, runtime, idle_seconds
        self.run_pass = run_pass
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pba-orders", daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.idle_seconds)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.run_pass(self.engine, self.runtime)
            except Exception:
                log.exception("order runner pass failed")


_runners: dict[int, _Runner] = {}  # by id(engine): each app its own thread
_runners_lock = threading.Lock()


def kick(engine: Any) -> None:
    """Wake the engine's runner thread (after a commit that made an order due)."""
    r = _runners.get(id(engine))
    if r is not None:
        r.wake.set()


def kick_after_commit(uow: UnitOfWork) -> None:
    engine = uow.session.get_bind()
    uow.after_commit(lambda: kick(engine))


def start(engine: Engine, runtime: Runtime, idle_seconds: float, run_pass: RunPass) -> None:
    """Run ``run_pass`` on the engine's thread, woken by :func:`kick`."""
    with _runners_lock:
        if id(engine) in _runners:
            return
        # each thread has its own stop flag: a start right after a stop must not
        # revive the stopped thread (it would keep running on its old engine)
        r = _runners[id(engine)] = _Runner(engine, runtime, idle_seconds, run_pass)
    r.thread.start()


def stop(engine: Engine) -> None:
    """Stop the engine's runner thread (it finishes the step it is running)."""
    with _runners_lock:
        r = _runners.pop(id(engine), None)
    if r is not None:
        r.stopping.set()
        r.wake.set()
