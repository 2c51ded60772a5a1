"""Wire types of the BillingRun operation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from pba_server.core.money import Money


@dataclass
class BillingRunLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Money
    net: Money
    tax: Money
    total: Money
    kind: str  # recurring | overage | late | wholesale
    subscription_id: int | None = None
    period_start: date | None = None
    period_end: date | None = None


@dataclass
class BillingRunInvoice:
    """An invoice the run issued (number set) or, in a dry run, would issue."""

    issuer_id: int
    account_id: int
    currency: str
    subtotal: Money
    tax_total: Money
    total: Money
    lines: list[BillingRunLine] = field(default_factory=list)
    number: str | None = None


@dataclass
class CurrencyTotal:
    currency: str
    total: Money


@dataclass
class BillingRunInfo:
    as_of: date
    dry_run: bool
    subscriptions: int  # subscriptions billed (renewed, or ended without renewal)
    periods: int  # periods billed in advance
    expired: int  # subscriptions not renewed at term end
    invoices: int
    lines: int
    rows_written: int
    totals: list[CurrencyTotal] = field(default_factory=list)
    # the would-be invoices with their lines (dry run only)
    preview: list[BillingRunInvoice] = field(default_factory=list)
