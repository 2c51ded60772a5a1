"""Billing: the money core every money movement goes through.

- Ledger: one balanced, append-only transaction per movement, written in the
  same database transaction as its document. A customer's balance (what it
  owes) = its ``receivable`` + ``customer_credit`` entries.
- Documents: invoices (draft -> issued -> partially paid / paid, or void;
  overdue is derived from the due date), credit notes, offline payments with
  allocations, balance adjustments.
- Rounding: per line, half-up, in the currency's minor unit.
- Numbering: gapless per issuer and document kind, from a sequence row locked
  in the issuing transaction.

Rooms:

- :mod:`.common`: shared checks: roles, who sells to whom, may the caller bill it, reasons.
- :mod:`.rules`: pure (no session): invoice states, status, settlement, totals, formats, plan lines.
- :mod:`.tax`: pure rounding: line amounts, reverse-charge note, splitting a credit's tax.
- :mod:`.ledger`: posting balanced transactions, balances, reversals.
- :mod:`.numbering`: gapless document numbers, their format, the InvoiceList feed position.
- :mod:`.terms`: payment terms (PaymentTermsSet), days until an invoice is due.
- :mod:`.tax_rules`: tax rules (TaxRuleSet/List/Remove) and the rule a buyer gets.
- :mod:`.documents`: reading invoices the caller may see, their API shape, invoice.* events.
- :mod:`.allocation`: settling invoices from prepaid credit and payments; settlement hooks.
- :mod:`.balances`: exposure and the credit limit, BalanceAdjust, AccountBalanceGet.
- :mod:`.invoices`: InvoiceCreate/AddLine/Issue/Get/List/Void/Render.
- :mod:`.credit_notes`: CreditNoteCreate/Get/List.
- :mod:`.payments`: offline payments (PaymentRecord/Allocate/List) and refund entries.
- :mod:`.statements`: StatementGet.
- :mod:`.render`: an invoice as HTML or PDF.
- :mod:`.run` (a package): every due subscription's next period invoiced
  exactly once. Rooms: ``driver`` (batches claimed with SKIP LOCKED, one
  transaction each), ``processes`` (workers that die with their parent; a
  dead worker's batch is billed by the others), ``load`` -> ``plan`` (pure:
  due subscriptions -> draft invoices) -> ``issue``/``write`` (COPY, ledger,
  numbers), ``wholesale``, ``summary``. ``run_service`` is its operation,
  ``run_models``/``run_types`` its tables and API types. From outside import
  only ``pba_server.billing.run``'s exported names (``run``, ``RunSummary``,
  ``JOB_NAME``, ``due_count``, ``sellers_of``, ...).
- :mod:`.jobs`: the periodic billing run, for bootstrap.
- :mod:`.ports`: what billing asks of the features above it: ``RenewalOrders``
  (the run leaves a subscription with a manual renewal order running to
  that order), implemented in orders and handed to the run by its caller.
- :mod:`.service`: imports the operation rooms so their operations register
  (``bootstrap.load_operations``); it holds no code, so import nothing from it.
- :mod:`.models`, :mod:`.types`: the tables and the API types.

Other packages may import: the public (non-underscore) functions of the rooms
above (operations such as ``invoices.invoice_create``, and
``common.seller_of``, ``balances.check_credit``/``exposure``,
``rules.plan_lines``, ``payments.payment_refund_entries``,
``allocation.SETTLEMENT_HOOKS``), :mod:`.ledger`, :mod:`.tax`, :mod:`.ports`,
:mod:`.models` and :mod:`.types`. Never an underscore name.
"""
