"""The double-entry ledger: the only code that writes ledger rows.

Every money movement is one :class:`LedgerTransaction` of two or more entries
that sum to zero (debits positive, credits negative), in one currency, written
in the caller's database transaction. Ledger accounts:

- ``receivable`` (owner: the customer) -- issued invoices not yet settled;
- ``customer_credit`` (owner: the customer) -- prepaid credit, a liability, so
  its normal balance is negative;
- ``revenue`` (owner: the issuer) -- net amounts of invoices;
- ``tax_payable`` (owner: the issuer, ref: tax rule id) -- tax collected;
- ``cash`` (owner: the issuer, ref: payment method) -- money received;
- ``adjustments`` (owner: the issuer) -- manual balance adjustments.

A customer's balance (what it owes) is the sum of its ``receivable`` and
``customer_credit`` entries. ``account_balances`` caches both sums;
:func:`verify` recomputes them from the entries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pba_server.billing.models import (
    AccountBalance,
    Invoice,
    LedgerEntry,
    LedgerTransaction,
    Payment,
)
from pba_server.core.context import CallContext
from pba_server.core.errors import InternalError

CUSTOMER_ACCOUNTS = ("receivable", "customer_credit")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Leg:
    ledger_account: str
    owner_id: int
    amount: Decimal
    ref: str | None = None


def upsert_ignore(session: Session, table: object, values: dict[str, object]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on either database."""
    dialect = session.get_bind().dialect.name
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(ins(table).values(**values).on_conflict_do_nothing())  # type: ignore[arg-type]


