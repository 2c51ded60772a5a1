"""Rendering a notification from an event.

This is the seam for per-event-type, per-language templates with reseller
overrides (rendered with Jinja2's SandboxedEnvironment once Jinja2 is a
dependency); for now every event type renders one built-in plain-text form,
branded with the sending account's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pba_server.events.catalog import EVENT_TYPES


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


def render(event_type: str, payload: dict[str, Any], *, brand: str) -> Rendered:
    spec = EVENT_TYPES.get(event_type)
    title = spec.description.rstrip(".") if spec else event_type
    lines = [f"{title}.", ""]
    for key in sorted(payload):
        value = payload[key]
        if not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        lines.append(f"{key}: {value}")
    lines += ["", f"-- {brand}"]
    return Rendered(subject=f"[{brand}] {title}", text="\n".join(lines) + "\n")
