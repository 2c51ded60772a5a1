"""Values the provisioning operations take and return (the wire shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pba_server.payments.types import SettingValue

ServiceStatus = Literal["pending", "provisioning", "active", "suspended", "failed", "deleted"]
OperationStatus = Literal["pending", "running", "done", "failed", "manual"]
OperationAction = Literal["create", "suspend", "resume", "change", "prolong", "delete", "sync"]
TaskStatus = Literal["open", "assigned", "completed", "rejected"]
# operation: a provisioning operation handed to a person; registrar_balance:
# top up the prepaid balance at a registrar (stands alone)
TaskKind = Literal["operation", "registrar_balance"]


@dataclass
class ServiceValue:
    name: str
    value: str


@dataclass
class ProcessingModuleInfo:
    instance_id: int
    account_id: int
    plugin: str
    name: str
    status: Literal["active", "disabled"]
    department_id: int | None
    max_services: int | None
    use_for_new_orders: bool
    services: int  # live services on it (not failed or deleted)
    capabilities: list[str] = field(default_factory=list)
    settings: list[SettingValue] = field(default_factory=list)
    secret_settings_set: list[str] = field(default_factory=list)


@dataclass
class ProcessingModulePage:
    items: list[ProcessingModuleInfo]
    total: int
    offset: int
    limit: int


@dataclass
class ServiceInfo:
    id: int
    account_id: int
    subscription_id: int | None
    template_id: int
    module: str
    instance_id: int | None
    status: ServiceStatus
    platform_id: str | None
    data: list[ServiceValue]
    parameters: list[ServiceValue]
    created_at: datetime
    updated_at: datetime


@dataclass
class ServicePage:
    items: list[ServiceInfo]
    total: int
    offset: int
    limit: int


@dataclass
class OperationLogInfo:
    attempt: int
    at: datetime
    kind: str
    message: str


@dataclass
class OperationInfo:
    id: int
    service_id: int
    subscription_id: int | None
    account_id: int
    bundle_id: int | None
    module: str
    instance_id: int | None
    action: OperationAction
    status: OperationStatus
    rollback: bool
    attempts: int
    failures: int
    next_attempt_at: datetime | None
    message: str | None
    task_id: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    log: list[OperationLogInfo] = field(default_factory=list)


@dataclass
class OperationPage:
    items: list[OperationInfo]
    total: int
    offset: int
    limit: int


@dataclass
class TaskInfo:
    """A manual task. The operation fields are set for ``kind`` operation
    only; ``instance_id`` is the plugin instance concerned (the registrar of
    a registrar_balance task, the module instance of an operation's service)."""

    id: int
    kind: TaskKind
    subject: str  # one line: what to do
    owner_id: int  # the account whose staff does it
    department_id: int | None
    assignee_id: int | None
    status: TaskStatus
    reason: str
    result: list[ServiceValue]
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    operation_id: int | None = None
    action: OperationAction | None = None
    service_id: int | None = None
    subscription_id: int | None = None
    account_id: int | None = None  # the service's account
    instance_id: int | None = None


@dataclass
class TaskPage:
    items: list[TaskInfo]
    total: int
    offset: int
    limit: int


@dataclass
class DepartmentInfo:
    id: int
    account_id: int
    name: str
    member_user_ids: list[int]
    created_at: datetime


@dataclass
class DepartmentPage:
    items: list[DepartmentInfo]
    total: int
    offset: int
    limit: int
