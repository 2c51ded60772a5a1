"""One app instance's runtime: its settings, clock, secrets and ports.

``bootstrap.build_app`` builds one :class:`Runtime` per app and hands it to
everything that acts: each API call's :class:`~pba_server.core.context.CallContext`
and each job's :class:`~pba_server.core.jobs.JobContext` carry it. Code reads
settings from it, never from module globals set at start-up, so two app
instances in one process (as the tests start) never share state.

A *port* is how a lower feature causes something a feature above it owns (a
subscription change that needs an order): the lower package defines a
``Protocol``, the package above implements it, ``bootstrap`` wires the
implementation in with :meth:`Runtime.provide`, and the lower code asks for
it with :meth:`Runtime.port`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pba_server.config import Settings
from pba_server.core.clock import Clock

if TYPE_CHECKING:
    from pba_server.core.secrets import SecretBox

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    secrets: SecretBox
    ports: dict[type, Any] = field(default_factory=dict)

    def provide(self, kind: type[T], impl: T) -> None:
        """Wire ``impl`` as this app's implementation of the port ``kind``."""
        self.ports[kind] = impl

    def port(self, kind: type[T]) -> T:
        try:
            return cast(T, self.ports[kind])
        except KeyError:
            raise RuntimeError(
                f"port {kind.__qualname__} is not wired (bootstrap.build_app wires every port)"
            ) from None
