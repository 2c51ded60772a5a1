"""Event handler operations and their deliveries: who is told about which
events (webhook, e-mail, command, notification channel), and what was sent."""

from __future__ import annotations

import json
import os
import secrets as _secrets
from typing import Annotated
from urllib.parse import urlsplit

from sqlalchemy import func, select, text

from pba_server.accounts.models import Account
from pba_server.core import audit, netpolicy, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, InvalidState, NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.paging import check_page
from pba_server.core.schema import MinLen
from pba_server.core.scope import account_path, visible_path
from pba_server.events import runtime
from pba_server.events.catalog import EVENT_TYPES
from pba_server.events.models import Delivery, DeliveryAttempt, Event, EventHandler
from pba_server.notify.templates import check_language
from pba_server.notify.types import (
    DeliveryAttemptInfo,
    DeliveryInfo,
    DeliveryPage,
    DeliveryStatus,
    EventHandlerInfo,
    EventHandlerPage,
    HandlerAction,
    HandlerContactKind,
)
from pba_server.payments.models import PluginInstance
from pba_server.sdk import loader

INTEGRATORS = frozenset({"technical"})  # besides admin
MAX_RETRY_SECONDS = 7 * 24 * 3600
MAX_TIMEOUT = 300


# ---------------------------------------------------------------- handlers


def _handler_info(h: EventHandler, secret: str | None = None) -> EventHandlerInfo:
    return EventHandlerInfo(
        id=h.id,
        account_id=h.account_id,
        name=h.name,
        event_types=h.event_types.split(),
        action=h.action,  # type: ignore[arg-type]
        enabled=h.enabled,
        retry_for_seconds=h.retry_for_seconds,
        timeout_seconds=h.timeout_seconds,
        created_at=h.created_at,
        updated_at=h.updated_at,
        url=h.url,
        command=json.loads(h.command) if h.command else None,
        email_to=h.email_to,
        contact_kind=h.contact_kind,  # type: ignore[arg-type]
        language=h.language,
        secret=secret,
        instance_id=h.instance_id,
        recipient=h.recipient,
    )


def _get_handler(ctx: CallContext, handler_id: int) -> EventHandler:
    h = ctx.session.get(EventHandler, handler_id)
    if h is None or h.deleted_at is not None or not ctx.principal.sees(h.account_path):
        raise NotFound(f"event handler {handler_id} not found")
    return h  # type: ignore[no-any-return]


def _event_types(types: list[str]) -> str:
    if not types:
        raise ValidationError("event_types", "name at least one event type (or *)")
    for i, t in enumerate(types):
        if t == "*" or t in EVENT_TYPES:
            continue
        if t.endswith(".*") and any(n.startswith(t[:-1]) for n in EVENT_TYPES):
            continue
        raise ValidationError(f"event_types[{i}]", f"unknown event type {t!r} (see EventTypeList)")
    return " ".join(dict.fromkeys(types))


def _url(url: str | None) -> str:
    if not url:
        raise ValidationError("url", "is required for a webhook")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("url", "must be an http:// or https:// URL with a host")
    if len(url) > 2048:
        raise ValidationError("url", "must be at most 2048 characters")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationError("url", "has an invalid port") from None
    try:
        netpolicy.resolve(parts.hostname, port)
    except netpolicy.RefusedAddress as exc:
        raise ValidationError("url", str(exc)) from None
    except (OSError, UnicodeError):
        pass  # does not resolve now: checked again at every delivery
    return url.strip()


def _channel_instance(ctx: CallContext, handler_path: str, instance_id: int | None) -> int:
    """A notification channel instance the handler's account may use: its own
    or one of an account above it, active."""
    if instance_id is None:
        raise ValidationError("instance_id", "is required for a channel handler")
    row = ctx.session.execute(
        select(PluginInstance, Account.path)
        .join(Account, Account.id == PluginInstance.account_id)
        .where(PluginInstance.id == instance_id)
    ).first()
    if row is None or not handler_path.startswith(row[1]):
        raise ValidationError("instance_id", f"no plugin instance {instance_id} of yours")
    inst = row[0]
    loaded = loader.plugins().get(inst.plugin)
    if loaded is None or loaded.info is None or loaded.info.kind != "notification_channel":
        raise ValidationError(
            "instance_id", f"instance {instance_id} is not a notification channel"
        )
    if inst.status != "active":
        raise InvalidState(f"plugin instance {instance_id} is disabled")
    return int(inst.id)


