"""Helpers for the end-to-end story tests (stories 1 and 7) that drive the
real background runners synchronously: the orders runner, the provisioning
engine (the ``script`` module with a real executable) and the scheduler jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pba_server.orders import engine as orders_engine
from pba_server.provisioning import api as prov


def script(tmp_path: Path, name: str = "platform.py") -> tuple[str, Path]:
    """A provider's provisioning script supporting create, suspend, resume,
    delete...: it logs each action (``<action> <service id>``) and answers
    with the platform id. Returns (executable, log path)."""
    log = tmp_path / f"{name}.log"
    path = tmp_path / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "req = json.load(sys.stdin)\n"
        f"open({str(log)!r}, 'a').write(req['action'] + ' ' + str(req['service_id']) + '\\n')\n"
        "print(json.dumps({'platform_id': 'srv-' + str(req['service_id'])}))\n"
    )
    path.chmod(0o755)
    return str(path), log


def actions(log: Path) -> list[str]:
    """The actions the platform was asked for, in order."""
    if not log.exists():
        return []
    return [ln.split()[0] for ln in log.read_text().splitlines()]


def drive(env: Any, rounds: int = 30) -> int:
    """Run the orders runner and the provisioning engine until neither has
    anything due (what the background threads do, without waiting)."""
    total = 0
    for _ in range(rounds):
        n = orders_engine.run_orders(env.app.engine, env.app.runtime)
        n += prov.run_pending(env.app.engine, env.app.runtime)
        total += n
        if n == 0:
            return total
    raise AssertionError("the runners did not settle")


def run_jobs(env: Any) -> list[str]:
    """The scheduler's due jobs, now (``run_due``); fails the test if one failed."""
    from sqlalchemy import select

    from pba_server.core.db import UnitOfWork
    from pba_server.scheduler.jobs import run_due
    from pba_server.scheduler.models import ScheduledJob

    ran = run_due(env.app.engine, env.app.runtime, env.app.jobs)
    with UnitOfWork(env.app.engine) as uow:
        failed = [
            (j.name, j.last_error)
            for j in uow.session.scalars(select(ScheduledJob).where(ScheduledJob.name.in_(ran)))
            if j.last_status != "ok"
        ]
    assert failed == [], failed
    return ran
