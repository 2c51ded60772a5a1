"""Billing: the money core every money movement goes through.

- Ledger (:mod:`.ledger`): one balanced, append-only transaction per movement,
  written in the same database transaction as its document. A customer's
  balance (what it owes) = its ``receivable`` + ``customer_credit`` entries.
- Documents: invoices (draft -> issued -> partially paid / paid, or void;
  overdue is derived from the due date), credit notes, offline payments with
  allocations, balance adjustments.
- Rounding (:mod:`.tax`): per line, half-up, in the currency's minor unit.
- Numbering: gapless per issuer and document kind, from a sequence row locked
  in the issuing transaction.
"""
