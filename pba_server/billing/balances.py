"""Balances: what an account owes (its exposure) against its credit limit,
adjustments outside any invoice, and the balance an account reads."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from pba_server.accounts.records import get_account
from pba_server.billing import ledger
from pba_server.billing.common import BILLING, READERS, billable, check_reason, seller_of, today_for
from pba_server.billing.ledger import ZERO, Leg
from pba_server.billing.models import Invoice
from pba_server.billing.types import AdjustmentInfo, BalanceInfo
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import CreditLimitExceeded, ValidationError
from pba_server.core.money import money, quantize
from pba_server.core.operations import operation


def exposure(ctx: CallContext, account_id: int, currency: str) -> Decimal:
    """What the account owes now: unsettled issued invoices and adjustments,
    less prepaid credit.

    A reseller's exposure is what it owes its own seller; what its customers
    owe the reseller is not counted (their debts are the reseller's risk, not
    its parent's).
    """
    receivable, credit = ledger.balance_of(ctx.session, account_id, currency)
    return receivable + credit


def check_credit(
    ctx: CallContext, account_id: int, amount: Decimal, *, pending: Decimal = ZERO
) -> None:
    """Refuse ``amount`` more on account when exposure + pending orders + it
    would pass the credit limit (``Client.CreditLimitExceeded``).

    Orders call this before accepting an order that is not paid up front,
    passing the total of the account's other pending orders in ``pending``.
    """
    acc = get_account(ctx, account_id, for_update=True)
    owed = exposure(ctx, acc.id, acc.currency)
    after = owed + pending + amount
    if after > acc.credit_limit:
        c = acc.currency
        raise CreditLimitExceeded(
            f"account {acc.id}: exposure {quantize(owed, c)} {c} + pending {quantize(pending, c)} "
            f"+ {quantize(amount, c)} = {quantize(after, c)} exceeds the credit limit "
            f"{quantize(acc.credit_limit, c)} {c} "
            f"(available {quantize(acc.credit_limit - owed - pending, c)})"
        )


@operation("BalanceAdjust", roles=BILLING, mutating=True)
def balance_adjust(
    ctx: CallContext, *, account_id: int, amount: Decimal, reason: str
) -> AdjustmentInfo:
    """Adjust what an account owes, outside any invoice: a positive ``amount``
    charges it, a negative one gives it credit (goodwill, write-off). Audited
    with the reason; a mistake is corrected by an opposite adjustment."""
    acc = billable(ctx, account_id)
    amt = money(amount, acc.currency, "amount")
    if amt == 0:
        raise ValidationError("amount", "must not be zero")
    why = check_reason(reason)
    issuer = seller_of(ctx, acc)
    tx = ledger.post(
        ctx,
        kind="adjustment",
        account_id=acc.id,
        currency=acc.currency,
        memo=why,
        legs=[Leg("customer_credit", acc.id, amt), Leg("adjustments", issuer.id, -amt)],
        document_type="adjustment",
    )
    row = ledger.balance_row(ctx, acc.id, acc.currency)
    audit.record(
        ctx, "balance", acc.id, acc.path, {"adjusted": amt, "reason": why, "transaction": tx.id}
    )
    return AdjustmentInfo(
        transaction_id=tx.id,
        account_id=acc.id,
        currency=acc.currency,
        amount=amt,
        reason=why,
        balance=quantize(row.receivable + row.credit, acc.currency),
    )


@operation("AccountBalanceGet", roles=READERS)
def account_balance_get(ctx: CallContext, *, account_id: int | None = None) -> BalanceInfo:
    """An account's balance (what it owes; negative: it has prepaid credit), the
    part of it that is overdue, and its available credit: the credit limit
    minus the exposure (the balance, when positive)."""
    acc = get_account(ctx, account_id if account_id is not None else ctx.principal.account_id)
    c = acc.currency
    receivable, credit = ledger.balance_of(ctx.session, acc.id, c)
    overdue = ctx.session.scalar(
        select(
            func.coalesce(
                func.sum(Invoice.total - Invoice.paid_amount - Invoice.credited_amount), 0
            )
        ).where(
            Invoice.account_id == acc.id,
            Invoice.status.in_(("issued", "partially_paid")),
            Invoice.due_date < today_for(ctx),
        )
    )
    bal = receivable + credit
    return BalanceInfo(
        account_id=acc.id,
        currency=c,
        balance=quantize(bal, c),
        receivable=quantize(receivable, c),
        credit=quantize(max(-credit, ZERO), c),
        overdue=quantize(Decimal(overdue), c),
        credit_limit=quantize(acc.credit_limit, c),
        available_credit=quantize(acc.credit_limit - bal, c),
    )
