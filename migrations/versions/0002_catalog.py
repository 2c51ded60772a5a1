"""catalog: resources, service templates, plans, versions and migrations, promotions and their uses, reseller and wholesale prices

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:04:01.367696
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op



revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('promotions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('percent', sa.Numeric(precision=19, scale=4), nullable=True),
    sa.Column('amount', sa.Numeric(precision=19, scale=4), nullable=True),
    sa.Column('currency', sa.CHAR(length=3), nullable=True),
    sa.Column('on_setup', sa.Boolean(), nullable=False),
    sa.Column('on_recurring', sa.Boolean(), nullable=False),
    sa.Column('cycles', sa.Integer(), nullable=True),
    sa.Column('periods', sa.Text(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('once_per_account', sa.Boolean(), nullable=False),
    sa.Column('used_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['accounts.id'], name=op.f('fk_promotions_owner_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions')),
    sa.UniqueConstraint('owner_id', 'code', name=op.f('uq_promotions_owner_id_code'))
    )
    op.create_table('resources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('usage_reporting', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['accounts.id'], name=op.f('fk_resources_owner_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resources')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_resources_owner_id_name'))
    )
    op.create_table('service_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('service_type', sa.String(length=32), nullable=False),
    sa.Column('module', sa.String(length=128), nullable=False),
    sa.Column('module_settings', sa.Text(), nullable=False),
    sa.Column('order_parameters', sa.Text(), nullable=False),
    sa.Column('shared_with_resellers', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['accounts.id'], name=op.f('fk_service_templates_owner_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_templates')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_service_templates_owner_id_name'))
    )
    op.create_table('plans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('first_published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['accounts.id'], name=op.f('fk_plans_owner_id_accounts')),
    sa.ForeignKeyConstraint(['template_id'], ['service_templates.id'], name=op.f('fk_plans_template_id_service_templates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_plans_owner_id_name'))
    )
    op.create_index('ix_plans_owner_status', 'plans', ['owner_id', 'status'], unique=False)
    op.create_index(op.f('ix_plans_template_id'), 'plans', ['template_id'], unique=False)
    op.create_table('promotion_uses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('promotion_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('once_key', sa.Integer(), nullable=True),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_promotion_uses_account_id_accounts')),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_promotion_uses_promotion_id_promotions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotion_uses')),
    sa.UniqueConstraint('promotion_id', 'once_key', name=op.f('uq_promotion_uses_promotion_id_once_key'))
    )
    op.create_index(op.f('ix_promotion_uses_account_id'), 'promotion_uses', ['account_id'], unique=False)
    op.create_table('template_resources',
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('default_limit', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.id'], name=op.f('fk_template_resources_resource_id_resources')),
    sa.ForeignKeyConstraint(['template_id'], ['service_templates.id'], name=op.f('fk_template_resources_template_id_service_templates')),
    sa.PrimaryKeyConstraint('template_id', 'resource_id', name=op.f('pk_template_resources'))
    )
    op.create_table('plan_migrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('from_version', sa.Integer(), nullable=False),
    sa.Column('to_version', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_migrations_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_migrations')),
    sa.UniqueConstraint('plan_id', 'from_version', name=op.f('uq_plan_migrations_plan_id_from_version'))
    )
    op.create_table('plan_upgrades',
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('to_plan_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_upgrades_plan_id_plans')),
    sa.ForeignKeyConstraint(['to_plan_id'], ['plans.id'], name=op.f('fk_plan_upgrades_to_plan_id_plans')),
    sa.PrimaryKeyConstraint('plan_id', 'to_plan_id', name=op.f('pk_plan_upgrades'))
    )
    op.create_table('plan_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('trial_length', sa.Integer(), nullable=True),
    sa.Column('trial_unit', sa.String(length=8), nullable=True),
    sa.Column('trial_requires_card', sa.Boolean(), nullable=False),
    sa.Column('auto_renew', sa.Boolean(), nullable=False),
    sa.Column('billing_in_advance', sa.Boolean(), nullable=False),
    sa.Column('change_timing', sa.String(length=16), nullable=False),
    sa.Column('refund_policy', sa.String(length=16), nullable=False),
    sa.Column('refund_days', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_versions_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_versions')),
    sa.UniqueConstraint('plan_id', 'version', name=op.f('uq_plan_versions_plan_id_version'))
    )
    op.create_table('promotion_plans',
    sa.Column('promotion_id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_promotion_plans_plan_id_plans')),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_promotion_plans_promotion_id_promotions')),
    sa.PrimaryKeyConstraint('promotion_id', 'plan_id', name=op.f('pk_promotion_plans'))
    )
    op.create_table('reseller_prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reseller_id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('period_count', sa.Integer(), nullable=False),
    sa.Column('period_unit', sa.String(length=8), nullable=False),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('setup_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('recurring_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('renewal_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_reseller_prices_plan_id_plans')),
    sa.ForeignKeyConstraint(['reseller_id'], ['accounts.id'], name=op.f('fk_reseller_prices_reseller_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reseller_prices')),
    sa.UniqueConstraint('reseller_id', 'plan_id', 'period_count', 'period_unit', name=op.f('uq_reseller_prices_reseller_id_plan_id_period_count_period_unit'))
    )
    op.create_index(op.f('ix_reseller_prices_plan_id'), 'reseller_prices', ['plan_id'], unique=False)
    op.create_table('wholesale_prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reseller_id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=True),
    sa.Column('resource_id', sa.Integer(), nullable=True),
    sa.Column('currency', sa.CHAR(length=3), nullable=False),
    sa.Column('setup_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('recurring_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_wholesale_prices_plan_id_plans')),
    sa.ForeignKeyConstraint(['reseller_id'], ['accounts.id'], name=op.f('fk_wholesale_prices_reseller_id_accounts')),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.id'], name=op.f('fk_wholesale_prices_resource_id_resources')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wholesale_prices')),
    sa.UniqueConstraint('reseller_id', 'plan_id', name=op.f('uq_wholesale_prices_reseller_id_plan_id')),
    sa.UniqueConstraint('reseller_id', 'resource_id', name=op.f('uq_wholesale_prices_reseller_id_resource_id'))
    )
    op.create_index(op.f('ix_wholesale_prices_plan_id'), 'wholesale_prices', ['plan_id'], unique=False)
    op.create_index(op.f('ix_wholesale_prices_resource_id'), 'wholesale_prices', ['resource_id'], unique=False)
    op.create_table('plan_periods',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('unit', sa.String(length=8), nullable=False),
    sa.Column('setup_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('recurring_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('renewal_fee', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['plan_versions.id'], name=op.f('fk_plan_periods_version_id_plan_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_periods')),
    sa.UniqueConstraint('version_id', 'count', 'unit', name=op.f('uq_plan_periods_version_id_count_unit'))
    )
    op.create_table('plan_rates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('included', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('maximum', sa.Numeric(precision=19, scale=4), nullable=True),
    sa.Column('unit_setup_price', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('unit_recurring_price', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('overage_price', sa.Numeric(precision=19, scale=4), nullable=False),
    sa.Column('optional', sa.Boolean(), nullable=False),
    sa.Column('complimentary', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.id'], name=op.f('fk_plan_rates_resource_id_resources')),
    sa.ForeignKeyConstraint(['version_id'], ['plan_versions.id'], name=op.f('fk_plan_rates_version_id_plan_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_rates')),
    sa.UniqueConstraint('version_id', 'resource_id', name=op.f('uq_plan_rates_version_id_resource_id'))
    )
    op.create_index(op.f('ix_plan_rates_resource_id'), 'plan_rates', ['resource_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_plan_rates_resource_id'), table_name='plan_rates')
    op.drop_table('plan_rates')
    op.drop_table('plan_periods')
    op.drop_index(op.f('ix_wholesale_prices_resource_id'), table_name='wholesale_prices')
    op.drop_index(op.f('ix_wholesale_prices_plan_id'), table_name='wholesale_prices')
    op.drop_table('wholesale_prices')
    op.drop_index(op.f('ix_reseller_prices_plan_id'), table_name='reseller_prices')
    op.drop_table('reseller_prices')
    op.drop_table('promotion_plans')
    op.drop_table('plan_versions')
    op.drop_table('plan_upgrades')
    op.drop_table('plan_migrations')
    op.drop_table('template_resources')
    op.drop_index(op.f('ix_promotion_uses_account_id'), table_name='promotion_uses')
    op.drop_table('promotion_uses')
    op.drop_index(op.f('ix_plans_template_id'), table_name='plans')
    op.drop_index('ix_plans_owner_status', table_name='plans')
    op.drop_table('plans')
    op.drop_table('service_templates')
    op.drop_table('resources')
    op.drop_table('promotions')
