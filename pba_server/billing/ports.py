"""What billing needs from the features above it (ports).

Orders sit above billing (an order invoices), so the billing run may not
read orders' tables: whether a subscription has a manual renewal order
still running is asked through :class:`RenewalOrders`, implemented by
:mod:`pba_server.orders.renewals` and wired by ``bootstrap.wire_ports``.
The billing run is handed the port by its caller (the job, the
BillingRun operation, the ``billing-run`` command); its worker processes
inherit it through ``fork`` with the rest of their work.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import ColumnElement


class RenewalOrders(Protocol):
    def in_flight(self, subscription_id: Any) -> ColumnElement[bool]:
        """A SQL condition on ``subscription_id`` (a column or an expression
        of the billing run's query): true while a manual renewal order of
        that subscription (SubscriptionRenew) is not applied yet. Such an
        order bills the period the run would bill and moves the
        subscription's dates when it completes, so the run leaves the
        subscription alone meanwhile (if the order is rejected, the next run
        bills it). A condition, not a lookup, so the run's one query per
        batch stays one query."""
