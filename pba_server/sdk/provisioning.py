"""The ``ProcessingModule`` plugin kind: provisioning services on a platform.

A processing module creates, suspends, resumes, changes, prolongs, deletes and
synchronises services on a third-party platform (a control panel, a VM
manager, an in-house system). The server persists every call as an
*operation* before calling the module, passes the operation's id as
``request.key`` (the module's idempotency key: the same key twice must be the
same request), and records the typed result:

- :class:`Done` -- the platform did it; ``platform_id`` and ``data`` (login
  URL, IP address...) are stored on the service;
- :class:`InProgress` -- accepted, not finished: the server asks again with
  the same request (same key) after ``poll_after`` seconds;
- :class:`RetryableFailure` -- failed for now (platform down, timeout): the
  server retries on its schedule and, after its retry limit, hands the
  operation to a person as a manual task;
- :class:`FinalFailure` -- will never succeed as asked (bad parameters,
  refused): the operation fails; for a bundle being created, the services
  already created are rolled back.

A module declares which actions it supports (``PluginInfo.capabilities``,
names from :data:`ACTIONS`); an action it does not support becomes a manual
task for the instance's department. Anything a module raises other than
:class:`~pba_server.sdk.PluginError` subclasses is treated as a retryable
failure (its message goes to the operation's log).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pba_server.sdk import NotSupported, Plugin, ResultRule

Action = Literal["create", "suspend", "resume", "change", "prolong", "delete", "sync"]
ACTIONS: tuple[Action, ...] = ("create", "suspend", "resume", "change", "prolong", "delete", "sync")


@dataclass(frozen=True)
class ServiceRequest:
    """What a module is asked to do, about which service."""

    key: str  # our operation id: the idempotency key at the platform
    action: Action
    service_id: int
    subscription_id: int | None
    account_id: int
    account_name: str
    service_type: str  # hosting | virtual_server | domain | licence | other
    template: str  # the service template's name
    module_settings: dict[str, str]  # the template's settings for this module
    parameters: dict[str, str]  # the order parameters (hostname, domain, os...)
    limits: dict[str, Decimal]  # resource name -> limit (included + bought)
    platform_id: str | None = None  # the platform's id of the service, once created
    data: dict[str, str] = field(default_factory=dict)  # what earlier results stored
    # for change: the new limits/parameters are in limits/parameters; for
    # prolong: the new end of the paid period, ISO date
    until: str | None = None


@dataclass(frozen=True)
class Done:
    platform_id: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    # sync only: usage read back from the platform, resource name -> quantity
    usage: dict[str, Decimal] = field(default_factory=dict)
    status: Literal["done"] = "done"


@dataclass(frozen=True)
class InProgress:
    poll_after: int = 60  # seconds
    message: str = ""
    status: Literal["in_progress"] = "in_progress"


@dataclass(frozen=True)
class RetryableFailure:
    message: str
    status: Literal["retryable"] = "retryable"


@dataclass(frozen=True)
class FinalFailure:
    message: str
    status: Literal["final"] = "final"


ModuleResult = Done | InProgress | RetryableFailure | FinalFailure


def check_module_result(result: Any, call: Mapping[str, Any]) -> str | None:
    """perform answers one of :data:`ModuleResult`."""
    if not isinstance(result, Done | InProgress | RetryableFailure | FinalFailure):
        return (
            f"perform returned a {type(result).__name__}, not a result (Done, InProgress, "
            "RetryableFailure or FinalFailure)"
        )
    return None


class ProcessingModule(Plugin):
    """A processing module plugin kind. ``info.kind`` is ``processing_module``
    and ``info.capabilities`` names the supported :data:`ACTIONS`.

    Called on a worker thread, never on the reactor; one object per
    configured instance, built with that instance's settings (secrets in
    clear, in memory only).

    Deadline (:attr:`max_call_seconds`): perform 120 s; past it the call is
    a retryable failure (asked again later with the same key). A long job
    answers :class:`InProgress` and is polled instead."""

    max_call_seconds: ClassVar[Mapping[str, float]] = {"perform": 120.0}
    result_rules: ClassVar[Mapping[str, ResultRule]] = {"perform": check_module_result}

    def supports(self, action: Action) -> bool:
        return action in self.info.capabilities

    @abc.abstractmethod
    def perform(self, request: ServiceRequest) -> ModuleResult:
        """Do ``request.action`` for the service. Must be idempotent by
        ``request.key``. Raise :class:`~pba_server.sdk.NotSupported` for an
        action the platform cannot do (it becomes a manual task)."""


def unsupported(request: ServiceRequest) -> ModuleResult:
    raise NotSupported(f"{request.action} is not supported")


__all__ = [
    "ACTIONS",
    "Action",
    "Done",
    "FinalFailure",
    "InProgress",
    "ModuleResult",
    "ProcessingModule",
    "RetryableFailure",
    "ServiceRequest",
    "check_module_result",
]
