"""Idempotency keys: a repeated creating/money-moving call returns the first result.

The key row is inserted in the same transaction as the operation's effects, so
either both are committed or neither. Keys belong to the calling user (not its
account), so one user's key never answers, or even reveals, another user's
request; the dispatcher checks the caller's role for the operation before it
looks a key up. Uniqueness of (user, key) is the database's job: a concurrent
duplicate blocks on the unique index until the first commits, then fails, and
the dispatcher answers it from the stored row.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pba_server.core.errors import Conflict, ValidationError
from pba_server.core.models import IdempotencyKey

# setting idempotency_retention_days: Stripe keeps keys 24 h, but retried
# jobs often run days later
DEFAULT_RETENTION_DAYS = 7


def request_hash(operation: str, args: dict[str, Any]) -> str:
    canonical = json.dumps([operation, args], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= 128 or not key.isprintable():
        raise ValidationError("idempotency_key", "must be 1 to 128 printable characters")
    return key


def find(session: Session, user_id: int, key: str, operation: str, req_hash: str) -> str | None:
    """The stored JSON response for a replay of ``user_id``'s request, None if
    the key is new for that user. The caller has checked its right to the
    operation first."""
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.operation != operation or row.request_hash != req_hash:
        raise Conflict(
            f"idempotency key {key!r} was already used for a different request ({row.operation})"
        )
    return row.response


def store(
    session: Session,
    user_id: int,
    key: str,
    operation: str,
    req_hash: str,
    response_json: str,
    now: datetime,
) -> None:
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            operation=operation,
            request_hash=req_hash,
            response=response_json,
            created_at=now,
        )
    )
    session.flush()


def purge(session: Session, now: datetime, *, days: int = DEFAULT_RETENTION_DAYS) -> int:
    """Forget keys older than the retention period (``idempotency_retention_days``)."""
    keep = timedelta(days=days)
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - keep))
    return int(getattr(result, "rowcount", 0) or 0)
