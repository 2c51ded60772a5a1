"""What every service function receives: the unit of work, who calls, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pba_server.core.auth import Principal
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork

if TYPE_CHECKING:
    from pba_server.core.secrets import SecretBox


@dataclass
class CallContext:
    uow: UnitOfWork
    principal: Principal
    clock: Clock
    secrets: SecretBox
    operation: str = ""
    correlation_id: str = ""
    source_address: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def session(self):  # type: ignore[no-untyped-def]
        return self.uow.session

    def now(self) -> datetime:
        return self.clock.now()
