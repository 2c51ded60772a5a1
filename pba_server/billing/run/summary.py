"""What a billing run produces: draft invoices (the plan's output, issued by
the writer) and the run's summary (counts, totals, rows written)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)


@dataclass
class DraftLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    tax_inclusive: bool
    period_start: date | None
    period_end: date | None
    subscription_id: int | None
    kind: str  # recurring | overage | late | wholesale
    net: Decimal = ZERO
    tax: Decimal = ZERO
    total: Decimal = ZERO
    tax_rule_id: int | None = None
    tax_name: str | None = None
    tax_rate: Decimal = ZERO


@dataclass
class DraftInvoice:
    issuer_id: int
    account_id: int
    currency: str
    lines: list[DraftLine] = field(default_factory=list)
    subtotal: Decimal = ZERO
    tax_total: Decimal = ZERO
    total: Decimal = ZERO
    reverse_charge: bool = False
    buyer_tax_id: str | None = None
    notes: str | None = None
    invoice_id: int | None = None
    number: str | None = None
    due_date: date | None = None


@dataclass
class RunSummary:
    as_of: date
    dry_run: bool
    subscriptions: int = 0  # subscriptions billed (renewed or ended)
    periods: int = 0  # periods billed in advance
    expired: int = 0  # not renewed at term end
    invoices: int = 0
    lines: int = 0
    rows_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    # worker processes that died mid-run (killed, crashed): their batch
    # rolled back and was billed by the others
    workers_lost: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)  # by currency
    drafts: list[DraftInvoice] = field(default_factory=list)  # dry run only
    staged: list[dict[str, Any]] = field(default_factory=list)  # dry run: wholesale charges

    def add(self, other: RunSummary) -> None:
        for name in ("subscriptions", "periods", "expired", "invoices", "lines", "rows_written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.batches += other.batches
        self.workers_lost += other.workers_lost
        for c, v in other.totals.items():
            self.totals[c] = self.totals.get(c, ZERO) + v
        self.drafts.extend(other.drafts)
        self.staged.extend(other.staged)

    def line(self) -> str:
        money = ", ".join(f"{v} {c}" for c, v in sorted(self.totals.items())) or "nothing"
        what = "would bill" if self.dry_run else "billed"
        lost = (
            f"; {self.workers_lost} worker process(es) lost, their batches billed by the others"
            if self.workers_lost
            else ""
        )
        return (
            f"billing run as of {self.as_of}: {what} {self.subscriptions} subscription(s), "
            f"{self.periods} period(s), {self.expired} ended without renewal; "
            f"{self.invoices} invoice(s), {self.lines} line(s), {money}; "
            f"{self.rows_written} row(s) written in {self.seconds:.1f} s{lost}"
        )


def summary_json(s: RunSummary) -> str:
    return json.dumps(
        {
            "as_of": s.as_of.isoformat(),
            "dry_run": s.dry_run,
            "subscriptions": s.subscriptions,
            "periods": s.periods,
            "expired": s.expired,
            "invoices": s.invoices,
            "lines": s.lines,
            "rows_written": s.rows_written,
            "seconds": round(s.seconds, 3),
            "workers_lost": s.workers_lost,
            "totals": {c: str(v) for c, v in s.totals.items()},
        },
        sort_keys=True,
    )
