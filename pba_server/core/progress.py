"""Progress of long command-line work (a billing run, a migration).

On a terminal: one line, rewritten in place, with the rate and the time
left. Otherwise (cron, systemd, a pipe): a plain line every ``interval``
seconds (0: at every step), stamped with the injected clock's time, so a
run can be followed in its log. Rate and time left are measured with the
monotonic clock (a duration, not a time of day).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from pba_server.core.clock import Clock

TTY_REFRESH = 0.1  # seconds between redraws of the terminal line


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Call :meth:`update` after each step with how much is done; :meth:`finish` at the end."""

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str,
        *,
        stream: TextIO,
        tty: bool,
        clock: Clock,
        interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self.interval = interval
        self.monotonic = monotonic
        self.started = monotonic()
        self.last_shown = self.started
        self.drawn = False
        self.lines = 0  # log lines written (not on a terminal)

    def text(self, done: int, detail: str = "") -> str:
        elapsed = self.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.what}: {done}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100 * done // self.total}%)"
        else:
            parts[0] += f" {self.unit}"
        if detail:
            parts.append(detail)
        parts.append(f"{rate:.1f}/s")
        if self.total and done >= self.total:
            parts.append(f"done in {duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"about {duration((self.total - done) / rate)} left")
        parts.append(f"{duration(elapsed)} so far" if not self.total else "")
        return ", ".join(p for p in parts if p)

    def update(self, done: int, detail: str = "") -> None:
        now = self.monotonic()
        finished = bool(self.total) and done >= (self.total or 0)
        if self.tty:
            if now - self.last_shown < TTY_REFRESH and not finished and self.drawn:
                return
            self.stream.write("\r" + self.text(done, detail) + "\x1b[K")
            self.drawn = True
        else:
            if now - self.last_shown < self.interval:
                return
            stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            self.stream.write(f"{stamp} {self.text(done, detail)}\n")
            self.lines += 1
        self.last_shown = now
        self.stream.flush()

    def finish(self) -> None:
        """End the terminal line (the summary that follows starts on a fresh one)."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
