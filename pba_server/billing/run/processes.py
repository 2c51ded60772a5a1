"""Worker processes of a billing run: ``workers`` forked processes, each
running the same work (claiming batches with SKIP LOCKED until none is
left), that die with their parent and whose death does not end the run.

- A worker gets what it needs (the work, with the parent's clock and secret
  box) as the arguments of its process, inherited through ``fork``: nothing
  is pickled on the way in and no module global is set.
- A worker exits when its parent dies: ``PR_SET_PDEATHSIG`` (Linux) sends it
  SIGKILL, and a watchdog thread that sees its parent change kills it too
  (other systems, or a parent gone before the worker armed the signal). Its
  open transaction rolls back.
- A worker that dies (killed, out of memory) held at most one batch, in a
  transaction the database rolls back: the batch becomes claimable again.
  The parent logs the loss, counts it in the summary and starts a
  replacement (a bounded number of times), so the run finishes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from sqlalchemy import Engine

from pba_server.billing.run.summary import RunSummary
from pba_server.core.errors import InternalError

log = logging.getLogger("pba.billing_run")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 1.0  # how often a worker's watchdog looks at its parent
TICK_SECONDS = 0.5  # how often the parent reports progress


def die_with_parent(parent_pid: int) -> None:
    """Make this (forked) process end when ``parent_pid`` does."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog does it
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="billing-run-watchdog", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        if os.getppid() != parent_pid:  # re-parented: the parent is gone
            os.kill(os.getpid(), signal.SIGKILL)


def _child(
    send: Connection, parent_pid: int, url: str, work: Callable[[Engine], RunSummary]
) -> None:
    die_with_parent(parent_pid)
    from pba_server.core.db import make_engine

    result: tuple[str, Any]
    engine = make_engine(url, pool_size=2)
    try:
        result = ("ok", work(engine))
    except BaseException as exc:  # handed to the parent, which raises it
        result = ("error", _portable(exc))
    finally:
        engine.dispose()
    send.send(result)
    send.close()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else an InternalError with its text."""
    try:
        pickle.dumps(exc)
    except Exception:
        return InternalError(f"billing run worker failed: {type(exc).__name__}: {exc}")
    return exc


@dataclass
class _Worker:
    process: Any  # multiprocessing's forked Process
    recv: Connection | None
    answer: tuple[str, Any] | None = None


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def run_processes(
    url: str,
    workers: int,
    work: Callable[[Engine], RunSummary],
    total: RunSummary,
    tick: Callable[[RunSummary, bool], None] | None = None,
    *,
    replacements: int | None = None,
) -> RunSummary:
    """Run ``work(engine)`` in ``workers`` forked processes (each with its own
    engine on ``url``) and add their summaries into ``total``. ``tick(total,
    running)`` is called about every half second. A worker that dies is
    replaced (at most ``replacements`` times, default twice the workers); if
    the last one dies with none left to replace it, InternalError."""
    ctx = multiprocessing.get_context("fork")
    parent = os.getpid()
    left = 2 * workers if replacements is None else replacements
    live: list[_Worker] = []
    error: BaseException | None = None

    def start() -> None:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_child, args=(send, parent, url, work), name="billing-run-worker", daemon=True
        )
        p.start()
        send.close()
        live.append(_Worker(p, recv))

    try:
        for _ in range(workers):
            start()
        while live:
            waitables: dict[Any, _Worker] = {}
            for w in live:
                waitables[w.process.sentinel] = w
                if w.recv is not None:
                    waitables[w.recv] = w
            ready = wait(list(waitables), timeout=TICK_SECONDS)
            for obj in ready:
                w = waitables[obj]
                if obj is w.recv:
                    _read(w)
            for w in [w for w in live if not w.process.is_alive()]:
                live.remove(w)
                w.process.join()
                if w.recv is not None:
                    _read(w)
                if w.answer is None:
                    total.workers_lost += 1
                    log.warning(
                        "billing run: worker process %s ended (%s) before finishing; its "
                        "batch rolled back and is billed by the others",
                        w.process.pid,
                        _how(w.process.exitcode),
                    )
                    if left > 0:
                        left -= 1
                        start()
                    elif not live and error is None:
                        error = InternalError(
                            f"billing run: {total.workers_lost} worker process(es) died; "
                            "what they had claimed is still due: run it again"
                        )
                elif w.answer[0] == "ok":
                    total.add(w.answer[1])
                elif error is None:
                    error = w.answer[1]
            if tick is not None:
                tick(total, bool(live))
    finally:
        for w in live:  # the parent is leaving (an error, an interrupt): so are they
            w.process.kill()
            w.process.join()
            if w.recv is not None:
                w.recv.close()
    if error is not None:
        raise error
    return total


def _read(w: _Worker) -> None:
    """Take the worker's answer if it sent one (EOF: it died without)."""
    assert w.recv is not None
    try:
        if w.recv.poll():
            w.answer = w.recv.recv()
    except (EOFError, OSError):
        pass
    w.recv.close()
    w.recv = None
