"""The orders side of :class:`pba_server.billing.ports.RenewalOrders`: which
subscriptions have a manual renewal order still running, for the billing
run. ``bootstrap.wire_ports`` wires one :class:`Renewals` into the runtime."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists

from pba_server.orders.models import Order, OrderLine


class Renewals:
    """Implements ``RenewalOrders`` from the orders and their lines."""

    def in_flight(self, subscription_id: Any) -> ColumnElement[bool]:
        return exists().where(
            OrderLine.subscription_id == subscription_id,
            OrderLine.kind == "renewal",
            Order.id == OrderLine.order_id,
            Order.status.in_(("running", "waiting")),
            Order.applied.is_(False),
        )
