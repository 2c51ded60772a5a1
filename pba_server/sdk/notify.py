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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pba_server.sdk import Plugin, PluginError, ResultRule


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


def check_send(result: Any, call: Mapping[str, Any]) -> str | None:
    """send answers a :class:`SendResult` with the channel's reference."""
    if not isinstance(result, SendResult):
        return f"send returned a {type(result).__name__}, not a SendResult"
    if not isinstance(result.reference, str) or not result.reference:
        return "send returned no reference"
    return None


class NotificationChannel(Plugin):
    """A notification channel plugin kind (``PluginInfo(kind="notification_channel")``).

    ``send`` receives ``key``, unique per message (delivery and recipient). A
    channel MUST treat a repeated call with the same key as the same message:
    a retry after a lost answer must not notify the person twice (pass the
    key on as the provider's idempotency key, or remember it).

    Deadline (:attr:`max_call_seconds`): send 15 s; past it the delivery is
    retried (same key), as after :class:`RetryableSendError`.
    """

    max_call_seconds: ClassVar[Mapping[str, float]] = {"send": 15.0}
    result_rules: ClassVar[Mapping[str, ResultRule]] = {"send": check_send}

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


NotificationChannel.timeout_error = RetryableSendError
NotificationChannel.failure_error = RetryableSendError


__all__ = [
    "FinalSendError",
    "NotificationChannel",
    "Recipient",
    "RetryableSendError",
    "SendFailed",
    "SendResult",
    "check_send",
]
