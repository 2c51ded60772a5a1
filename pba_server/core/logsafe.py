"""Log records that stay one line each, whatever a client sent.

A message is written with its control characters escaped (``\\n``,
``\\x1b``...): a login, a method name or an exception message holding a
newline cannot forge a record. A traceback keeps its lines, each indented,
so none of them can pass for a record of its own.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: object) -> str:  # noqa: N802
        return _indented(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


# ``api_key=sk_live_x``, ``password: hunter2``, ``"token": "abc"``: the value
# after a name that says it is secret
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (["']?[a-z0-9_.-]*(?:key|secret|token|passw(?:or)?d|pwd|auth|credential|signature)
      [a-z0-9_.-]*["']?)
    (\s*[=:]\s*)
    (["']?)([^\s"',;&)}\]]+)
    """
)
# values that look like API keys whatever they are next to
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk|whsec|key)_(?:live|test)_[A-Za-z0-9]+\b")
MASK = "***"


def mask_secrets(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with every value of ``secrets`` (an instance's secret
    settings), every ``name=value`` whose name says it is secret and every
    key-like token replaced by ``***``: for the operator's log, where a
    plugin's exception text and traceback go."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
    return _KEY_LIKE.sub(MASK, text)


def log_with_traceback(
    logger: logging.Logger, level: int, message: str, traceback_text: str
) -> None:
    """One record: ``message`` and, below it, ``traceback_text`` (already
    masked) indented like a logged exception's traceback."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "(plugin call)", 0, message, (), None)
    record.exc_text = _indented(traceback_text.rstrip("\n"))
    logger.handle(record)
