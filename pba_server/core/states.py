"""Explicit state machines: an enum of states plus a transition table."""

from __future__ import annotations

from pba_server.core.errors import InvalidState


class StateMachine:
    def __init__(self, what: str, transitions: dict[tuple[str, str], str]) -> None:
        self.what = what
        self.transitions = transitions

    def next(self, state: str, event: str) -> str:
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise InvalidState(f"cannot {event} a {state} {self.what}") from None

    def allowed(self, state: str) -> list[str]:
        return sorted(e for (s, e) in self.transitions if s == state)
