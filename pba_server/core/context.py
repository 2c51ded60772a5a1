"""What every service function receives: the unit of work, who calls, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pba_server.core.auth import Principal
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork

if TYPE_CHECKING:
    from pba_server.core.runtime import Runtime
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
    # the app instance's settings and ports (bootstrap); None only in unit
    # tests that build a context by hand and read no setting
    runtime: Runtime | None = None

    @property
    def rt(self) -> Runtime:
        """The runtime, which code that reads settings or ports requires."""
        if self.runtime is None:
            raise RuntimeError("this call context has no runtime (bootstrap.build_app gives one)")
        return self.runtime

    @property
    def session(self):  # type: ignore[no-untyped-def]
        return self.uow.session

    def now(self) -> datetime:
        return self.clock.now()


def system_context(
    uow: UnitOfWork,
    clock: Clock,
    *,
    account_id: int,
    account_path: str,
    operation: str,
    secrets: SecretBox | None = None,
    runtime: Runtime | None = None,
) -> CallContext:
    """A context for work the server does on its own (jobs, workflows): it acts
    as an admin of ``account_id`` (the owner of the work), logged as
    ``system:<operation>`` in the audit log."""
    box = secrets or (runtime.secrets if runtime is not None else None)
    if box is None:
        raise RuntimeError("a system context needs the app's runtime or its secret box")
    principal = Principal(
        user_id=0,
        login=f"system:{operation}",
        account_id=account_id,
        account_path=account_path,
        roles=frozenset({"admin"}),
        via="system",
    )
    return CallContext(
        uow=uow,
        principal=principal,
        clock=clock,
        secrets=box,
        operation=operation,
        runtime=runtime,
    )
