"""The process's deliverers, one per engine, and the thread that runs them.

A deliverer is registered when the app is built and started by the server's
scheduler; API calls only nudge it after commit (setting an event, never
blocking and never touching the reactor). Without a started thread (tests,
CLI commands) a nudge does nothing and delivery runs when asked.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger("pba.events")


class Runner(Protocol):
    def run_once(self) -> int: ...


class _Loop:
    def __init__(self, runner: Runner, idle_seconds: float) -> None:
        self.runner = runner
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None:
            return
        self.thread = threading.Thread(target=self._run, name="pba-events", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.idle_seconds)
            self.wake.clear()
            try:
                while not self.stopping and self.runner.run_once():
                    pass
            except Exception:
                log.exception("event delivery pass failed")


_loops: dict[int, _Loop] = {}
_lock = threading.Lock()


def register(engine: Any, runner: Runner, idle_seconds: float = 5.0) -> None:
    with _lock:
        old = _loops.get(id(engine))
        if old is not None:
            old.stop()
        _loops[id(engine)] = _Loop(runner, idle_seconds)


def start(engine: Any) -> None:
    """Run the engine's deliverer on its own thread (the server does this)."""
    loop = _loops.get(id(engine))
    if loop is not None:
        loop.start()


def stop(engine: Any) -> None:
    loop = _loops.get(id(engine))
    if loop is not None:
        loop.stop()


def nudge(engine: Any) -> None:
    loop = _loops.get(id(engine))
    if loop is not None and loop.thread is not None:
        loop.wake.set()


def add_seconds(at: datetime, seconds: int) -> datetime:
    return at + timedelta(seconds=seconds)
