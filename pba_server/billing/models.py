"""Billing tables: the ledger, documents, payments and billing settings.

Ledger rows are append-only: the service layer only ever inserts them (a
mistake is corrected by a reversing transaction). ``account_balances`` is a
cache of entry sums that ``pba-server verify-ledger`` recomputes.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, CurrencyCode, Money, UtcDateTime


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    # the account whose statement shows it (the customer)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    document_type: Mapped[str | None] = mapped_column(String(32))
    document_id: Mapped[int | None] = mapped_column(Integer)
    memo: Mapped[str] = mapped_column(String(255))
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_transactions.id"))
    user_login: Mapped[str] = mapped_column(String(128))


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount <> 0", name="nonzero"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    # receivable | customer_credit | revenue | tax_payable | cash | adjustments
    ledger_account: Mapped[str] = mapped_column(String(32))
    # whose ledger account: the customer for receivable/customer_credit, the
    # issuer for the others
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # tax rule id for tax_payable, payment method for cash
    ref: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    # signed: debit positive, credit negative
    amount: Mapped[Decimal] = mapped_column(Money())


class AccountBalance(Base):
    __tablename__ = "account_balances"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(CurrencyCode(), primary_key=True)
    receivable: Mapped[Decimal] = mapped_column(Money())
    # customer_credit ledger balance (negative = the customer has prepaid credit)
    credit: Mapped[Decimal] = mapped_column(Money())


class NumberSequence(Base):
    """Per issuer and document kind: the last number given, locked while issuing."""

    __tablename__ = "number_sequences"

    issuer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    format: Mapped[str] = mapped_column(String(64))
    last_number: Mapped[int] = mapped_column(Integer)


class PaymentTerms(Base):
    __tablename__ = "payment_terms"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    net_days: Mapped[int] = mapped_column(Integer)


class TaxRule(Base):
    __tablename__ = "tax_rules"
    __table_args__ = (UniqueConstraint("seller_id", "buyer_country", "buyer_region"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    buyer_country: Mapped[str] = mapped_column(String(2))
    buyer_region: Mapped[str] = mapped_column(String(128))  # "" = the whole country
    name: Mapped[str] = mapped_column(String(64))
    rate: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    reverse_charge: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("issuer_id", "number"),
        UniqueConstraint("issuer_id", "seq"),
        UniqueConstraint("feed_position"),
        # rounded: SQLite compares its REAL values in floating point
        # (migration 0016)
        CheckConstraint(
            "round(paid_amount + credited_amount - total, 4) <= 0", name="not_overpaid"
        ),
        CheckConstraint("paid_amount >= 0 AND credited_amount >= 0", name="nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    currency: Mapped[str] = mapped_column(CurrencyCode())
    # draft | issued | partially_paid | paid | void (overdue is derived)
    status: Mapped[str] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(Integer)
    feed_position: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    due_date: Mapped[date | None] = mapped_column(Date)
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    subtotal: Mapped[Decimal] = mapped_column(Money())
    tax_total: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())
    paid_amount: Mapped[Decimal] = mapped_column(Money())
    credited_amount: Mapped[Decimal] = mapped_column(Money())
    reverse_charge: Mapped[bool] = mapped_column(Boolean)
    buyer_tax_id: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    # charge it to the buyer's default payment method once issued (payments.autopay)
    autopay: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    autopay_attempted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (UniqueConstraint("invoice_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[Decimal] = mapped_column(Numeric(19, 4))
    unit_price: Mapped[Decimal] = mapped_column(Money())
    discount: Mapped[Decimal] = mapped_column(Money())
    tax_inclusive: Mapped[bool] = mapped_column(Boolean)
    tax_rule_id: Mapped[int | None] = mapped_column(ForeignKey("tax_rules.id"))
    explicit_tax_rule: Mapped[bool] = mapped_column(Boolean)
    tax_name: Mapped[str | None] = mapped_column(String(64))
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    net: Mapped[Decimal] = mapped_column(Money())
    tax: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())
    credited: Mapped[Decimal] = mapped_column(Money())
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    link_type: Mapped[str] = mapped_column(String(16))
    link_id: Mapped[str | None] = mapped_column(String(64))


class CreditNote(Base):
    __tablename__ = "credit_notes"
    __table_args__ = (UniqueConstraint("issuer_id", "number"), UniqueConstraint("issuer_id", "seq"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    number: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(CurrencyCode())
    net: Mapped[Decimal] = mapped_column(Money())
    tax: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())
    to_credit_balance: Mapped[Decimal] = mapped_column(Money())
    reason: Mapped[str] = mapped_column(String(255))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CreditNoteLine(Base):
    __tablename__ = "credit_note_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credit_note_id: Mapped[int] = mapped_column(ForeignKey("credit_notes.id"), index=True)
    invoice_line_id: Mapped[int] = mapped_column(ForeignKey("invoice_lines.id"))
    net: Mapped[Decimal] = mapped_column(Money())
    tax: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("amount > 0", name="positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    currency: Mapped[str] = mapped_column(CurrencyCode())
    amount: Mapped[Decimal] = mapped_column(Money())
    allocated: Mapped[Decimal] = mapped_column(Money())
    method: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(128))
    received_on: Mapped[date] = mapped_column(Date)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PaymentAllocation(Base):
    __tablename__ = "payment_allocations"
    __table_args__ = (CheckConstraint("amount > 0", name="positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None: allocated from credit that is not a payment's (credit note, adjustment)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class BillingCounter(Base):
    """Server-wide counters; ``invoice_feed`` orders issued invoices for InvoiceList's cursor."""

    __tablename__ = "billing_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
