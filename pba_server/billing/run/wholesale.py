"""The resellers' wholesale invoices, at the end of a billing run: the
charges the batches staged for each advanced reseller (its parent's wholesale
prices), one invoice per reseller and issuer, a transaction per reseller."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, exists, select, update
from sqlalchemy.orm import Session

from pba_server.accounts.models import Account, Contact
from pba_server.billing.models import PaymentTerms
from pba_server.billing.run.data import RunData
from pba_server.billing.run.issue import apply_prepaid_credit, write_invoices
from pba_server.billing.run.load import load_accounts, load_tax_rules
from pba_server.billing.run.plan import wholesale_draft
from pba_server.billing.run.sql import transaction
from pba_server.billing.run.summary import ZERO, DraftInvoice, RunSummary
from pba_server.billing.run_models import BilledItem, WholesaleCharge
from pba_server.core.clock import Clock
from pba_server.core.secrets import SecretBox


def _draft(
    s: Session, data: RunData, rid: int, charges: Sequence[tuple[str, Decimal, date, date, Decimal]]
) -> DraftInvoice | None:
    """Read what the reseller's invoice needs, then plan it (:func:`wholesale_draft`)."""
    load_accounts(s, data, [rid])
    issuer = data.seller_of(data.accounts[rid])
    if issuer is None:
        return None
    load_tax_rules(s, data, [issuer.id])
    region = s.scalar(
        select(Contact.state).where(Contact.account_id == rid).order_by(Contact.id).limit(1)
    )
    return wholesale_draft(data, rid, charges, (region or "").strip())


def _count(summary: RunSummary, inv: DraftInvoice, subs: int) -> None:
    summary.subscriptions += subs
    summary.invoices += 1
    summary.lines += len(inv.lines)
    summary.totals[inv.currency] = summary.totals.get(inv.currency, ZERO) + inv.total


def invoice_wholesale(
    engine: Engine,
    clock: Clock,
    *,
    dry_run: bool = False,
    session: Session | None = None,
    subtree: str | None = None,
    exclude_id: int | None = None,
    staged: Sequence[dict[str, Any]] = (),
    secrets: SecretBox | None = None,
) -> RunSummary:
    """Invoice every advanced reseller's staged wholesale charges (only those
    in ``subtree``, never ``exclude_id``'s): one invoice per reseller and
    issuer (its seller) per call, lines grouped by description, price and
    period. A dry run shows the invoices, adding the charges a dry run of the
    batches would have staged (``staged``)."""
    summary = RunSummary(as_of=clock.now().date(), dry_run=dry_run)
    data = RunData()
    pending = exists().where(
        WholesaleCharge.reseller_id == Account.id, WholesaleCharge.invoice_id.is_(None)
    )

    def candidates(after: int) -> Any:
        q = select(Account.id).where(Account.id > after, pending)
        if subtree is not None:
            q = q.where(Account.path.startswith(subtree, autoescape=True))
        if exclude_id is not None:
            q = q.where(Account.id != exclude_id)
        return q.order_by(Account.id)

    def pending_of(s: Session, rid: int) -> list[WholesaleCharge]:
        return list(
            s.scalars(
                select(WholesaleCharge)
                .where(WholesaleCharge.reseller_id == rid, WholesaleCharge.invoice_id.is_(None))
                .order_by(WholesaleCharge.id)
            )
        )

    if dry_run:
        with transaction(engine, session) as (s, _commit):
            extra: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in staged:
                if row["reseller_id"] != exclude_id:
                    extra[row["reseller_id"]].append(row)
            for rid in sorted(set(s.scalars(candidates(0))) | set(extra)):
                charges = [
                    (c.description, c.unit_price, c.period_start, c.period_end, c.quantity)
                    for c in pending_of(s, rid)
                ] + [
                    (
                        r["description"],
                        r["unit_price"],
                        r["period_start"],
                        r["period_end"],
                        r["quantity"],
                    )
                    for r in extra.get(rid, [])
                ]
                inv = _draft(s, data, rid, charges)
                if inv is not None:
                    _count(summary, inv, 0)
                    summary.drafts.append(inv)
        return summary
    after = 0
    while True:
        with transaction(engine, session) as (s, commit):
            q = candidates(after).limit(1).with_for_update(skip_locked=True, key_share=True)
            rid = s.scalar(q)
            if rid is None:
                break
            after = rid
            rows = pending_of(s, rid)
            inv = _draft(
                s,
                data,
                rid,
                [
                    (c.description, c.unit_price, c.period_start, c.period_end, c.quantity)
                    for c in rows
                ],
            )
            if inv is None:
                continue
            _count(summary, inv, len({c.subscription_id for c in rows}))
            terms = s.get(PaymentTerms, rid)
            summary.rows_written += write_invoices(
                s, [inv], {rid: terms.net_days if terms else 0}, clock.now()
            )
            ids = [c.id for c in rows]
            s.execute(
                update(WholesaleCharge)
                .where(WholesaleCharge.id.in_(ids))
                .values(invoice_id=inv.invoice_id)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(BilledItem)
                .where(BilledItem.id.in_({c.billed_item_id for c in rows}))
                .values(invoice_id=inv.invoice_id)
                .execution_options(synchronize_session=False)
            )
            summary.rows_written += len(ids)
            apply_prepaid_credit(s, clock, [inv], secrets)
            commit()
    return summary
