"""Periodic work of the provisioning feature: operations that fell due
(retries, polls, ones a crash cut off)."""

from __future__ import annotations

from datetime import timedelta

from pba_server.config import Settings
from pba_server.core.jobs import JobSpec
from pba_server.provisioning import runtime


def jobs(settings: Settings) -> list[JobSpec]:
    return [JobSpec("provisioning-run", timedelta(seconds=30), runtime.job)]
