"""Dunning tables.

``dunning_schedules``: a seller's (provider or reseller) schedule, days after
an invoice's due date for each step (NULL: the step is off). Sellers without a
row use the defaults. ``dunning_steps``: one row per invoice and step done;
its primary key makes each step happen once. ``credit_holds``: since when an
account has been over its credit limit, and whether it is on hold.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pba_server.core.db import Base, UtcDateTime


class DunningSchedule(Base):
    __tablename__ = "dunning_schedules"

    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    reminder_days: Mapped[int | None] = mapped_column(Integer)
    second_reminder_days: Mapped[int | None] = mapped_column(Integer)
    suspend_days: Mapped[int | None] = mapped_column(Integer)
    terminate_days: Mapped[int | None] = mapped_column(Integer)
    credit_hold_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DunningStep(Base):
    __tablename__ = "dunning_steps"

    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), primary_key=True)
    # reminder | second_reminder | suspend | terminate
    step: Mapped[str] = mapped_column(String(24), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(255))


class CreditHold(Base):
    __tablename__ = "credit_holds"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    over_since: Mapped[date] = mapped_column(Date)
    on_hold: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
