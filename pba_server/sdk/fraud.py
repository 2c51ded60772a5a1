"""The ``FraudScreener`` plugin kind: scoring an order before it is charged.

The workflow's ``fraud_screen`` step passes the order (what was ordered, by
whom, how it is paid, and the account's recent order history) as an
:class:`OrderFacts` and gets a :class:`Screening`: a score from 0 (clean) to
100 and the reasons behind it, and a verdict -- ``pass`` (go on), ``suspect``
(a person approves: the default workflows wait for approval) or ``fraud``
(rejected). A screener must not call out for long: it runs in the order's
transaction. An exception from a screener makes the order ``suspect`` (a
person looks), never passes it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pba_server.sdk import Plugin

Verdict = Literal["pass", "suspect", "fraud"]


@dataclass(frozen=True)
class OrderFacts:
    order_id: int
    order_type: str
    account_id: int
    account_created_at: datetime
    account_country: str | None
    currency: str
    total: Decimal
    placed_at: datetime
    on_account: bool
    card_country: str | None = None  # not known today: stored methods carry no country
    card_brand: str | None = None
    previous_orders: int = 0  # the account's earlier orders, any status
    orders_last_hour: int = 0  # the account's orders placed in the hour before this one
    source_address: str = ""


@dataclass(frozen=True)
class Screening:
    verdict: Verdict
    score: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)


class FraudScreener(Plugin):
    @abc.abstractmethod
    def screen(self, facts: OrderFacts) -> Screening:
        """Required. Score the order."""
