"""Delivering events after commit: webhooks, e-mail and commands.

One pass (:meth:`Deliverer.run_once`) numbers newly committed events for
polling, then claims the due deliveries and performs them. A delivery is
claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite has one writer) that marks it ``sending`` with a lease, so no two
processes send the same one; the side effect happens outside any
transaction, and its outcome is written in another. A process that dies
while sending leaves the lease to expire and the delivery is sent again
(at least once, never concurrently). Only the oldest unfinished delivery of
each handler is taken, so a handler receives its events in order, and a
receiver that is down holds back that handler's later events until the
first one is delivered or given up.

Failures are retried with exponential backoff (30 s, 1 min, 2 min, ... at
most 1 h apart) until the handler's ``retry_for_seconds`` have passed since
the event, then the delivery is ``failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import aliased

from pba_server.accounts.models import Contact
from pba_server.core import netpolicy
from pba_server.core.clock import Clock
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import PbaError
from pba_server.core.secrets import SecretBox
from pba_server.events.models import Delivery, DeliveryAttempt, Event, EventHandler
from pba_server.events.outbox import assign_sequence
from pba_server.notify import notifications
from pba_server.notify.templates import Rendered, TemplateError, render
from pba_server.payments.models import PluginInstance
from pba_server.payments.plugin_objects import plugin_object
from pba_server.sdk import PluginError
from pba_server.sdk import guard as plugincall
from pba_server.sdk.notify import FinalSendError, Recipient

log = logging.getLogger("pba.events")

SIGNATURE_HEADER = "X-PBA-Signature"
TIMESTAMP_HEADER = "X-PBA-Timestamp"
BACKOFF_FIRST = 30
BACKOFF_MAX = 3600
BATCH = 50
MAX_ERROR = 2000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 over ``timestamp + "." + body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failure."""
    return int(min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX))


@dataclass(frozen=True)
class MailSettings:
    host: str = ""
    port: int = 25
    security: str = "none"  # none | starttls | tls
    user: str = ""
    password: str = ""
    sender: str = ""  # default From address
    timeout: float = 30.0


class MailSender(Protocol):
    def send(self, message: EmailMessage) -> int:
        """Send ``message``; returns the server's reply code; raises on failure."""