def _recipient(recipient: str | None, contact_kind: str | None) -> None:
    if (recipient is None) == (contact_kind is None):
        raise ValidationError("recipient", "give either recipient or contact_kind")
    if recipient is not None and not 1 <= len(recipient.strip()) <= 255:
        raise ValidationError("recipient", "must be 1 to 255 characters")


def _command(ctx: CallContext, command: list[str] | None) -> str:
    if not command or not command[0]:
        raise ValidationError("command", "is required: the executable and its arguments")
    # Running a program on the server is the provider's privilege, not a reseller's.
    is_provider = ctx.session.execute(
        text("SELECT type FROM accounts WHERE id = :id"), {"id": ctx.principal.account_id}
    ).scalar()
    if is_provider != "provider" or "admin" not in ctx.principal.roles:
        raise Forbidden("only the provider's administrators may run commands on events")
    if not os.path.isabs(command[0]):
        raise ValidationError("command[0]", "must be an absolute path to an executable")
    return json.dumps(command)


def _email(email_to: str | None, contact_kind: str | None) -> None:
    if (email_to is None) == (contact_kind is None):
        raise ValidationError("email_to", "give either email_to or contact_kind")
    if email_to is not None and ("@" not in email_to or len(email_to) > 255):
        raise ValidationError("email_to", f"not a valid e-mail address: {email_to!r}")


def _limits(retry_for_seconds: int, timeout_seconds: int) -> None:
    if not 0 <= retry_for_seconds <= MAX_RETRY_SECONDS:
        raise ValidationError("retry_for_seconds", f"must be between 0 and {MAX_RETRY_SECONDS}")
    if not 1 <= timeout_seconds <= MAX_TIMEOUT:
        raise ValidationError("timeout_seconds", f"must be between 1 and {MAX_TIMEOUT}")


def _new_secret() -> str:
    return "whsec_" + _secrets.token_urlsafe(32)


@operation("EventHandlerCreate", roles=INTEGRATORS, mutating=True)
def event_handler_create(
    ctx: CallContext,
    *,
    name: str,
    event_types: Annotated[list[str], MinLen(1)],
    action: HandlerAction,
    account_id: int | None = None,
    url: str | None = None,
    secret: str | None = None,
    command: list[str] | None = None,
    email_to: str | None = None,
    contact_kind: HandlerContactKind | None = None,
    language: str = "en",
    retry_for_seconds: int = 86400,
    timeout_seconds: int = 10,
    enabled: bool = True,
    instance_id: int | None = None,
    recipient: str | None = None,
) -> EventHandlerInfo:
    """Subscribe ``account_id`` (default: the caller's account) to event types
    raised anywhere in its subtree.

    ``webhook`` POSTs the event as JSON to ``url``, signed with ``secret``
    (generated when omitted; returned only here). ``email`` sends a
    notification to ``email_to`` or to the event account's contacts of
    ``contact_kind``. ``command`` runs an executable (absolute path, then its
    arguments) with the JSON on standard input; provider administrators only.
    ``channel`` sends the notification through a notification channel plugin
    instance (``instance_id``, the account's own or one above it) to
    ``recipient`` or to the event account's contacts of ``contact_kind``.
    A webhook URL must not point into private networks (loopback, RFC 1918,
    link-local) unless the server's ``webhook_allow_private`` setting is on.
    Failures are retried with exponential backoff for ``retry_for_seconds``,
    then the delivery is failed; each attempt may take ``timeout_seconds``.
    """
    path = account_path(ctx, account_id if account_id is not None else ctx.principal.account_id)
    name = name.strip()
    if not name or len(name) > 255:
        raise ValidationError("name", "must be 1 to 255 characters")
    _limits(retry_for_seconds, timeout_seconds)
    now = ctx.now()
    h = EventHandler(
        account_id=account_id if account_id is not None else ctx.principal.account_id,
        account_path=path,
        name=name,
        event_types=_event_types(event_types),
        action=action,
        language=check_language(language),
        enabled=enabled,
        retry_for_seconds=retry_for_seconds,
        timeout_seconds=timeout_seconds,
        created_at=now,
        updated_at=now,
    )
    shown: str | None = None
    if action == "webhook":
        h.url = _url(url)
        shown = secret or _new_secret()
        if len(shown) < 16:
            raise ValidationError("secret", "must be at least 16 characters")
        h.secret_enc = ctx.secrets.encrypt(shown)
    elif action == "command":
        h.command = _command(ctx, command)
    elif action == "channel":
        h.instance_id = _channel_instance(ctx, path, instance_id)
        _recipient(recipient, contact_kind)
        h.recipient = recipient.strip() if recipient is not None else None
        h.contact_kind = contact_kind
    else:
        _email(email_to, contact_kind)
        h.email_to, h.contact_kind = email_to, contact_kind
    ctx.session.add(h)
    ctx.session.flush()
    info = _handler_info(h)
    audit.record(ctx, "event_handler", h.id, path, {"created": info})
    return _handler_info(h, shown)