def balance_row(ctx: CallContext, account_id: int, currency: str) -> AccountBalance:
    """The cached balance row, created if missing and locked for update."""
    upsert_ignore(
        ctx.session,
        AccountBalance,
        {"account_id": account_id, "currency": currency, "receivable": 0, "credit": 0},
    )
    row = ctx.session.scalar(
        select(AccountBalance)
        .where(AccountBalance.account_id == account_id, AccountBalance.currency == currency)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row  # type: ignore[no-any-return]


def balance_of(session: Session, account_id: int, currency: str) -> tuple[Decimal, Decimal]:
    """(receivable, customer credit) of an account from the cache, without locking."""
    row = session.get(AccountBalance, (account_id, currency))
    return (row.receivable, row.credit) if row else (ZERO, ZERO)


def post(
    ctx: CallContext,
    *,
    kind: str,
    account_id: int,
    currency: str,
    memo: str,
    legs: list[Leg],
    document_type: str | None = None,
    document_id: int | None = None,
    reverses_id: int | None = None,
) -> LedgerTransaction:
    """Write one balanced transaction and update the balance cache."""
    legs = [leg for leg in legs if leg.amount != 0]
    if len(legs) < 2 or sum((leg.amount for leg in legs), ZERO) != 0:
        # a programming error, never a client's: refuse to write an unbalanced book
        raise InternalError(f"unbalanced ledger transaction for {kind}: {legs}")
    tx = LedgerTransaction(
        at=ctx.now(),
        kind=kind,
        currency=currency,
        account_id=account_id,
        document_type=document_type,
        document_id=document_id,
        memo=memo[:255],
        reverses_id=reverses_id,
        user_login=ctx.principal.login,
    )
    ctx.session.add(tx)
    ctx.session.flush()
    ctx.session.add_all(
        LedgerEntry(
            transaction_id=tx.id,
            ledger_account=leg.ledger_account,
            owner_id=leg.owner_id,
            ref=leg.ref,
            currency=currency,
            amount=leg.amount,
        )
        for leg in legs
    )
    deltas: dict[int, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for leg in legs:
        if leg.ledger_account in CUSTOMER_ACCOUNTS:
            deltas[leg.owner_id][CUSTOMER_ACCOUNTS.index(leg.ledger_account)] += leg.amount
    for owner, (receivable, credit) in sorted(deltas.items()):
        row = balance_row(ctx, owner, currency)
        row.receivable += receivable
        row.credit += credit
    ctx.session.flush()
    return tx


def reverse(ctx: CallContext, tx: LedgerTransaction, *, kind: str, memo: str) -> LedgerTransaction:
    """A new transaction with every entry of ``tx`` negated."""
    entries = ctx.session.scalars(
        select(LedgerEntry).where(LedgerEntry.transaction_id == tx.id).order_by(LedgerEntry.id)
    ).all()
    return post(
        ctx,
        kind=kind,
        account_id=tx.account_id,
        currency=tx.currency,
        memo=memo,
        legs=[Leg(e.ledger_account, e.owner_id, -e.amount, e.ref) for e in entries],
        document_type=tx.document_type,
        document_id=tx.document_id,
        reverses_id=tx.id,
    )


def verify(session: Session) -> list[str]:
    """Every mismatch between the books and what they must satisfy; empty when sound.

    Sums are taken in Python with Decimal: SQLite adds NUMERIC columns as
    floats, which is not good enough for checking that books balance.
    """
    problems: list[str] = []
    tx_currency: dict[int, str] = {
        t: c for t, c in session.execute(select(LedgerTransaction.id, LedgerTransaction.currency))
    }
    per_tx: dict[tuple[int, str], Decimal] = defaultdict(lambda: ZERO)
    sums: dict[tuple[int, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    rows = session.execute(
        select(
            LedgerEntry.transaction_id,
            LedgerEntry.currency,
            LedgerEntry.ledger_account,
            LedgerEntry.owner_id,
            LedgerEntry.amount,
        ).execution_options(yield_per=5000)
    )
    for tx_id, cur, acct, owner, amount in rows:
        per_tx[(tx_id, cur)] += amount
        if tx_currency.get(tx_id) != cur:
            problems.append(f"transaction {tx_id} has an entry in {cur}, not its currency")
        if acct in CUSTOMER_ACCOUNTS:
            sums[(owner, cur)][CUSTOMER_ACCOUNTS.index(acct)] += amount
    problems += [
        f"transaction {t} does not balance in {c}: {s}" for (t, c), s in per_tx.items() if s != 0
    ]
    problems += [
        f"transaction {t} has no entries" for t in tx_currency if (t, tx_currency[t]) not in per_tx
    ]
    cached = {(r.account_id, r.currency): r for r in session.scalars(select(AccountBalance))}
    for key in sorted(set(sums) | set(cached)):
        want = sums.get(key, [ZERO, ZERO])
        row = cached.get(key)
        have = [row.receivable, row.credit] if row else [ZERO, ZERO]
        if have != want:
            problems.append(
                f"account {key[0]} {key[1]}: cached receivable/credit {have[0]}/{have[1]} "
                f"!= entries {want[0]}/{want[1]}"
            )
    # the receivable of an account is exactly what its issued invoices leave unsettled
    outstanding: dict[tuple[int, str], Decimal] = defaultdict(lambda: ZERO)
    for inv in session.scalars(
        select(Invoice).where(Invoice.status.in_(("issued", "partially_paid", "paid")))
    ):
        outstanding[(inv.account_id, inv.currency)] += (
            inv.total - inv.paid_amount - inv.credited_amount
        )
        if inv.paid_amount + inv.credited_amount > inv.total or inv.paid_amount < 0:
            problems.append(f"invoice {inv.id} is settled beyond its total")
    for key in sorted(set(outstanding) | set(sums)):
        if outstanding.get(key, ZERO) != sums.get(key, [ZERO, ZERO])[0]:
            problems.append(
                f"account {key[0]} {key[1]}: unsettled invoices {outstanding.get(key, ZERO)} "
                f"!= receivable {sums.get(key, [ZERO, ZERO])[0]}"
            )
    over = session.execute(select(Payment.id).where(Payment.allocated > Payment.amount)).all()
    problems += [f"payment {i} is allocated beyond its amount" for (i,) in over]
    return problems
