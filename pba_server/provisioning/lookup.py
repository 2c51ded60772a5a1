"""The provisioning side of :class:`pba_server.subscriptions.ports.ServiceLookup`:
a subscription's provisioned services, for SubscriptionGet and friends."""

from __future__ import annotations

from sqlalchemy import select

from pba_server.core.context import CallContext
from pba_server.provisioning.models import Service
from pba_server.subscriptions.types import SubscriptionServiceInfo


class Lookup:
    """Implements ``ServiceLookup``."""

    def services(self, ctx: CallContext, subscription_id: int) -> list[SubscriptionServiceInfo]:
        return [
            SubscriptionServiceInfo(s.id, s.status, s.module, s.platform_id)
            for s in ctx.session.scalars(
                select(Service)
                .where(Service.subscription_id == subscription_id)
                .order_by(Service.id)
            )
        ]