@operation("EventHandlerList", roles=ANY_ROLE)
def event_handler_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> EventHandlerPage:
    """Handlers of ``account_id`` (default: the caller's) and of the accounts below it."""
    path = visible_path(ctx, account_id)
    q = (
        select(EventHandler)
        .where(
            EventHandler.account_path.startswith(path, autoescape=True),
            EventHandler.deleted_at.is_(None),
        )
        .order_by(EventHandler.id)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return EventHandlerPage([_handler_info(h) for h in rows], total, offset, limit)


@operation("EventHandlerUpdate", roles=INTEGRATORS, mutating=True)
def event_handler_update(
    ctx: CallContext,
    *,
    handler_id: int,
    name: str | None = None,
    event_types: list[str] | None = None,
    url: str | None = None,
    command: list[str] | None = None,
    email_to: str | None = None,
    contact_kind: HandlerContactKind | None = None,
    retry_for_seconds: int | None = None,
    timeout_seconds: int | None = None,
    enabled: bool | None = None,
    language: str | None = None,
    rotate_secret: bool = False,
    instance_id: int | None = None,
    recipient: str | None = None,
) -> EventHandlerInfo:
    """Change a handler; omitted fields stay. ``rotate_secret`` gives a webhook a
    new signing secret, returned once. Changes apply to events raised afterwards
    (and to pending deliveries' next attempt)."""
    h = _get_handler(ctx, handler_id)
    before = _handler_info(h)
    if name is not None:
        name = name.strip()
        if not name or len(name) > 255:
            raise ValidationError("name", "must be 1 to 255 characters")
        h.name = name
    if event_types is not None:
        h.event_types = _event_types(event_types)
    _limits(
        retry_for_seconds if retry_for_seconds is not None else h.retry_for_seconds,
        timeout_seconds if timeout_seconds is not None else h.timeout_seconds,
    )
    if retry_for_seconds is not None:
        h.retry_for_seconds = retry_for_seconds
    if timeout_seconds is not None:
        h.timeout_seconds = timeout_seconds
    if enabled is not None:
        h.enabled = enabled
    if language is not None:
        h.language = check_language(language)
    if url is not None:
        if h.action != "webhook":
            raise ValidationError("url", f"a {h.action} handler has no url")
        h.url = _url(url)
    if command is not None:
        if h.action != "command":
            raise ValidationError("command", f"a {h.action} handler has no command")
        h.command = _command(ctx, command)
    if h.action == "channel":
        if email_to is not None:
            raise ValidationError("email_to", "a channel handler sends no e-mail")
        if instance_id is not None:
            h.instance_id = _channel_instance(ctx, h.account_path, instance_id)
        if recipient is not None or contact_kind is not None:
            _recipient(recipient, contact_kind)
            h.recipient = recipient.strip() if recipient is not None else None
            h.contact_kind = contact_kind
    elif instance_id is not None or recipient is not None:
        raise ValidationError("instance_id", f"a {h.action} handler has no channel")
    elif email_to is not None or contact_kind is not None:
        if h.action != "email":
            raise ValidationError("email_to", f"a {h.action} handler sends no e-mail")
        _email(email_to, contact_kind)
        h.email_to, h.contact_kind = email_to, contact_kind
    shown = None
    if rotate_secret:
        if h.action != "webhook":
            raise ValidationError("rotate_secret", "only webhooks have a secret")
        shown = _new_secret()
        h.secret_enc = ctx.secrets.encrypt(shown)
    changes = audit.diff(vars_of(before), vars_of(_handler_info(h)))
    if rotate_secret:
        changes["secret"] = "rotated"  # noqa: S105 - what the audit log says, not a secret
    if changes:
        h.updated_at = ctx.now()
        audit.record(ctx, "event_handler", h.id, h.account_path, changes)
    return _handler_info(h, shown)


def vars_of(info: EventHandlerInfo) -> dict[str, object]:
    return {k: v for k, v in vars(info).items() if k not in ("updated_at", "secret")}


@operation("EventHandlerDelete", roles=INTEGRATORS, mutating=True)
def event_handler_delete(ctx: CallContext, *, handler_id: int) -> bool:
    """Remove a handler; its pending deliveries are cancelled, its log is kept."""
    h = _get_handler(ctx, handler_id)
    h.deleted_at = ctx.now()
    h.enabled = False
    for d in ctx.session.scalars(
        select(Delivery).where(Delivery.handler_id == h.id, Delivery.status == "pending")
    ):
        d.status = "cancelled"
        d.next_attempt_at = None
    audit.record(ctx, "event_handler", h.id, h.account_path, {"deleted": True})
    return True


# ---------------------------------------------------------------- deliveries


def _delivery_infos(ctx: CallContext, rows: list[tuple[Delivery, str]]) -> list[DeliveryInfo]:
    ids = [d.id for d, _t in rows]
    log: dict[int, list[DeliveryAttemptInfo]] = {i: [] for i in ids}
    if ids:
        for a in ctx.session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        ):
            log[a.delivery_id].append(
                DeliveryAttemptInfo(
                    at=a.at,
                    ok=a.ok,
                    duration_ms=a.duration_ms,
                    response_code=a.response_code,
                    error=a.error,
                )
            )
    return [
        DeliveryInfo(
            id=d.id,
            event_id=d.event_id,
            event_type=etype,
            handler_id=d.handler_id,
            status=d.status,  # type: ignore[arg-type]
            attempts=d.attempts,
            created_at=d.created_at,
            next_attempt_at=d.next_attempt_at,
            attempt_log=log[d.id],
            delivered_at=d.delivered_at,
            response_code=d.response_code,
            last_error=d.last_error,
        )
        for d, etype in rows
    ]


