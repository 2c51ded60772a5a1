"""idempotency keys belong to the calling user, not its account

Revision ID: 0013_roles
Revises: 0012
Create Date: 2026-11-22 12:00:00

Keys were unique per (account, key), so a second user of the same account who
sent another user's key was answered with that user's stored result (an API
secret, once). Now they are unique per (user, key). The table is a 24-hour
replay cache nothing refers to, and its rows cannot be given to a user after
the fact, so it is dropped and made again: keys sent before the upgrade are
forgotten (a retry across the upgrade runs again). Upgrade with the API
stopped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_roles'
down_revision = '0012'
branch_labels = None
depends_on = None


def _create(owner: str, target: str) -> None:
    op.create_table(
        'idempotency_keys',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column(owner, sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('operation', sa.String(length=64), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('response', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            [owner], [f'{target}.id'], name=op.f(f'fk_idempotency_keys_{owner}_{target}')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
        sa.UniqueConstraint(owner, 'key', name=op.f(f'uq_idempotency_keys_{owner}_key')),
    )
    op.create_index(
        op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False
    )


def _drop() -> None:
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')


def upgrade() -> None:
    _drop()
    _create('user_id', 'users')


def downgrade() -> None:
    _drop()
    _create('account_id', 'accounts')
