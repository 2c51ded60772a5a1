"""Subscription states and their transition table (state, event) -> state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pba_server.core.states import StateMachine

SubscriptionStatus = Literal["trial", "active", "suspended", "cancelled", "expired"]

SUBSCRIPTION_STATES = StateMachine(
    "subscription",
    {
        ("trial", "convert"): "active",  # trial paid at its end
        ("trial", "expire"): "expired",  # trial ended unpaid
        ("trial", "cancel"): "cancelled",
        ("trial", "suspend"): "suspended",
        ("active", "suspend"): "suspended",
        ("active", "cancel"): "cancelled",
        ("active", "expire"): "expired",  # term ended without renewal
        ("suspended", "resume"): "active",
        ("suspended", "cancel"): "cancelled",  # e.g. dunning's terminate step
        ("suspended", "expire"): "expired",
    },
)


@dataclass
class SubscriptionServiceInfo:
    """One provisioned service of a subscription (wire type)."""

    id: int
    status: str
    module: str
    platform_id: str | None = None
