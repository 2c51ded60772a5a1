"""The billing run: every due subscription's next period, invoiced exactly once.

For every active subscription whose ``next_billing_date`` is on or before the
run's ``as_of`` date, the run bills, for each period that has fallen due (a
subscription several periods behind gets each missed period once):

- the recurring fee of the next period, in advance, priced from the pinned
  plan version (or the basic reseller's price list) by
  :func:`pba_server.catalog.pricing.price_period` (the renewal fee too, where
  the plan has one; extra units bought at their recurring price; a promotion
  while ``promotion_cycles_left`` lasts);
- the overage of the period that just ended (usage above included + bought,
  at the overage price), and, as a *late* line, usage of earlier periods that
  arrived after they were billed;
- tax by the seller's tax rules, as the billing core does.

One invoice per customer and issuer per run groups the customer's due
subscriptions. A subscription whose term ends without auto-renewal (or with a
scheduled cancellation) is not renewed: its last overage is billed and it
becomes ``expired`` (``cancelled``) with a note in ``cancel_reason``.

For the customers of an advanced reseller the run also stages the reseller's
wholesale charges (its parent's wholesale prices); :func:`invoice_wholesale`
invoices them at the end of the run, one invoice per reseller and issuer.

Exactly once: each billed (subscription, period start, kind) is a row of
``billed_items`` (UNIQUE), written in the transaction that writes the invoice
and advances the subscription. Work is claimed by customer: a batch locks a
range of customer accounts with ``FOR NO KEY UPDATE SKIP LOCKED`` (other
processes skip them), then reads their due subscriptions afresh and locks
them; a batch commits or leaves nothing. A run killed at any point leaves
whole batches; the next run continues with what is still due.

Set-based: a batch is a handful of queries whatever its size; rows are
written with multi-row inserts (PostgreSQL: COPY), ids taken from the
sequences in one statement, invoice numbers taken for the whole batch at once
per issuer.

Rooms (a batch flows load -> plan -> issue/write, driven by the driver):

- :mod:`.driver`: the run, batches claimed and retried, one transaction each;
- :mod:`.processes`: worker processes that die with their parent and whose
  death does not end the run;
- :mod:`.load`: what a batch reads (and the shared :mod:`.data` it fills);
- :mod:`.plan`: pure, due subscriptions -> draft invoices (no database);
- :mod:`.issue`: draft invoices issued in bulk (ledger, balances, events),
  prepaid credit; :mod:`.numbers`: invoice numbers for a batch at once;
- :mod:`.write`: COPY and multi-row writes, subscriptions advanced;
- :mod:`.wholesale`: the resellers' wholesale invoices;
- :mod:`.summary`: draft invoices and the run's summary.

Outside this package, import only the names below.
"""

from pba_server.billing.run.data import Acc
from pba_server.billing.run.driver import DEFAULT_BATCH, JOB_NAME, due_count, run, run_batches
from pba_server.billing.run.issue import apply_prepaid_credit, write_invoices
from pba_server.billing.run.load import sellers_of
from pba_server.billing.run.summary import DraftInvoice, DraftLine, RunSummary, summary_json
from pba_server.billing.run.wholesale import invoice_wholesale
from pba_server.billing.run.write import BatchConflict, alloc_ids, bulk_insert, copy_text

__all__ = [
    "DEFAULT_BATCH",
    "JOB_NAME",
    "Acc",
    "BatchConflict",
    "DraftInvoice",
    "DraftLine",
    "RunSummary",
    "alloc_ids",
    "apply_prepaid_credit",
    "bulk_insert",
    "copy_text",
    "due_count",
    "invoice_wholesale",
    "run",
    "run_batches",
    "sellers_of",
    "summary_json",
    "write_invoices",
]
