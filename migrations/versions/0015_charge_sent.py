"""when a gateway charge call was sent

Revision ID: 0015_charge_sent
Revises: 0014_leases
Create Date: 2026-12-02 11:00:00

``gateway_payments.sent_at`` is committed just before the gateway is called.
Recovery takes a ``not_found`` from a gateway whose lookup lags (Stripe's
search) as final only ``lookup_settles_seconds`` after it; a row without it
was never sent (no money moved). Rows written before the upgrade may have
been sent: they get their ``created_at`` (the pending row was committed just
before the call).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_charge_sent'
down_revision = '0014_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_payments') as batch:
        batch.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE gateway_payments SET sent_at = created_at')


def downgrade() -> None:
    with op.batch_alter_table('gateway_payments') as batch:
        batch.drop_column('sent_at')
