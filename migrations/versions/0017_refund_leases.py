"""leases on gateway refunds in flight

Revision ID: 0017_refund_leases
Revises: 0016_exact_overpaid
Create Date: 2026-12-02 19:00:00

A pending refund gets what a pending charge has: ``lease_until``, renewed by
the request at the gateway (a refund whose lease expired lost its worker and
is recovered at once by ``payments-recover``), and ``sent_at``, committed just
before the gateway call (a refund without it was never sent: no money moved).
Rows written before the upgrade have no lease (recovered by the age
threshold, as before) and may have been sent: they get their ``created_at``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017_refund_leases'
down_revision = '0016_exact_overpaid'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_refunds') as batch:
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE gateway_refunds SET sent_at = created_at')


def downgrade() -> None:
    with op.batch_alter_table('gateway_refunds') as batch:
        batch.drop_column('sent_at')
        batch.drop_column('lease_until')
