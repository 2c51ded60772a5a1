"""Tables of the provisioning feature.

- ``departments`` / ``department_members``: who does manual tasks (users of
  the department's owner account).
- ``processing_instances``: what a plugin instance of kind
  ``processing_module`` has beyond ``plugin_instances`` (department, maximum
  number of services, "use for new orders").
- ``services``: one per subscription and template, on one module instance.
- ``provisioning_bundles``: operations that succeed or fail together.
- ``provisioning_operations``: every call to a module, committed (running)
  before the module is called; ``provisioning_operation_log``: its failures.
- ``provisioning_tasks``: work for a person: an operation handed over, or a
  task standing alone (a registrar's balance to top up).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, UtcDateTime


class Department(Base):
    __tablename__ = "departments"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DepartmentMember(Base):
    __tablename__ = "department_members"

    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)


class ProcessingInstance(Base):
    """The provisioning side of a ``processing_module`` plugin instance."""

    __tablename__ = "processing_instances"

    instance_id: Mapped[int] = mapped_column(ForeignKey("plugin_instances.id"), primary_key=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    max_services: Mapped[int | None] = mapped_column(Integer)  # None: no limit
    use_for_new_orders: Mapped[bool] = mapped_column(Boolean)


class Service(Base):
    __tablename__ = "services"
    __table_args__ = (Index("ix_services_instance_status", "instance_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("service_templates.id"))
    module: Mapped[str] = mapped_column(String(128))  # plugin or builtin module name
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("plugin_instances.id"))
    # pending | provisioning | active | suspended | failed | deleted
    status: Mapped[str] = mapped_column(String(16))
    platform_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)  # JSON object of str -> str
    parameters: Mapped[str] = mapped_column(Text)  # JSON object, the order parameters
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Bundle(Base):
    __tablename__ = "provisioning_bundles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vendor_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # None when the bundle spans several subscriptions (one order)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    order_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # running | rolling_back | done | failed
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProvisioningOperation(Base):
    """One call (or series of calls, same key) to a module for a service."""

    __tablename__ = "provisioning_operations"
    __table_args__ = (Index("ix_provisioning_operations_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("provisioning_bundles.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    # pending | running | done | failed | manual
    status: Mapped[str] = mapped_column(String(16))
    rollback: Mapped[bool] = mapped_column(Boolean)  # a delete undoing a failed bundle
    attempts: Mapped[int] = mapped_column(Integer)  # calls made
    failures: Mapped[int] = mapped_column(Integer)  # retryable failures so far
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # of the running call
    # renewed by the worker while the call runs; a running operation whose
    # lease expired lost its worker (a crash) and is claimed again at once
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    until: Mapped[str | None] = mapped_column(String(10))  # prolong: ISO date
    reason: Mapped[str | None] = mapped_column(Text)  # why it was requested
    message: Mapped[str | None] = mapped_column(Text)  # the last result's message
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OperationLogEntry(Base):
    __tablename__ = "provisioning_operation_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("provisioning_operations.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    # retryable | final | in_progress | manual | crashed | info | busy
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class Task(Base):
    """Work a person does by hand: an operation handed over (``kind``
    ``operation``), or a task standing alone (``registrar_balance``: top up
    the prepaid balance at a registrar, ``instance_id`` names its instance)."""

    __tablename__ = "provisioning_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # operation | registrar_balance
    operation_id: Mapped[int | None] = mapped_column(
        ForeignKey("provisioning_operations.id"), unique=True
    )
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("plugin_instances.id"), index=True)
    subject: Mapped[str] = mapped_column(String(255))  # one line: what to do
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16))  # open | assigned | completed | rejected
    reason: Mapped[str] = mapped_column(Text)  # why it is a task
    result: Mapped[str | None] = mapped_column(Text)  # JSON object of what was entered
    reject_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
