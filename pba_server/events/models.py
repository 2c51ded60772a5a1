"""The outbox, handlers and the delivery log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, UtcDateTime

# BigInteger ids on PostgreSQL, INTEGER on SQLite (whose ROWID alias must be INTEGER)
BigId = BigInteger().with_variant(Integer(), "sqlite")
# subtree queries are prefix matches; PostgreSQL's btree needs this for LIKE 'p%'
_PATTERN_OPS = {"account_path": "varchar_pattern_ops"}


class Event(Base):
    """The transactional outbox: written in the transaction of the change.

    ``seq`` is given after commit, under one lock, in the order events become
    visible, so polling ``seq > cursor`` never skips an event that committed
    late with a lower ``id``.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_account_path",
            "account_path",
            postgresql_ops={"account_path": "varchar_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    account_id: Mapped[int] = mapped_column(Integer)
    account_path: Mapped[str] = mapped_column(String(512))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(64), default="")


class EventHandler(Base):
    """An account's subscription to event types in its own subtree, with an action."""

    __tablename__ = "event_handlers"
    __table_args__ = (
        Index(
            "ix_event_handlers_account_path",
            "account_path",
            postgresql_ops={"account_path": "varchar_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    account_path: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    event_types: Mapped[str] = mapped_column(Text)  # space-separated names; "*" = all
    action: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(2048))
    secret_enc: Mapped[str | None] = mapped_column(Text)
    command: Mapped[str | None] = mapped_column(Text)  # JSON argv
    email_to: Mapped[str | None] = mapped_column(String(255))
    contact_kind: Mapped[str | None] = mapped_column(String(16))
    # a notification_channel plugin instance (action "channel")
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("plugin_instances.id"))
    recipient: Mapped[str | None] = mapped_column(String(255))  # channel address (phone, room)
    language: Mapped[str] = mapped_column(String(8), default="en")  # of e-mail templates
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    retry_for_seconds: Mapped[int] = mapped_column(Integer)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Delivery(Base):
    """One event for one handler: written with the event, sent after commit."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "handler_id"),
        Index("ix_event_deliveries_handler_status", "handler_id", "status"),
        # the deliverer's scan for due work
        Index("ix_event_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    handler_id: Mapped[int] = mapped_column(ForeignKey("event_handlers.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    give_up_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    response_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """Every attempt, kept: when, how long, what came back."""

    __tablename__ = "event_delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("event_deliveries.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class NotificationTemplate(Base):
    """An account's own template for one event type and language (overrides above it)."""

    __tablename__ = "notification_templates"
    __table_args__ = (UniqueConstraint("account_id", "event_type", "language"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    account_path: Mapped[str] = mapped_column(String(512), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
