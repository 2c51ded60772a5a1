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

# Transitional (issue 15): the order engine builds its step contexts without
# the runtime today, so for those contexts the provisioner is this fallback.
# Delete it (and set_fallback) once orders/engine.py passes its runtime to
# order_ctx and calls current(ctx).
_fallback: Provisioner = ENGINE


def set_fallback(p: Provisioner | None) -> Provisioner:
    """Tests only, transitional: the provisioner of contexts without a runtime;
    None restores the engine. Returns the old one."""
    global _fallback
    old = _fallback
    _fallback = p if p is not None else ENGINE
    return old


def current(ctx: CallContext | None = None) -> Provisioner:
    """The provisioner of the app that runs ``ctx``: its runtime's port."""
    if ctx is not None and ctx.runtime is not None:
        return ctx.runtime.port(Provisioner)
    return _fallback
