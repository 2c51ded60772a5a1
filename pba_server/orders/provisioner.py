"""The seam between orders and the provisioning engine.

The workflow's ``provision`` step calls ``provisioner.provision_subscription``,
``provisioner.request_action`` and ``provisioner.bundle_state`` -- the names
``pba_server.provisioning.api`` provides. :data:`provisioner` is that
module; tests replace it (``set_provisioner``) with a
fake that finishes bundles by calling ``BUNDLE_HOOKS`` as the engine does.
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


# the real engine; its functions match the protocol (action typed as a Literal there)
_ENGINE = cast(Provisioner, provisioning_api)
provisioner: Provisioner = _ENGINE


def set_provisioner(p: Provisioner | None) -> Provisioner:
    """Replace the provisioner (tests); None restores the default. Returns the old one."""
    global provisioner
    old = provisioner
    provisioner = p if p is not None else _ENGINE
    return old


def current() -> Provisioner:
    return provisioner
