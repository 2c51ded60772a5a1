"""The seam between orders and the provisioning engine.

The workflow's ``provision`` step calls ``provisioner.provision_subscription``,
``provisioner.request_action`` and ``provisioner.bundle_state`` -- the names
``pba_server.provisioning.api`` provides. :data:`provisioner` loads that
module lazily on first use; tests replace it (``set_provisioner``) with a
fake that finishes bundles by calling ``BUNDLE_HOOKS`` as the engine does.
"""

from __future__ import annotations

import importlib
from datetime import date
from typing import Any, Protocol

from sqlalchemy.orm import Session

from pba_server.core.context import CallContext


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


class _Lazy:
    """Forwards to ``pba_server.provisioning.api``."""

    def __init__(self) -> None:
        self._target: Any = None

    def _get(self) -> Any:
        if self._target is None:
            self._target = importlib.import_module("pba_server.provisioning.api")
        return self._target

    def provision_subscription(
        self, ctx: CallContext, subscription_id: int, *, order_id: int | None = None
    ) -> int | None:
        r = self._get().provision_subscription(ctx, subscription_id, order_id=order_id)
        return None if r is None else int(r)

    def request_action(
        self,
        ctx: CallContext,
        subscription_id: int,
        action: str,
        *,
        until: date | None = None,
        order_id: int | None = None,
        reason: str = "",
    ) -> int | None:
        r = self._get().request_action(
            ctx, subscription_id, action, until=until, order_id=order_id, reason=reason
        )
        return None if r is None else int(r)

    def bundle_state(self, session: Session, bundle_id: int) -> tuple[str, str | None]:
        state, reason = self._get().bundle_state(session, bundle_id)
        return str(state), reason


provisioner: Provisioner = _Lazy()


def set_provisioner(p: Provisioner | None) -> Provisioner:
    """Replace the provisioner (tests); None restores the default. Returns the old one."""
    global provisioner
    old = provisioner
    provisioner = p if p is not None else _Lazy()
    return old


def current() -> Provisioner:
    return provisioner