class SmtpSender:
    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def send(self, message: EmailMessage) -> int:
        s = self.settings
        if not s.host:
            raise RuntimeError("no SMTP server configured (smtp_host)")
        client: smtplib.SMTP
        if s.security == "tls":
            client = smtplib.SMTP_SSL(
                s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        with client:
            if s.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.user:
                client.login(s.user, s.password)
            client.send_message(message)
            code, _msg = client.noop()
        return int(code)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: int | None = None
    error: str | None = None
    final: bool = False  # a failure not worth retrying (the delivery fails now)


@dataclass(frozen=True)
class Job:
    """What one claimed delivery needs, read before the claim commits."""

    delivery_id: int
    handler_id: int
    action: str
    url: str | None
    secret: str | None
    command: list[str] | None
    recipients: list[str]
    sender: str
    rendered: Rendered | None
    render_error: str | None
    timeout: int
    event: dict[str, Any]
    instance: Any = None  # channel: the PluginInstance row (detached)
    channel_recipients: tuple[Recipient, ...] = ()


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to ``host`` (the Host header) at an already resolved address."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self.ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI, certificate check, Host header) at a resolved address."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self.ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        secrets: SecretBox,
        mail: MailSettings | None = None,
        mailer: MailSender | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.secrets = secrets
        self.mail = mail or MailSettings()
        self.mailer: MailSender = mailer or SmtpSender(self.mail)

    # ------------------------------------------------------------ the pass

    def run_once(self) -> int:
        """Number new events, then perform due deliveries; returns how many were tried."""
        with UnitOfWork(self.engine) as uow:
            assign_sequence(uow.session)
            uow.commit()
        jobs = self._claim()
        for job in jobs:
            started = time.monotonic()
            try:
                outcome = self._perform(job)
            except Exception as exc:  # a bug or an unexpected failure: log it, retry later
                # the handler's owner reads last_error: a generic text and a
                # correlation id; the detail and traceback are in the log
                why = plugincall.unexpected(log, f"delivery {job.delivery_id}", exc)
                outcome = Outcome(False, None, why)
            self._record(job, outcome, int((time.monotonic() - started) * 1000))
        return len(jobs)

    def _claim(self) -> list[Job]:
        with UnitOfWork(self.engine) as uow:
            s = uow.session
            now = self.clock.now()
            other = aliased(Delivery)
            head = (
                select(func.min(other.id))
                .where(
                    other.handler_id == Delivery.handler_id,
                    other.status.in_(("pending", "sending")),
                )
                .scalar_subquery()
            )
            rows = list(
                s.scalars(
                    select(Delivery)
                    .where(
                        Delivery.id == head,
                        or_(
                            and_(Delivery.status == "pending", Delivery.next_attempt_at <= now),
                            and_(Delivery.status == "sending", Delivery.lease_until <= now),
                        ),
                    )
                    .order_by(Delivery.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True, of=Delivery)
                )
            )
            jobs = []
            for d in rows:
                h = s.get(EventHandler, d.handler_id)
                ev = s.get(Event, d.event_id)
                assert h is not None and ev is not None
                if h.deleted_at is not None or not h.enabled:
                    d.status = "cancelled"
                    d.next_attempt_at = None
                    d.last_error = "the handler was deleted or disabled"
                    continue
                d.status = "sending"
                d.lease_until = now + timedelta(seconds=h.timeout_seconds + 60)
                jobs.append(self._job(s, d, h, ev))
            uow.commit()
        return jobs

    def _job(self, s: Any, d: Delivery, h: EventHandler, ev: Event) -> Job:
        recipients: list[str] = []
        sender = self.mail.sender
        rendered: Rendered | None = None
        render_error: str | None = None
        payload = json.loads(ev.payload)
        instance = None
        channel_recipients: list[Recipient] = []
        if h.action == "channel":
            instance = s.get(PluginInstance, h.instance_id) if h.instance_id else None
            if h.recipient:
                channel_recipients = [Recipient(address=h.recipient)]
            elif h.contact_kind:
                channel_recipients = [
                    Recipient(address=c.phone or c.email, name=c.name, email=c.email, phone=c.phone)
                    for c in s.scalars(
                        select(Contact)
                        .where(Contact.account_id == ev.account_id, Contact.kind == h.contact_kind)
                        .order_by(Contact.id)
                    )
                ]
        if h.action == "email":
            if h.email_to:
                recipients = [h.email_to]
            elif h.contact_kind:
                recipients = list(
                    s.scalars(
                        select(Contact.email)
                        .where(Contact.account_id == ev.account_id, Contact.kind == h.contact_kind)
                        .order_by(Contact.id)
                    )
                )
        if h.action in ("email", "channel"):
            seller_id, seller = notifications.brand(s, ev.account_path)
            sender = notifications.sender_address(s, seller_id) or sender
            template, _row = notifications.resolve(s, ev.type, h.language, ev.account_path)
            try:
                rendered = render(
                    ev.type,
                    payload,
                    brand=seller,
                    template=template,
                    account=notifications.account_fields(s, ev.account_id),
                    event={"id": ev.id, "occurred_at": ev.occurred_at.isoformat()},
                )
            except TemplateError as exc:
                render_error = f"template: {exc}"
        return Job(
            delivery_id=d.id,
            handler_id=h.id,
            action=h.action,
            url=h.url,
            secret=self.secrets.decrypt(h.secret_enc) if h.secret_enc else None,
            command=json.loads(h.command) if h.command else None,
            recipients=recipients,
            sender=sender,
            rendered=rendered,
            render_error=render_error,
            timeout=h.timeout_seconds,
            event={
                "id": ev.id,
                "seq": ev.seq,
                "type": ev.type,
                "occurred_at": ev.occurred_at.isoformat(),
                "account_id": ev.account_id,
                "subject": {"type": ev.subject_type, "id": ev.subject_id},
                "correlation_id": ev.correlation_id,
                "data": payload,
                "delivery_id": d.id,
            },
            instance=instance,
            channel_recipients=tuple(channel_recipients),
        )

    def _record(self, job: Job, outcome: Outcome, duration_ms: int) -> None:
        with UnitOfWork(self.engine) as uow:
            s = uow.session
            now = self.clock.now()
            d = s.get(Delivery, job.delivery_id, with_for_update=True)
            if d is None:
                return
            error = outcome.error[:MAX_ERROR] if outcome.error else None
            s.add(
                DeliveryAttempt(
                    delivery_id=d.id,
                    at=now,
                    ok=outcome.ok,
                    duration_ms=duration_ms,
                    response_code=outcome.code,
                    error=error,
                )
            )
            d.attempts += 1
            d.response_code = outcome.code
            d.lease_until = None
            if d.status != "sending":  # cancelled meanwhile: keep that
                pass
            elif outcome.ok:
                d.status = "delivered"
                d.delivered_at = now
                d.next_attempt_at = None
                d.last_error = None
            else:
                d.last_error = error
                retry_at = now + timedelta(seconds=backoff(d.attempts))
                if outcome.final or retry_at > d.give_up_at:
                    d.status = "failed"
                    d.next_attempt_at = None
                else:
                    d.status = "pending"
                    d.next_attempt_at = retry_at
            uow.commit()

    # ------------------------------------------------------------ actions

    def _perform(self, job: Job) -> Outcome:
        body = json.dumps(job.event, sort_keys=True).encode()
        if job.action == "webhook":
            return self._webhook(job, body)
        if job.action == "command":
            return self._command(job, body)
        if job.action == "email":
            return self._email(job)
        if job.action == "channel":
            return self._channel(job)
        return Outcome(False, None, f"unknown action {job.action!r}")

    def _webhook(self, job: Job, body: bytes) -> Outcome:
        assert job.url is not None
        parts = urlsplit(job.url)
        timestamp = str(int(self.clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pba-server-webhook",
            "X-PBA-Event": str(job.event["type"]),
            "X-PBA-Delivery": str(job.delivery_id),
            TIMESTAMP_HEADER: timestamp,
        }
        if job.secret:
            headers[SIGNATURE_HEADER] = sign(job.secret, timestamp, body)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        # connect to the address that was checked, not to a second lookup's
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            ip = netpolicy.resolve(parts.hostname or "", port)
        except netpolicy.RefusedAddress as exc:
            return Outcome(False, None, str(exc), final=True)
        except (OSError, UnicodeError) as exc:
            return Outcome(False, None, f"cannot resolve {parts.hostname}: {exc}")
        pinned = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn: http.client.HTTPConnection = pinned(
            parts.hostname or "", port, ip=ip, timeout=job.timeout
        )
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(65536)
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
        if 200 <= resp.status < 300:
            return Outcome(True, resp.status)
        return Outcome(False, resp.status, f"HTTP {resp.status} {resp.reason}")

    def _command(self, job: Job, body: bytes) -> Outcome:
        assert job.command
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PBA_EVENT_TYPE": str(job.event["type"]),
            "PBA_EVENT_ID": str(job.event["id"]),
            "PBA_DELIVERY_ID": str(job.delivery_id),
        }
        try:
            proc = subprocess.run(  # noqa: S603 - an argv list set by a provider admin, no shell
                job.command,
                input=body,
                capture_output=True,
                timeout=job.timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(False, None, f"timed out after {job.timeout} s")
        except OSError as exc:
            return Outcome(False, None, f"cannot run {job.command[0]}: {exc}")
        if proc.returncode == 0:
            return Outcome(True, 0)
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        return Outcome(False, proc.returncode, f"exit status {proc.returncode}: {err}")

    def _channel(self, job: Job) -> Outcome:
        """One message per recipient through the handler's channel plugin;
        keys are stable per delivery and address, so a retry re-sends only
        what the channel has not accepted."""
        if job.instance is None:
            return Outcome(False, None, "the handler's channel instance is gone", final=True)
        if job.instance.status != "active":
            return Outcome(False, None, f"plugin instance {job.instance.id} is disabled")
        if not job.channel_recipients:
            return Outcome(False, None, "no recipient: the account has no contact of that kind")
        if job.rendered is None:
            return Outcome(False, None, job.render_error or "nothing rendered")
        try:
            channel = plugin_object(self.secrets, job.instance, "notification_channel", self.clock)
        except (PluginError, PbaError) as exc:  # broken plugin, bad settings: maybe fixed later
            return Outcome(False, None, f"channel unusable: {type(exc).__name__}: {exc}")
        except Exception as exc:
            why = plugincall.unexpected(log, f"delivery {job.delivery_id}: the channel", exc)
            return Outcome(False, None, f"channel unusable: {why}")
        metadata = {
            "event_type": str(job.event["type"]),
            "event_id": str(job.event["id"]),
            "delivery_id": str(job.delivery_id),
            "account_id": str(job.event["account_id"]),
        }
        retry: list[str] = []
        final: list[str] = []
        code: int | None = None
        for r in job.channel_recipients:
            digest = hashlib.sha256(r.address.encode()).hexdigest()[:16]
            try:
                result = channel.send(
                    key=f"pba-{job.delivery_id}-{digest}",
                    recipient=r,
                    subject=job.rendered.subject,
                    text=job.rendered.text,
                    html=job.rendered.html,
                    metadata=metadata,
                )
            except FinalSendError as exc:
                final.append(f"{r.address}: {exc}")
            except PluginError as exc:  # RetryableSendError (the guard masked it)
                retry.append(f"{r.address}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # anything unexpected
                why = plugincall.unexpected(log, f"delivery {job.delivery_id}: send", exc)
                retry.append(f"{r.address}: {why}")
            else:
                code = result.code if result.code is not None else code
        if retry:
            return Outcome(False, code, "; ".join(retry + final))
        if final:
            return Outcome(False, code, "; ".join(final), final=True)
        return Outcome(True, code)

    def _email(self, job: Job) -> Outcome:
        if not job.recipients:
            return Outcome(False, None, "no recipient: the account has no contact of that kind")
        if not job.sender:
            return Outcome(False, None, "no From address: set mail_from or a contact")
        if job.rendered is None:
            return Outcome(False, None, job.render_error or "nothing rendered")
        msg = EmailMessage()
        msg["From"] = job.sender
        msg["To"] = ", ".join(job.recipients)
        msg["Subject"] = job.rendered.subject
        msg["X-PBA-Event"] = str(job.event["type"])
        msg.set_content(job.rendered.text)
        if job.rendered.html:
            msg.add_alternative(job.rendered.html, subtype="html")
        try:
            code = self.mailer.send(msg)
        except smtplib.SMTPResponseException as exc:
            return Outcome(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        except (OSError, smtplib.SMTPException, RuntimeError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")
        return Outcome(True, code)
