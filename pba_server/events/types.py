"""Values the events operations take and return (the wire shapes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class EventPayloadField:
    name: str
    type: str
    description: str


@dataclass
class EventTypeInfo:
    name: str
    description: str
    payload: list[EventPayloadField]


@dataclass
class EventTypePage:
    items: list[EventTypeInfo]
    total: int
    offset: int
    limit: int


@dataclass
class EventInfo:
    """One committed event. ``seq`` is the polling cursor: gap-free, in publication order."""

    seq: int
    id: int
    type: str
    occurred_at: datetime
    account_id: int
    subject_type: str
    subject_id: str
    payload: str  # JSON object, fields as documented by EventTypeList
    correlation_id: str


@dataclass
class EventPage:
    items: list[EventInfo]
    next_cursor: int  # pass as ``after`` to continue; equal to ``after`` when nothing new