@operation("DeliveryList", roles=ANY_ROLE)
def delivery_list(
    ctx: CallContext,
    *,
    handler_id: int | None = None,
    account_id: int | None = None,
    event_id: int | None = None,
    status: DeliveryStatus | None = None,
    offset: int = 0,
    limit: int = 100,
) -> DeliveryPage:
    """Deliveries of the handlers of ``account_id``'s subtree (default: the
    caller's), or of one handler, with every attempt; newest first."""
    check_page(offset, limit)
    q = select(Delivery, Event.type).join(Event, Event.id == Delivery.event_id)
    if handler_id is not None:
        h = ctx.session.get(EventHandler, handler_id)
        if h is None or not ctx.principal.sees(h.account_path):
            raise NotFound(f"event handler {handler_id} not found")
        q = q.where(Delivery.handler_id == handler_id)
    else:
        path = visible_path(ctx, account_id)
        q = q.join(EventHandler, EventHandler.id == Delivery.handler_id).where(
            EventHandler.account_path.startswith(path, autoescape=True)
        )
    if event_id is not None:
        q = q.where(Delivery.event_id == event_id)
    if status is not None:
        q = q.where(Delivery.status == status)
    total = ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = [
        (d, t)
        for d, t in ctx.session.execute(q.order_by(Delivery.id.desc()).offset(offset).limit(limit))
    ]
    return DeliveryPage(items=_delivery_infos(ctx, rows), total=total, offset=offset, limit=limit)


@operation("DeliveryRetry", roles=INTEGRATORS, mutating=True)
def delivery_retry(ctx: CallContext, *, delivery_id: int) -> DeliveryInfo:
    """Send a failed or cancelled delivery again now, with a fresh retry window."""
    row = ctx.session.execute(
        select(Delivery, Event.type, EventHandler)
        .join(Event, Event.id == Delivery.event_id)
        .join(EventHandler, EventHandler.id == Delivery.handler_id)
        .where(Delivery.id == delivery_id)
        .with_for_update(of=Delivery)
    ).first()
    if row is None or not ctx.principal.sees(row[2].account_path):
        raise NotFound(f"delivery {delivery_id} not found")
    d, etype, h = row
    if d.status not in ("failed", "cancelled"):
        raise InvalidState(f"delivery {d.id} is {d.status}; only failed or cancelled ones retry")
    if h.deleted_at is not None:
        raise InvalidState(f"event handler {h.id} was deleted")
    now = ctx.now()
    audit.record(
        ctx, "event_delivery", d.id, h.account_path, {"status": {"from": d.status, "to": "pending"}}
    )
    d.status = "pending"
    d.next_attempt_at = now
    d.give_up_at = now + (d.give_up_at - d.created_at)
    d.last_error = None
    engine = ctx.session.get_bind()
    ctx.uow.after_commit(lambda: runtime.nudge(engine))
    return _delivery_infos(ctx, [(d, etype)])[0]
