"""The ``notification_channel`` plugin kind: further ways to notify people
(SMS, chat, push) besides the built-in e-mail, webhook and command actions.

An event handler with action ``channel`` names a configured instance of such
a plugin and whom to notify (a fixed address, or the event account's
contacts of a kind). For each event the server renders the notification
template (the same templates as e-mail: subject, text, HTML) and calls
:meth:`NotificationChannel.send` once per recipient, on the delivery worker
thread, never on the reactor. Deliveries are retried like webhooks.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from pba_server.sdk import Plugin, PluginError


@dataclass(frozen=True)
class Recipient:
    """Whom to notify. ``address`` is what the channel sends to: the handler's
    fixed ``recipient``, or a contact's phone number if it has one, else its
    e-mail address. A channel that needs something else may read ``email`` /
    ``phone`` itself."""

    address: str
    name: str = ""
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class SendResult:
    """A message the channel accepted. ``reference`` is the channel's id of it."""

    reference: str
    code: int | None = None  # the channel's status code, if it has one (kept in the log)


class SendFailed(PluginError):
    """The message was not sent; try again later (the delivery is retried
    with backoff until the handler's retry window ends)."""


class RetryableSendError(SendFailed):
    """Temporary: the channel is down, rate-limited, timed out."""


class FinalSendError(SendFailed):
    """Permanent: the address is invalid, the account is blocked. The
    delivery is failed at once, without further attempts."""


class NotificationChannel(Plugin):
    """A notification channel plugin kind (``PluginInfo(kind="notification_channel")``).

    ``send`` receives ``key``, unique per message (delivery and recipient). A
    channel MUST treat a repeated call with the same key as the same message:
    a retry after a lost answer must not notify the person twice (pass the
    key on as the provider's idempotency key, or remember it).
    """

    @abc.abstractmethod
    def send(
        self,
        *,
        key: str,
        recipient: Recipient,
        subject: str,
        text: str,
        html: str | None,
        metadata: dict[str, str],
    ) -> SendResult:
        """Required. Send one message. ``metadata`` holds ``event_type``,
        ``event_id``, ``delivery_id`` and ``account_id`` as strings. Returns a
        :class:`SendResult`; raises :class:`RetryableSendError` (or any other
        exception) to be tried again later, :class:`FinalSendError` to give up."""


__all__ = [
    "FinalSendError",
    "NotificationChannel",
    "Recipient",
    "RetryableSendError",
    "SendFailed",
    "SendResult",
]
