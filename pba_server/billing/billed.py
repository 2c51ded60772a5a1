"""The billing side of :class:`pba_server.usage.ports.BilledPeriods`."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from pba_server.billing.run_models import BilledItem
from pba_server.core.context import CallContext


class Billed:
    """Implements ``BilledPeriods`` from the billing run's billed items."""

    def billed_after(self, ctx: CallContext, subscription_id: int, period_start: date) -> bool:
        n = ctx.session.scalar(
            select(func.count())
            .select_from(BilledItem)
            .where(
                BilledItem.subscription_id == subscription_id,
                BilledItem.kind == "recurring",
                BilledItem.period_start > period_start,
            )
        )
        return bool(n)
