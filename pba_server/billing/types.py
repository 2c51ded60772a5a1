"""Wire types of the billing operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pba_server.core.money import Money

InvoiceStatus = Literal["draft", "issued", "partially_paid", "paid", "overdue", "void"]
LineLink = Literal["subscription", "order", "usage", "one_off"]
PaymentMethod = Literal["bank_transfer", "cheque", "cash", "card"]
DocumentKind = Literal["invoice", "credit_note"]
RenderFormat = Literal["html", "pdf"]
StatementEntryKind = Literal["invoice", "credit_note", "payment", "adjustment", "void"]


@dataclass
class InvoiceLineInput:
    description: str
    unit_price: Decimal
    quantity: Decimal = Decimal(1)
    discount: Decimal = Decimal(0)
    tax_inclusive: bool = False
    tax_rule_id: int | None = None
    period_start: date | None = None
    period_end: date | None = None
    link_type: LineLink = "one_off"
    link_id: str | None = None


@dataclass
class InvoiceLineInfo:
    id: int
    position: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Money
    tax_inclusive: bool
    tax_rate: Decimal
    net: Money
    tax: Money
    total: Money
    credited: Money
    link_type: LineLink
    tax_rule_id: int | None = None
    tax_name: str | None = None
    period_start: date | None = None
    period_end: date | None = None
    link_id: str | None = None


@dataclass
class InvoiceInfo:
    id: int
    issuer_id: int
    account_id: int
    currency: str
    status: InvoiceStatus
    subtotal: Money
    tax_total: Money
    total: Money
    paid: Money
    credited: Money
    outstanding: Money
    reverse_charge: bool
    created_at: datetime
    lines: list[InvoiceLineInfo]
    number: str | None = None
    issued_at: datetime | None = None
    due_date: date | None = None
    feed_position: int | None = None
    notes: str | None = None
    autopay: bool = True  # charged to the default payment method once issued


@dataclass
class InvoicePage:
    items: list[InvoiceInfo]
    total: int
    offset: int
    limit: int
    # pass back as issued_after to get the invoices issued since this page
    next_cursor: int


@dataclass
class CreditNoteLineInput:
    invoice_line_id: int
    # gross amount of the line to credit; omitted: what is left of the line
    amount: Decimal | None = None


@dataclass
class CreditNoteLineInfo:
    id: int
    invoice_line_id: int
    description: str
    net: Money
    tax: Money
    total: Money


@dataclass
class CreditNoteInfo:
    id: int
    number: str
    issuer_id: int
    account_id: int
    invoice_id: int
    currency: str
    net: Money
    tax: Money
    total: Money
    to_credit_balance: Money
    reason: str
    issued_at: datetime
    lines: list[CreditNoteLineInfo]


@dataclass
class CreditNotePage:
    items: list[CreditNoteInfo]
    total: int
    offset: int
    limit: int


@dataclass
class TaxRuleInfo:
    id: int
    seller_id: int
    buyer_country: str
    name: str
    rate: Decimal
    reverse_charge: bool
    buyer_region: str | None = None


@dataclass
class TaxRulePage:
    items: list[TaxRuleInfo]
    total: int
    offset: int
    limit: int


@dataclass
class AllocationInfo:
    invoice_id: int
    amount: Money
    invoice_number: str | None = None


@dataclass
class PaymentInfo:
    id: int
    account_id: int
    issuer_id: int
    currency: str
    amount: Money
    unallocated: Money
    method: PaymentMethod
    reference: str
    received_on: date
    recorded_at: datetime
    allocations: list[AllocationInfo]


@dataclass
class PaymentPage:
    items: list[PaymentInfo]
    total: int
    offset: int
    limit: int


@dataclass
class AdjustmentInfo:
    transaction_id: int
    account_id: int
    currency: str
    amount: Money
    reason: str
    balance: Money


@dataclass
class BalanceInfo:
    account_id: int
    currency: str
    # what the account owes: issued invoices not yet settled minus prepaid credit
    balance: Money
    receivable: Money
    credit: Money
    overdue: Money
    credit_limit: Money
    available_credit: Money


@dataclass
class StatementLine:
    at: datetime
    kind: StatementEntryKind
    description: str
    amount: Money
    balance: Money
    document_id: int | None = None
    document_number: str | None = None


@dataclass
class StatementInfo:
    account_id: int
    currency: str
    date_from: date
    date_to: date
    opening_balance: Money
    closing_balance: Money
    lines: list[StatementLine]


@dataclass
class RenderedDocument:
    invoice_id: int
    format: RenderFormat
    content_type: str
    filename: str
    # HTML as text; PDF as base64
    content: str


@dataclass
class PaymentTermsInfo:
    account_id: int
    net_days: int


@dataclass
class NumberFormatInfo:
    issuer_id: int
    kind: DocumentKind
    format: str
    last_number: int
