"""Invoice numbers and feed positions for a whole batch at once: gapless per
issuer, taken from sequence rows locked in the batch's transaction (in issuer
order, so concurrent batches never deadlock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pba_server.billing.models import BillingCounter, NumberSequence
from pba_server.billing.run.sql import upsert

FEED = "invoice_feed"
NUMBER_FORMAT = "INV-{year}-{seq:06d}"


def take_numbers(
    session: Session, issuer_ids: Sequence[int], counts: dict[int, int], now: datetime
) -> dict[int, tuple[int, str]]:
    """Lock each issuer's invoice sequence (in issuer order, so concurrent
    batches never deadlock) and take ``counts[issuer]`` numbers at once.
    Returns issuer -> (first seq, format)."""
    ins = upsert(session)
    out: dict[int, tuple[int, str]] = {}
    for iid in sorted(issuer_ids):
        session.execute(
            ins(NumberSequence)
            .values(issuer_id=iid, kind="invoice", format=NUMBER_FORMAT, last_number=0)
            .on_conflict_do_nothing()
        )
        last, fmt = session.execute(
            select(NumberSequence.last_number, NumberSequence.format)
            .where(NumberSequence.issuer_id == iid, NumberSequence.kind == "invoice")
            .with_for_update()
        ).one()
        session.execute(
            update(NumberSequence)
            .where(NumberSequence.issuer_id == iid, NumberSequence.kind == "invoice")
            .values(last_number=last + counts[iid])
        )
        out[iid] = (last + 1, fmt)
    return out


def take_feed(session: Session, n: int) -> int:
    ins = upsert(session)
    session.execute(ins(BillingCounter).values(name=FEED, value=0).on_conflict_do_nothing())
    last = session.execute(
        select(BillingCounter.value).where(BillingCounter.name == FEED).with_for_update()
    ).scalar_one()
    session.execute(
        update(BillingCounter).where(BillingCounter.name == FEED).values(value=last + n)
    )
    return int(last) + 1
