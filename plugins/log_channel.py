"""A notification channel that appends each message, as one JSON line, to a
file: for tests, for feeding another system that tails the file, and as the
example of a ``notification_channel`` plugin (docs/plugins.md).

Idempotent by key: a key already in the file is not written again (the file
is locked while it is checked and appended to, so two server processes do
not interleave).

Settings: ``path`` (the file; its folder must exist), ``max_bytes``
(refuse to grow the file beyond this, default 100 MB: a retryable failure, so
nothing is lost while someone rotates it).

A recipient address starting with ``invalid:`` is refused for good
(:class:`FinalSendError`), to show and test that path.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path

from pba_server.sdk import SDK_VERSION, ConfigurationError, PluginInfo, SettingField
from pba_server.sdk.notify import (
    FinalSendError,
    NotificationChannel,
    Recipient,
    RetryableSendError,
    SendResult,
)


class LogChannel(NotificationChannel):
    info = PluginInfo(
        name="log_channel",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="notification_channel",
        description="Appends notifications as JSON lines to a file",
        settings=(
            SettingField(
                "path", description="the file to append to (its folder must exist)", kind="path"
            ),
            SettingField("max_bytes", type="int", required=False, default="100000000"),
        ),
        operator_only=True,  # writes a file on the server
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        path = settings.get("path") or ""
        if not path or not os.path.isabs(path):
            raise ConfigurationError("path must be an absolute file path")
        try:
            self.max_bytes = int(settings.get("max_bytes") or 100_000_000)
        except ValueError:
            raise ConfigurationError("max_bytes must be a whole number") from None
        self.path = Path(path)

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
        if recipient.address.startswith("invalid:"):
            raise FinalSendError(f"address {recipient.address!r} is refused")
        try:
            with open(self.path, "a+", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.seek(0)
                for line in f:
                    try:
                        seen = json.loads(line)
                    except ValueError:
                        continue
                    if seen.get("key") == key:
                        return SendResult(str(seen["reference"]))
                if f.tell() > self.max_bytes:
                    raise RetryableSendError(f"{self.path} is larger than max_bytes")
                reference = f"log-{uuid.uuid4().hex[:16]}"
                entry = {
                    "key": key,
                    "reference": reference,
                    "to": recipient.address,
                    "name": recipient.name,
                    "subject": subject,
                    "text": text,
                    "html": html,
                    "metadata": metadata,
                }
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise RetryableSendError(f"cannot write {self.path}: {exc.strerror}") from None
        return SendResult(reference)


PLUGIN = LogChannel
