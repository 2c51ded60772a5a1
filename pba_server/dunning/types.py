"""Wire types of the dunning operations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DunningScheduleInfo:
    """Days after an invoice's due date for each step (None: the step is off)."""

    owner_id: int
    is_default: bool  # the owner has no schedule of its own: the defaults apply
    reminder_days: int | None = None
    second_reminder_days: int | None = None
    suspend_days: int | None = None
    terminate_days: int | None = None
    # days an account may stay over its credit limit before it is put on hold
    credit_hold_days: int | None = None
