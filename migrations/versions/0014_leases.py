"""leases on work in flight: gateway charges and provisioning operations

Revision ID: 0014_leases
Revises: 0013_roles
Create Date: 2026-12-02 10:00:00

The worker that owns a pending gateway charge or a running provisioning
operation renews ``lease_until`` while it works; a row whose lease expired
lost its worker (a crash) and is recovered at once instead of after an age
threshold. Rows written before the upgrade have no lease and are recovered by
the old thresholds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_leases'
down_revision = '0013_roles'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateway_payments') as batch:
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('provisioning_operations') as batch:
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('provisioning_operations') as batch:
        batch.drop_column('lease_until')
    with op.batch_alter_table('gateway_payments') as batch:
        batch.drop_column('lease_until')
