"""What usage needs from the features above it (ports).

Billing sits above usage (the billing run rates usage records), so usage may
not read billing's tables: whether a usage period is already invoiced is
asked through :class:`BilledPeriods`, implemented by
:mod:`pba_server.billing.billed` and wired by ``bootstrap.build_app``.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from pba_server.core.context import CallContext


class BilledPeriods(Protocol):
    def billed_after(self, ctx: CallContext, subscription_id: int, period_start: date) -> bool:
        """Whether a recurring period starting after ``period_start`` is billed."""
