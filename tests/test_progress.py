"""The progress reporter of long command-line work, driven by a fake monotonic clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pba_server.core.clock import FixedClock
from pba_server.core.progress import Progress, duration


class Ticks:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def reporter(tty: bool, interval: float = 10.0, total: int | None = 100):
    ticks = Ticks()
    out = io.StringIO()
    clock = FixedClock(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    p = Progress(
        "billing run",
        total,
        "subscriptions",
        stream=out,
        tty=tty,
        clock=clock,
        interval=interval,
        monotonic=ticks,
    )
    return p, ticks, out


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "2 h 07 min",
    ]


def test_off_a_terminal_one_stamped_line_per_interval():
    p, ticks, out = reporter(tty=False, interval=10)
    ticks.t += 5
    p.update(10)  # 5 s in: too soon
    assert out.getvalue() == ""
    ticks.t += 5
    p.update(20, "4 invoice(s)")  # 10 s in: 2/s, 80 left -> 40 s
    ticks.t += 3
    p.update(26)  # 3 s after the last line: too soon
    ticks.t += 7
    p.update(40)
    p.finish()
    assert out.getvalue().splitlines() == [
        "2026-03-01T02:00:00Z billing run: 20/100 subscriptions (20%), 4 invoice(s), 2.0/s, "
        "about 40 s left",
        "2026-03-01T02:00:00Z billing run: 40/100 subscriptions (40%), 2.0/s, about 30 s left",
    ]


def test_interval_zero_logs_every_step_and_the_end():
    p, ticks, out = reporter(tty=False, interval=0, total=2)
    for done in (1, 2):
        ticks.t += 60
        p.update(done)
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("billing run: 2/2 subscriptions (100%), 0.0/s, done in 2 min 00 s")
    )
    assert len(out.getvalue().splitlines()) == 2


def test_on_a_terminal_one_line_redrawn_with_rate_and_time_left():
    p, ticks, out = reporter(tty=True)
    ticks.t += 1
    p.update(10)
    p.update(11)  # at once: not redrawn
    ticks.t += 1
    p.update(50)
    p.finish()
    text = out.getvalue()
    assert text == (
        "\rbilling run: 10/100 subscriptions (10%), 10.0/s, about 9 s left\x1b[K"
        "\rbilling run: 50/100 subscriptions (50%), 25.0/s, about 2 s left\x1b[K\n"
    )


def test_unknown_total_shows_the_count_and_elapsed_time():
    p, ticks, out = reporter(tty=False, interval=0, total=None)
    ticks.t += 4
    p.update(8)
    assert out.getvalue().strip().endswith("billing run: 8 subscriptions, 2.0/s, 4 s so far")
