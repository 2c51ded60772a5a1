"""Tables owned by core: audit log, idempotency keys, login throttling, nonces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, UtcDateTime


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_target", "target_type", "target_id"),
        Index(
            "ix_audit_log_path",
            "target_path",
            postgresql_ops={"target_path": "varchar_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    user_login: Mapped[str] = mapped_column(String(128))
    actor_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    operation: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    # path of the account the target belongs to, for subtree filtering
    target_path: Mapped[str] = mapped_column(String(512))
    changes: Mapped[str] = mapped_column(Text)  # JSON
    correlation_id: Mapped[str] = mapped_column(String(32))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    # per calling user: a key one user sent is never another's, even in one account
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(Text)  # JSON of the result
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class LoginFailure(Base):
    __tablename__ = "login_failures"

    login: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UsedNonce(Base):
    """WS-Security nonces seen recently, so a captured message cannot be replayed."""

    __tablename__ = "used_nonces"

    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
