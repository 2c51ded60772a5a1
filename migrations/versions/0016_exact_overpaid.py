"""the not-overpaid check of invoices, exact on SQLite too

Revision ID: 0016_exact_overpaid
Revises: 0015_charge_sent
Create Date: 2026-12-02 13:30:00

SQLite stores ``Numeric`` values as REAL, so ``paid_amount + credited_amount
<= total`` was evaluated in floating point there: 31.77 + 23.21 > 54.98, and
a payment that exactly settled such an invoice was refused. The difference
is rounded to 4 places (no currency has more) before it is compared, which is
exact on PostgreSQL as before.
"""

from __future__ import annotations

from alembic import op

revision = '0016_exact_overpaid'
down_revision = '0015_charge_sent'
branch_labels = None
depends_on = None

NEW = 'round(paid_amount + credited_amount - total, 4) <= 0'
OLD = 'paid_amount + credited_amount <= total'


def _replace(condition: str) -> None:
    with op.batch_alter_table('invoices') as batch:
        batch.drop_constraint(op.f('ck_invoices_not_overpaid'), type_='check')
        batch.create_check_constraint(op.f('ck_invoices_not_overpaid'), condition)


def upgrade() -> None:
    _replace(NEW)


def downgrade() -> None:
    _replace(OLD)
