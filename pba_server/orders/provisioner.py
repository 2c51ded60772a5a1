"""The seam between orders and the provisioning engine.

The workflow's ``provision`` step calls ``provisioner.provision_subscription``,
``provisioner.request_action`` and ``provisioner.bundle_state`` -- the names
``pba_server.provisioning.api`` provides. It is a port on the app's runtime
(``runtime.port(Provisioner)``), wired to that module by ``bootstrap``; tests
replace it on their app's runtime with a fake that finishes bundles by
calling ``BUNDLE_HOOKS`` as the engine does.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol, cast

from sqlalchemy.orm import Session

from pba_server.core.context import CallContext
from pba_server.provisioning import api as provisioning_api


class Provisioner(Protocol):
    def provision_subscription(
        self, ctx: CallContext, subscription_id: int, *, order_id: int | None = None
    ) -> int | None: ...

    def request_action(
        self,
        ctx: CallContext,
        subscription_id: int,
        action: str,
        *,
        until: date | None = None,
        order_id: int | None = None,
        reason: str = "",
    ) -> int | None: ...

    def bundle_state(self, session: Session, bundle_id: int) -> tuple[str, str | None]: ...


# the real engine; its functions match the protocol (action typed as a Literal there).
# bootstrap.build_app wires it: runtime.provide(Provisioner, ENGINE)
ENGINE = cast(Provisioner, provisioning_api)


def current(ctx: CallContext) -> Provisioner:
    """The provisioner of the app that runs ``ctx``: its runtime's port."""
    return ctx.rt.port(Provisioner)
