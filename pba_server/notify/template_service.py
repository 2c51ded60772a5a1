"""Notification template operations: an account's own templates for its
subtree (set, show what applies, list, delete) and previews of them."""

from __future__ import annotations

import json

from sqlalchemy import select

from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import InvalidState, NotFound, ValidationError
from pba_server.core.operations import ANY_ROLE, operation
from pba_server.core.scope import account_path, visible_path
from pba_server.events.catalog import EVENT_TYPES
from pba_server.events.models import NotificationTemplate
from pba_server.notify import notifications, templates
from pba_server.notify.templates import check_language
from pba_server.notify.types import (
    NotificationTemplateInfo,
    NotificationTemplatePage,
    RenderedNotification,
)

TEMPLATE_EDITORS = frozenset({"technical", "sales"})


# ---------------------------------------------------------------- templates


def _template_info(row: NotificationTemplate) -> NotificationTemplateInfo:
    return NotificationTemplateInfo(
        event_type=row.event_type,
        language=row.language,
        subject=row.subject,
        text_body=row.text_body,
        account_id=row.account_id,
        html_body=row.html_body,
        updated_at=row.updated_at,
    )


def _known_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise ValidationError("event_type", f"unknown event type {event_type!r}")
    return event_type


def _need_jinja() -> None:
    if not templates.jinja_available():
        raise InvalidState("notification templates need Jinja2, which is not installed")


def _check_template(event_type: str, tpl: templates.Template) -> templates.Rendered:
    """Render against a sample payload: a template that does not compile, names
    something unknown or reaches for Python internals is refused here."""
    ctx = templates.context_for(
        event_type,
        templates.sample_payload(event_type),
        brand="Sample Hosting",
        account={"id": 42, "name": "Sample Customer", "number": "C-42"},
        event={"id": 1, "occurred_at": "2026-01-01T00:00:00+00:00"},
    )
    try:
        return templates.render_template(tpl, ctx)
    except templates.TemplateError as exc:
        field, _, message = str(exc).partition(": ")  # "<part>: <why>"
        raise ValidationError(field, message) from None


@operation("NotificationTemplateSet", roles=TEMPLATE_EDITORS, mutating=True)
def notification_template_set(
    ctx: CallContext,
    *,
    event_type: str,
    subject: str,
    text_body: str,
    language: str = "en",
    html_body: str | None = None,
    account_id: int | None = None,
) -> NotificationTemplateInfo:
    """Set ``account_id``'s own template (default: the caller's account) for an
    event type and language. It applies to notifications about that account and
    every account below it, unless one of those sets its own: a reseller's
    template overrides its parent's for the reseller's customers only.
    Templates are Jinja2, rendered in a sandbox; they see ``event``, ``data``
    (the payload), ``account`` and ``brand``. A template that does not render
    against a sample payload is refused."""
    _need_jinja()
    _known_type(event_type)
    check_language(language)
    if not subject.strip():
        raise ValidationError("subject", "must not be empty")
    for field, value in (("subject", subject), ("text_body", text_body), ("html_body", html_body)):
        if value is not None and len(value) > 65536:
            raise ValidationError(field, "must be at most 65536 characters")
    _check_template(event_type, templates.Template(subject, text_body, html_body))
    owner = account_id if account_id is not None else ctx.principal.account_id
    path = account_path(ctx, owner)
    row = ctx.session.scalar(
        select(NotificationTemplate)
        .where(
            NotificationTemplate.account_id == owner,
            NotificationTemplate.event_type == event_type,
            NotificationTemplate.language == language,
        )
        .with_for_update()
    )
    if row is None:
        row = NotificationTemplate(
            account_id=owner, account_path=path, event_type=event_type, language=language
        )
        ctx.session.add(row)
    row.subject, row.text_body, row.html_body = subject, text_body, html_body
    row.updated_at = ctx.now()
    ctx.session.flush()
    audit.record(
        ctx,
        "notification_template",
        row.id,
        path,
        {"set": {"event_type": event_type, "language": language, "subject": subject}},
    )
    return _template_info(row)


