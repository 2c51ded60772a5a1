"""Account statements: the booked movements of a date range with the running balance."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, select

from pba_server.accounts.records import get_account
from pba_server.billing import ledger
from pba_server.billing.common import READERS, day_start
from pba_server.billing.models import CreditNote, Invoice, LedgerEntry, LedgerTransaction, Payment
from pba_server.billing.types import StatementInfo, StatementLine
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.money import quantize
from pba_server.core.operations import operation


def _doc_numbers(ctx: CallContext, txs: Sequence[LedgerTransaction]) -> dict[tuple[str, int], str]:
    want: dict[str, set[int]] = {}
    for t in txs:
        if t.document_type and t.document_id is not None:
            want.setdefault(t.document_type, set()).add(t.document_id)
    out: dict[tuple[str, int], str] = {}
    for kind, model, col in (
        ("invoice", Invoice, Invoice.number),
        ("credit_note", CreditNote, CreditNote.number),
        ("payment", Payment, Payment.reference),
    ):
        if want.get(kind):
            for i, n in ctx.session.execute(select(model.id, col).where(model.id.in_(want[kind]))):  # type: ignore[attr-defined]
                out[(kind, i)] = n
    return out


@operation("StatementGet", roles=READERS)
def statement_get(
    ctx: CallContext, *, account_id: int, date_from: date, date_to: date
) -> StatementInfo:
    """The account's statement for [date_from, date_to] (UTC days): the opening
    balance, each invoice, credit note, payment, adjustment and void in the
    order booked with the running balance, and the closing balance. Moving
    prepaid credit onto an invoice does not change the balance and is not a line."""
    acc = get_account(ctx, account_id)
    if date_to < date_from:
        raise ValidationError("date_to", "is before date_from")
    c = acc.currency
    start, end = day_start(date_from), day_start(date_to + timedelta(days=1))
    mine = and_(
        LedgerEntry.owner_id == acc.id,
        LedgerEntry.currency == c,
        LedgerEntry.ledger_account.in_(ledger.CUSTOMER_ACCOUNTS),
    )
    opening = Decimal(
        ctx.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(mine, LedgerTransaction.at < start)
        )
    )
    rows = ctx.session.execute(
        select(LedgerTransaction, func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .where(mine, LedgerTransaction.at >= start, LedgerTransaction.at < end)
        .group_by(LedgerTransaction.id)
        .order_by(LedgerTransaction.id)
    ).all()
    numbers = _doc_numbers(ctx, [t for t, _s in rows])
    running = opening
    lines: list[StatementLine] = []
    for t, s in rows:
        amount = Decimal(s)
        if amount == 0:
            continue
        running += amount
        key = (t.document_type or "", t.document_id or 0)
        lines.append(
            StatementLine(
                at=t.at,
                kind=t.kind,
                description=t.memo,
                amount=quantize(amount, c),
                balance=quantize(running, c),
                document_id=t.document_id,
                document_number=numbers.get(key),
            )
        )
    return StatementInfo(
        account_id=acc.id,
        currency=c,
        date_from=date_from,
        date_to=date_to,
        opening_balance=quantize(opening, c),
        closing_balance=quantize(running, c),
        lines=lines,
    )
