"""Values the notify operations take and return (the wire shapes): handlers,
deliveries and notification templates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

HandlerAction = Literal["email", "webhook", "command", "channel"]
HandlerContactKind = Literal["billing", "technical", "administrative"]
DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "cancelled"]


@dataclass
class EventHandlerInfo:
    id: int
    account_id: int
    name: str
    event_types: list[str]
    action: HandlerAction
    enabled: bool
    retry_for_seconds: int
    timeout_seconds: int
    created_at: datetime
    updated_at: datetime
    url: str | None = None
    command: list[str] | None = None
    email_to: str | None = None
    contact_kind: HandlerContactKind | None = None
    language: str = "en"  # of the notification templates an e-mail or channel handler uses
    instance_id: int | None = None  # channel: the notification_channel plugin instance
    recipient: str | None = None  # channel: a fixed address (else contact_kind)
    # the webhook signing secret: returned only by EventHandlerCreate and by
    # EventHandlerUpdate with rotate_secret; stored encrypted
    secret: str | None = None


@dataclass
class EventHandlerPage:
    items: list[EventHandlerInfo]
    total: int
    offset: int
    limit: int


@dataclass
class DeliveryAttemptInfo:
    at: datetime
    ok: bool
    duration_ms: int
    response_code: int | None = None  # HTTP status, command exit code, SMTP reply code
    error: str | None = None


@dataclass
class DeliveryInfo:
    id: int
    event_id: int
    event_type: str
    handler_id: int
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    attempt_log: list[DeliveryAttemptInfo]
    delivered_at: datetime | None = None
    response_code: int | None = None
    last_error: str | None = None


@dataclass
class DeliveryPage:
    items: list[DeliveryInfo]
    total: int
    offset: int
    limit: int


@dataclass
class NotificationTemplateInfo:
    event_type: str
    language: str
    subject: str
    text_body: str
    # the account whose template this is; None for the built-in default
    account_id: int | None = None
    html_body: str | None = None
    updated_at: datetime | None = None


@dataclass
class NotificationTemplatePage:
    items: list[NotificationTemplateInfo]
    total: int
    offset: int
    limit: int


@dataclass
class RenderedNotification:
    subject: str
    text_body: str
    html_body: str | None = None
