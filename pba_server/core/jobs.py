"""What a feature declares about its periodic work, and what a job is given.

Each feature that has periodic work has a ``jobs.py`` whose
``jobs(settings)`` returns :class:`JobSpec` values; ``bootstrap`` collects
them and hands them to the scheduler, which runs each once per interval
across all server processes. No feature imports the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.runtime import Runtime


@dataclass
class JobContext:
    """One run of a job: its unit of work (committed by the scheduler after
    ``run`` returns), the clock and the app's runtime."""

    uow: UnitOfWork
    clock: Clock
    runtime: Runtime

    @property
    def session(self) -> Session:
        return self.uow.session

    @property
    def engine(self) -> Engine:
        bind = self.uow.session.get_bind()
        assert isinstance(bind, Engine)
        return bind


@dataclass(frozen=True)
class JobSpec:
    name: str
    interval: timedelta
    run: Callable[[JobContext], str]  # returns a one-line summary
