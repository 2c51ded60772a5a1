"""Document numbers: each issuer's gapless invoice and credit note sequences
(and their format), and the server-wide position of InvoiceList's cursor."""

from __future__ import annotations

from sqlalchemy import select

from pba_server.accounts.records import get_account
from pba_server.billing import ledger
from pba_server.billing.common import BILLING, SELLERS
from pba_server.billing.models import BillingCounter, NumberSequence
from pba_server.billing.rules import check_number_format
from pba_server.billing.types import DocumentKind, NumberFormatInfo
from pba_server.core import audit
from pba_server.core.context import CallContext
from pba_server.core.errors import ValidationError
from pba_server.core.operations import operation

DEFAULT_FORMATS = {"invoice": "INV-{year}-{seq:06d}", "credit_note": "CN-{year}-{seq:06d}"}
FEED = "invoice_feed"


def next_number(ctx: CallContext, issuer_id: int, kind: str) -> tuple[int, str]:
    """The next gapless number of ``issuer_id``'s ``kind`` sequence.

    The sequence row is locked until the issuing transaction ends, so
    concurrent issuers queue and a rolled-back issue gives its number back.
    """
    ledger.upsert_ignore(
        ctx.session,
        NumberSequence,
        {"issuer_id": issuer_id, "kind": kind, "format": DEFAULT_FORMATS[kind], "last_number": 0},
    )
    seq = ctx.session.scalar(
        select(NumberSequence)
        .where(NumberSequence.issuer_id == issuer_id, NumberSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert seq is not None
    seq.last_number += 1
    return seq.last_number, seq.format.format(seq=seq.last_number, year=ctx.now().year)


def next_feed_position(ctx: CallContext) -> int:
    """A server-wide position for InvoiceList's cursor.

    The counter row stays locked until the issuing transaction commits, so
    positions become visible in increasing order: a reader that has seen
    position N has seen every position below it, and a cursor never skips one.
    """
    ledger.upsert_ignore(ctx.session, BillingCounter, {"name": FEED, "value": 0})
    row = ctx.session.scalar(
        select(BillingCounter)
        .where(BillingCounter.name == FEED)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    row.value += 1
    return int(row.value)


@operation("DocumentNumberFormatSet", roles=BILLING, mutating=True)
def document_number_format_set(
    ctx: CallContext, *, kind: DocumentKind, format: str, issuer_id: int | None = None
) -> NumberFormatInfo:
    """Set how an issuer's invoice or credit note numbers look, e.g.
    ``INV-{year}-{seq:06d}``. ``{seq}`` is the gapless sequence number (never
    reset), ``{year}`` the year of issue. Only numbers issued later change."""
    issuer = get_account(ctx, issuer_id if issuer_id is not None else ctx.principal.account_id)
    if issuer.type not in SELLERS:
        raise ValidationError("issuer_id", "only the provider and resellers issue documents")
    fmt = check_number_format(format)
    ledger.upsert_ignore(
        ctx.session,
        NumberSequence,
        {"issuer_id": issuer.id, "kind": kind, "format": fmt, "last_number": 0},
    )
    seq = ctx.session.scalar(
        select(NumberSequence)
        .where(NumberSequence.issuer_id == issuer.id, NumberSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert seq is not None
    before = seq.format
    seq.format = fmt
    audit.record(
        ctx,
        "number_format",
        f"{issuer.id}:{kind}",
        issuer.path,
        {"format": {"from": before, "to": fmt}},
    )
    return NumberFormatInfo(issuer_id=issuer.id, kind=kind, format=fmt, last_number=seq.last_number)
