"""Payment terms: how many days after issue an account's invoices are due."""

from __future__ import annotations

from pba_server.billing.common import BILLING, billable
from pba_server.billing.models import PaymentTerms
from pba_server.billing.types import PaymentTermsInfo
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.operations import operation

MAX_NET_DAYS = 365


def net_days_of(ctx: CallContext, account_id: int) -> int:
    """Days after issue an account's invoices are due (0: on issue)."""
    row = ctx.session.get(PaymentTerms, account_id)
    return row.net_days if row else 0


@operation("PaymentTermsSet", roles=BILLING | {"sales"}, mutating=True)
def payment_terms_set(ctx: CallContext, *, account_id: int, net_days: int) -> PaymentTermsInfo:
    """Set an account's payment terms: invoices are due ``net_days`` after issue
    (0, the default, means due on issue)."""
    acc = billable(ctx, account_id)
    if not 0 <= net_days <= MAX_NET_DAYS:
        raise ValidationError("net_days", f"must be between 0 and {MAX_NET_DAYS}")
    row = ctx.session.get(PaymentTerms, acc.id)
    before = row.net_days if row else 0
    if row is None:
        ctx.session.add(PaymentTerms(account_id=acc.id, net_days=net_days))
    else:
        row.net_days = net_days
    audit.record(
        ctx, "payment_terms", acc.id, acc.path, {"net_days": {"from": before, "to": net_days}}
    )
    return PaymentTermsInfo(account_id=acc.id, net_days=net_days)