@operation("NotificationTemplateGet", roles=ANY_ROLE)
def notification_template_get(
    ctx: CallContext, *, event_type: str, language: str = "en", account_id: int | None = None
) -> NotificationTemplateInfo:
    """The template that applies to notifications about ``account_id`` (default:
    the caller's account): its own, the nearest one set above it, or the
    built-in default (``account_id`` empty). A language without a template
    falls back to English. Only templates of visible accounts are shown: a
    customer sees the default where its parent set one."""
    _known_type(event_type)
    check_language(language)
    path = visible_path(ctx, account_id)
    tpl, row = notifications.resolve(ctx.session, event_type, language, path)
    if row is not None and ctx.principal.sees(row.account_path):
        return _template_info(row)
    if row is not None:  # set above the caller: show what applies, not whose it is
        return NotificationTemplateInfo(
            event_type=event_type,
            language=row.language,
            subject=tpl.subject,
            text_body=tpl.text,
            html_body=tpl.html,
        )
    return NotificationTemplateInfo(
        event_type=event_type,
        language=templates.DEFAULT_LANGUAGE,
        subject=tpl.subject,
        text_body=tpl.text,
        html_body=tpl.html,
    )


@operation("NotificationTemplateList", roles=ANY_ROLE)
def notification_template_list(
    ctx: CallContext,
    *,
    account_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> NotificationTemplatePage:
    """The templates ``account_id`` (default: the caller's account) set itself."""
    owner = account_id if account_id is not None else ctx.principal.account_id
    account_path(ctx, owner)
    q = (
        select(NotificationTemplate)
        .where(NotificationTemplate.account_id == owner)
        .order_by(NotificationTemplate.event_type, NotificationTemplate.language)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return NotificationTemplatePage([_template_info(r) for r in rows], total, offset, limit)


@operation("NotificationTemplateDelete", roles=TEMPLATE_EDITORS, mutating=True)
def notification_template_delete(
    ctx: CallContext, *, event_type: str, language: str = "en", account_id: int | None = None
) -> bool:
    """Remove an account's own template: the one above it (or the default) applies again."""
    owner = account_id if account_id is not None else ctx.principal.account_id
    path = account_path(ctx, owner)
    row = ctx.session.scalar(
        select(NotificationTemplate).where(
            NotificationTemplate.account_id == owner,
            NotificationTemplate.event_type == event_type,
            NotificationTemplate.language == language,
        )
    )
    if row is None:
        raise NotFound(f"account {owner} has no {language} template for {event_type}")
    ctx.session.delete(row)
    audit.record(
        ctx,
        "notification_template",
        row.id,
        path,
        {"deleted": {"event_type": event_type, "language": language}},
    )
    return True


@operation("NotificationTemplatePreview", roles=ANY_ROLE)
def notification_template_preview(
    ctx: CallContext,
    *,
    event_type: str,
    language: str = "en",
    account_id: int | None = None,
    payload: str | None = None,
) -> RenderedNotification:
    """Render the template that applies to ``account_id`` (default: the caller's
    account) with ``payload`` (a JSON object; default: sample values for the
    documented fields), branded as that account's customers would see it."""
    _need_jinja()
    _known_type(event_type)
    check_language(language)
    acc_id = account_id if account_id is not None else ctx.principal.account_id
    path = account_path(ctx, acc_id)
    data = templates.sample_payload(event_type)
    if payload is not None:
        try:
            given = json.loads(payload)
        except ValueError:
            raise ValidationError("payload", "must be a JSON object") from None
        if not isinstance(given, dict):
            raise ValidationError("payload", "must be a JSON object")
        data.update(given)
    tpl, _row = notifications.resolve(ctx.session, event_type, language, path)
    _seller_id, seller = notifications.brand(ctx.session, path)
    try:
        out = templates.render(
            event_type,
            data,
            brand=seller,
            template=tpl,
            account=notifications.account_fields(ctx.session, acc_id),
            event={"id": 0, "occurred_at": ctx.now().isoformat()},
        )
    except templates.TemplateError as exc:
        raise ValidationError("payload", str(exc)) from None
    return RenderedNotification(subject=out.subject, text_body=out.text, html_body=out.html)
