"""What subscriptions need from the features above them (ports).

A subscription change is an order, and orders sit above subscriptions (the
order engine creates and changes subscriptions), so subscriptions may not
import :mod:`pba_server.orders`. They speak to it through :class:`OrderDesk`,
a Protocol implemented by :mod:`pba_server.orders.desk` and wired by
``bootstrap.build_app`` (``runtime.provide(OrderDesk, ...)``); subscription
code asks ``ctx.rt.port(OrderDesk)``. The services of a subscription are
provisioning's (also above): :class:`ServiceLookup`, implemented by
:mod:`pba_server.provisioning.lookup`.

The order vocabulary (``OrderInfo``, ``OrderLineInput``...) is
:mod:`pba_server.orders.types`: wire types, importable from any layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pba_server.core.context import CallContext
from pba_server.orders.types import OrderInfo, OrderLineInput, OrderType

if TYPE_CHECKING:
    from pba_server.accounts.models import Account
    from pba_server.subscriptions.models import Subscription
    from pba_server.subscriptions.types import SubscriptionServiceInfo


class OrderDesk(Protocol):
    """Orders as subscriptions use them."""

    def place(
        self,
        ctx: CallContext,
        *,
        account_id: int,
        order_type: str,
        lines: Sequence[OrderLineInput],
        promotion_code: str | None,
        payment_method_id: int | None,
        on_account: bool,
    ) -> Any:
        """Place an order (the ORM row); raises the order's domain errors."""

    def order_info(self, ctx: CallContext, order: Any) -> OrderInfo:
        """The wire view of an order :meth:`place` returned."""

    def price_line(
        self,
        ctx: CallContext,
        buyer: Account,
        order_type: str,
        line: OrderLineInput,
        field: str,
        promotion_code: str | None,
    ) -> Any:
        """Price one order line as the order would (``.amount``, ``.change``)."""

    def change_type(self, ctx: CallContext, sub: Subscription, plan_id: int) -> OrderType:
        """``upgrade`` or ``downgrade``: whether moving to ``plan_id`` costs more."""

    def last_renewal_status(self, ctx: CallContext, subscription_id: int) -> str | None:
        """The status of the subscription's latest renewal order, if any."""

    def default_method_id(self, ctx: CallContext, account_id: int) -> int | None:
        """The account's default active stored payment method."""

    def sub_event(self, ctx: CallContext, sub: Subscription, type: str, **extra: Any) -> None:
        """Emit a ``subscription.*`` event the way the order engine does."""

    def cancel_subscription(self, ctx: CallContext, sub: Subscription, reason: str | None) -> None:
        """Cancel now (state, dates, event), as a cancellation order does."""

    def request_action(
        self, ctx: CallContext, subscription_id: int, action: str, *, reason: str = ""
    ) -> None:
        """Ask provisioning to suspend, resume or delete the subscription's services."""


class ServiceLookup(Protocol):
    """The provisioned services of a subscription."""

    def services(self, ctx: CallContext, subscription_id: int) -> list[SubscriptionServiceInfo]:
        """Its services, oldest first."""
