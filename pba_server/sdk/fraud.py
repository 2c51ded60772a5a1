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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pba_server.sdk import Plugin, ResultRule

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


def check_screening(result: Any, call: Mapping[str, Any]) -> str | None:
    """screen answers a :class:`Screening`: a known verdict, a score 0-100."""
    if not isinstance(result, Screening):
        return f"screen returned a {type(result).__name__}, not a Screening"
    if result.verdict not in ("pass", "suspect", "fraud"):
        return f"screen returned verdict {result.verdict!r}"
    if not isinstance(result.score, int) or not 0 <= result.score <= 100:
        return f"screen returned score {result.score!r}, not 0 to 100"
    return None


class FraudScreener(Plugin):
    """Deadline (:attr:`max_call_seconds`): screen 5 s (it runs in the
    order's transaction); past it, or on any failure, the order is suspect."""

    max_call_seconds: ClassVar[Mapping[str, float]] = {"screen": 5.0}
    result_rules: ClassVar[Mapping[str, ResultRule]] = {"screen": check_screening}

    @abc.abstractmethod
    def screen(self, facts: OrderFacts) -> Screening:
        """Required. Score the order."""
