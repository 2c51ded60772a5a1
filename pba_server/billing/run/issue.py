"""Issuing the run's draft invoices in bulk: numbers, invoices, lines, ledger
transactions and entries, cached balances and ``invoice.issued`` events, all
in the batch's transaction; then prepaid credit applied to the new invoices
of the (few) accounts holding some."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account
from pba_server.billing.models import (
    AccountBalance,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    LedgerTransaction,
)
from pba_server.billing.run.numbers import take_feed, take_numbers
from pba_server.billing.run.plan import BatchPlan
from pba_server.billing.run.sql import in_ids, upsert
from pba_server.billing.run.summary import ZERO, DraftInvoice, RunSummary
from pba_server.billing.run.write import (
    alloc_ids,
    bulk_insert,
    migrate_subscriptions,
    update_subscriptions,
)
from pba_server.billing.run_models import BilledItem, WholesaleCharge
from pba_server.core.clock import Clock
from pba_server.core.money import quantize
from pba_server.core.secrets import SecretBox
from pba_server.events import outbox
from pba_server.usage.models import UsageRecord

RUN_LOGIN = "system:billing-run"
# invoice_lines.link_type of each kind of line the run writes
LINK_TYPES = {
    "recurring": "subscription",
    "overage": "usage",
    "late": "usage",
    "wholesale": "one_off",
}


def add_to_balances(session: Session, balances: dict[tuple[int, str], Decimal]) -> int:
    """Add to the cached receivables (upserting, in key order); rows written."""
    if not balances:
        return 0
    ins = upsert(session)
    stmt = ins(AccountBalance)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "currency"],
        set_={"receivable": AccountBalance.receivable + stmt.excluded.receivable},
    )
    rows = [
        {"account_id": a, "currency": c, "receivable": v, "credit": ZERO}
        for (a, c), v in sorted(balances.items())
    ]
    session.execute(stmt, rows)
    return len(rows)


def write_invoices(
    session: Session,
    drafts: Sequence[DraftInvoice],
    due_days: dict[int, int],
    now: datetime,
) -> int:
    """Issue ``drafts`` (taxed, with totals) in bulk: numbers, invoices, lines,
    ledger transactions and entries, cached balances. Returns rows written."""
    drafts = [d for d in drafts if d.lines]
    if not drafts:
        return 0
    today = now.astimezone(UTC).date()
    counts: dict[int, int] = defaultdict(int)
    for d in drafts:
        counts[d.issuer_id] += 1
    # lock order (core/db.py): the balance rows (sorted) before the number
    # sequences and the feed counter, as InvoiceIssue takes them
    balances: dict[tuple[int, str], Decimal] = defaultdict(lambda: ZERO)
    for d in drafts:
        if d.total > 0:
            balances[(d.account_id, d.currency)] += d.total
    n = add_to_balances(session, balances)
    firsts = take_numbers(session, list(counts), counts, now)
    feed = take_feed(session, len(drafts))
    inv_ids = alloc_ids(session, "invoices", len(drafts))
    posted = [d for d in drafts if d.total > 0]
    tx_ids = alloc_ids(session, "ledger_transactions", len(posted))
    next_seq = {i: firsts[i][0] for i in firsts}
    inv_rows, line_rows, tx_rows, entry_rows = [], [], [], []
    tx_iter = iter(tx_ids)
    for d, iid in zip(drafts, inv_ids, strict=True):
        seq = next_seq[d.issuer_id]
        next_seq[d.issuer_id] += 1
        d.invoice_id = iid
        d.number = firsts[d.issuer_id][1].format(seq=seq, year=now.year)
        d.due_date = today + timedelta(days=due_days.get(d.account_id, 0))
        paid = d.total == 0
        inv_rows.append(
            {
                "id": iid,
                "issuer_id": d.issuer_id,
                "account_id": d.account_id,
                "currency": d.currency,
                "status": "paid" if paid else "issued",
                "number": d.number,
                "seq": seq,
                "feed_position": feed,
                "created_at": now,
                "issued_at": now,
                "due_date": d.due_date,
                "voided_at": None,
                "subtotal": d.subtotal,
                "tax_total": d.tax_total,
                "total": d.total,
                "paid_amount": ZERO,
                "credited_amount": ZERO,
                "reverse_charge": d.reverse_charge,
                "buyer_tax_id": d.buyer_tax_id,
                "notes": d.notes,
            }
        )
        feed += 1
        for pos, ln in enumerate(d.lines, 1):
            line_rows.append(
                {
                    "invoice_id": iid,
                    "position": pos,
                    "description": ln.description[:255],
                    "quantity": ln.quantity,
                    "unit_price": ln.unit_price,
                    "discount": ln.discount,
                    "tax_inclusive": ln.tax_inclusive,
                    "tax_rule_id": ln.tax_rule_id,
                    "explicit_tax_rule": False,
                    "tax_name": ln.tax_name,
                    "tax_rate": ln.tax_rate,
                    "net": ln.net,
                    "tax": ln.tax,
                    "total": ln.total,
                    "credited": ZERO,
                    "period_start": ln.period_start,
                    "period_end": ln.period_end,
                    "link_type": LINK_TYPES[ln.kind],
                    "link_id": str(ln.subscription_id) if ln.subscription_id else None,
                }
            )
        if d.total > 0:
            tid = next(tx_iter)
            tx_rows.append(
                {
                    "id": tid,
                    "at": now,
                    "kind": "invoice",
                    "currency": d.currency,
                    "account_id": d.account_id,
                    "document_type": "invoice",
                    "document_id": iid,
                    "memo": f"invoice {d.number}",
                    "reverses_id": None,
                    "user_login": RUN_LOGIN,
                }
            )
            legs: list[tuple[str, int, Decimal, str | None]] = [
                ("receivable", d.account_id, d.total, None),
                ("revenue", d.issuer_id, -d.subtotal, None),
            ]
            tax_by_rule: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
            for ln in d.lines:
                if ln.tax:
                    tax_by_rule[ln.tax_rule_id] += ln.tax
            legs += [("tax_payable", d.issuer_id, -t, str(r)) for r, t in tax_by_rule.items() if t]
            for acct, owner, amount, ref in legs:
                if amount != 0:
                    entry_rows.append(
                        {
                            "transaction_id": tid,
                            "ledger_account": acct,
                            "owner_id": owner,
                            "ref": ref,
                            "currency": d.currency,
                            "amount": amount,
                        }
                    )
    n += bulk_insert(session, Invoice, inv_rows)
    n += bulk_insert(session, InvoiceLine, line_rows)
    n += bulk_insert(session, LedgerTransaction, tx_rows)
    n += bulk_insert(session, LedgerEntry, entry_rows)
    n += _emit_issued(session, drafts, now)
    return n


def _emit_issued(session: Session, drafts: Sequence[DraftInvoice], now: datetime) -> int:
    """``invoice.issued`` for each invoice just written, with the payload the
    billing core's ``_issue`` gives it, in the same transaction (an invoice
    rolled back raises nothing; one committed raises its event once)."""
    buyers = {d.account_id for d in drafts}
    paths = dict(
        session.execute(
            select(Account.id, Account.path).where(in_ids(session, Account.id, buyers))
        ).all()
    )
    new = [
        outbox.NewEvent(
            ("invoice", d.invoice_id),
            {
                "invoice_id": d.invoice_id,
                "number": d.number,
                "total": quantize(d.total, d.currency),
                "currency": d.currency,
                "due_date": d.due_date,
            },
            d.account_id,
            str(paths[d.account_id]),
        )
        for d in drafts
    ]
    # the run's COPY writer: a batch's events cost little next to its invoices
    ids = outbox.emit_many(
        session, "invoice.issued", new, now=now, correlation_id=RUN_LOGIN, writer=bulk_insert
    )
    return len(ids)


def write_batch(
    session: Session, plan: BatchPlan, due_days: dict[int, int], now: datetime, summary: RunSummary
) -> int:
    """Write a planned batch whole: the subscriptions advanced, the invoices
    issued, what was billed recorded, the usage marked billed. Counts the
    invoices, lines and totals into ``summary``; returns rows written."""
    drafts = list(plan.invoices.values())
    # the subscriptions first: a conflict is found before any other work, the
    # issuer's number sequence is locked for less time, and the foreign-key
    # checks of billed_items find rows this transaction already locked
    n = update_subscriptions(session, plan.sub_updates)
    n += migrate_subscriptions(session, plan.migrations)
    n += write_invoices(session, drafts, due_days, now)
    ids = {k: d.invoice_id for k, d in plan.invoices.items()}
    item_ids = alloc_ids(session, "billed_items", len(plan.items))
    rows = []
    for iid, item, key in zip(item_ids, plan.items, plan.item_invoice, strict=True):
        rows.append({"id": iid, **item, "invoice_id": ids.get(key) if key else None})
    n += bulk_insert(session, BilledItem, rows)
    n += bulk_insert(
        session,
        WholesaleCharge,
        [{**row, "billed_item_id": item_ids[idx]} for idx, row in plan.wholesale],
    )
    for i in range(0, len(plan.usage_ids), 5000):
        chunk = plan.usage_ids[i : i + 5000]
        session.execute(
            update(UsageRecord)
            .where(in_ids(session, UsageRecord.id, chunk))
            .values(billed=True)
            .execution_options(synchronize_session=False)
        )
        n += len(chunk)
    summary.invoices += len(drafts)
    summary.lines += sum(len(d.lines) for d in drafts)
    for d in drafts:
        summary.totals[d.currency] = summary.totals.get(d.currency, ZERO) + d.total
    return n


def apply_prepaid_credit(
    session: Session,
    clock: Clock,
    drafts: Sequence[DraftInvoice],
    secrets: SecretBox | None = None,
) -> None:
    """Settle new invoices of accounts holding prepaid credit (rare: the ORM path)."""
    owed = [d for d in drafts if d.total > 0 and d.invoice_id]
    if not owed:
        return
    keys = [(d.account_id, d.currency) for d in owed]
    with_credit = {
        (a, c)
        for a, c in session.execute(
            select(AccountBalance.account_id, AccountBalance.currency).where(
                tuple_(AccountBalance.account_id, AccountBalance.currency).in_(keys),
                AccountBalance.credit < 0,
            )
        )
    }
    if not with_credit:
        return
    from pba_server.billing.allocation import apply_credit

    for d in owed:
        if (d.account_id, d.currency) not in with_credit:
            continue
        acc = session.get(Account, d.account_id)
        inv = session.get(Invoice, d.invoice_id, populate_existing=True)
        assert acc is not None and inv is not None
        ctx = _system_ctx(session, clock, acc, secrets)
        apply_credit(ctx, acc, [inv])


def _system_ctx(session: Session, clock: Clock, acc: Account, secrets: SecretBox | None) -> Any:
    from pba_server.core.auth import Principal
    from pba_server.core.context import CallContext

    class _Uow:
        """The batch's session as a unit of work: the batch commits it; the
        event delivery thread finds events without a nudge."""

        def __init__(self, s: Session) -> None:
            self.session = s

        def after_commit(self, cb: Callable[[], None]) -> None:
            pass

    # the run's secret box (the server's, the CLI's); a throwaway one where the
    # caller has none (crediting an invoice decrypts no secret)
    box = secrets if secrets is not None else SecretBox(SecretBox.generate_key())
    principal = Principal(
        user_id=0,
        login=RUN_LOGIN,
        account_id=acc.id,
        account_path=acc.path,
        roles=frozenset({"admin"}),
        via="system",
    )
    return CallContext(
        uow=_Uow(session),  # type: ignore[arg-type]
        principal=principal,
        clock=clock,
        secrets=box,
        operation="BillingRun",
    )
