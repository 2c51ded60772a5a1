"""Seams between provisioning and the features around it.

Filled at import time by the features that plug in; read by the provisioning
engine. Nothing here touches the database by itself.

- :data:`BUILTIN_MODULES` -- modules that are part of the server rather than
  plugins, because they need the database to build their request: the domains
  feature registers ``"domains"`` (a template whose ``module`` is
  ``domains`` is provisioned through the TLD's registrar instance).
- :data:`BUNDLE_HOOKS` -- called when a bundle of operations finishes (all
  done, or failed finally and rolled back), in the transaction that records
  it: the orders feature advances its workflow from here.
- :data:`USAGE_SINKS` -- called with the usage a module's ``sync`` read back
  from the platform: the usage feature records it like ``UsageReport``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pba_server.core.context import CallContext
    from pba_server.sdk.provisioning import ModuleResult, ProcessingModule


@dataclass(frozen=True)
class BuiltinModule:
    """A module implemented by a server feature.

    ``build(ctx, service)`` runs inside a transaction before the call and
    returns the object to call (outside any transaction); ``on_result(ctx,
    service, action, result)`` runs in the transaction that records the
    result. ``service`` is a ``pba_server.provisioning.models.Service`` row.
    ``capabilities`` are the actions it supports (others become manual tasks).
    """

    name: str
    capabilities: frozenset[str]
    build: Callable[[CallContext, Any], ProcessingModule]
    on_result: Callable[[CallContext, Any, str, ModuleResult], None] | None = None


@dataclass(frozen=True)
class BundleOutcome:
    bundle_id: int
    action: str  # create | suspend | resume | change | prolong | delete
    subscription_id: int | None
    order_id: int | None
    state: Literal["done", "failed"]
    reason: str | None = None  # why it failed (the final operation's message)


BUILTIN_MODULES: dict[str, BuiltinModule] = {}
BUNDLE_HOOKS: list[Callable[[CallContext, BundleOutcome], None]] = []
USAGE_SINKS: list[Callable[[CallContext, int, dict[str, Decimal], datetime], None]] = []


def register_builtin(module: BuiltinModule) -> None:
    BUILTIN_MODULES[module.name] = module
