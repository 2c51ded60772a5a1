"""The BillingRun operation: staff start (or preview) the billing run."""

from __future__ import annotations

from datetime import date, timedelta

from pba_server.accounts.models import Account
from pba_server.billing import run as billing_run
from pba_server.billing.ports import RenewalOrders
from pba_server.billing.run_types import (
    BillingRunInfo,
    BillingRunInvoice,
    BillingRunLine,
    CurrencyTotal,
)
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import Forbidden, ValidationError
from pba_server.core.money import quantize
from pba_server.core.operations import operation
from pba_server.core.scope import visible_path

BILLING = frozenset({"billing"})
MAX_PREVIEW = 1000


def _invoice(d: billing_run.DraftInvoice) -> BillingRunInvoice:
    c = d.currency
    return BillingRunInvoice(
        issuer_id=d.issuer_id,
        account_id=d.account_id,
        currency=c,
        subtotal=quantize(d.subtotal, c),
        tax_total=quantize(d.tax_total, c),
        total=quantize(d.total, c),
        number=d.number,
        lines=[
            BillingRunLine(
                description=ln.description,
                quantity=ln.quantity.normalize(),
                unit_price=quantize(ln.unit_price, c),
                discount=quantize(ln.discount, c),
                net=quantize(ln.net, c),
                tax=quantize(ln.tax, c),
                total=quantize(ln.total, c),
                kind=ln.kind,
                subscription_id=ln.subscription_id,
                period_start=ln.period_start,
                period_end=ln.period_end,
            )
            for ln in d.lines
        ],
    )


@operation("BillingRun", roles=BILLING, mutating=True)
def billing_run_op(
    ctx: CallContext,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    account_id: int | None = None,
) -> BillingRunInfo:
    """Run the billing run now for the caller's account subtree (or
    ``account_id``'s): every active subscription due by ``as_of`` (default:
    today) gets its next period invoiced in advance, with the overage of the
    period that ended, late usage and tax; one invoice per customer and issuer.
    Exactly once: what was billed is never billed again, so calling it twice,
    or while the scheduled run is running, is safe. ``dry_run`` returns the
    invoices (with lines) it would issue and writes nothing."""
    today = ctx.now().date()
    day = as_of or today
    if day > today + timedelta(days=366):
        raise ValidationError("as_of", "is more than a year ahead")
    path = visible_path(ctx, account_id)
    acc_id = account_id if account_id is not None else ctx.principal.account_id
    me = ctx.session.get(Account, ctx.principal.account_id)
    if me is None or me.type not in ("provider", "reseller"):
        raise Forbidden("only the provider and resellers run billing")
    engine = ctx.session.get_bind()
    s = billing_run.run(
        engine,
        ctx.clock,
        as_of=day,
        dry_run=dry_run,
        account_id=int(acc_id),
        session=ctx.session,
        # a reseller's own wholesale invoice is its parent's business
        exclude_wholesale=ctx.principal.account_id,
        secrets=ctx.secrets,
        renewals=ctx.rt.port(RenewalOrders),
    )
    if not dry_run:
        audit.record(
            ctx,
            "billing_run",
            day.isoformat(),
            path,
            {"invoices": s.invoices, "subscriptions": s.subscriptions, "periods": s.periods},
        )
    return BillingRunInfo(
        as_of=day,
        dry_run=dry_run,
        subscriptions=s.subscriptions,
        periods=s.periods,
        expired=s.expired,
        invoices=s.invoices,
        lines=s.lines,
        rows_written=s.rows_written,
        totals=[CurrencyTotal(c, quantize(v, c)) for c, v in sorted(s.totals.items())],
        preview=[_invoice(d) for d in s.drafts[:MAX_PREVIEW]],
    )
