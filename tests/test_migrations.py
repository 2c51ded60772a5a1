"""The migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pba_server import migrate
from pba_server.models import metadata


def test_models_match_migrations(migrated_engine):
    with migrated_engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []


def test_schema_is_current_after_upgrade(migrated_engine):
    state, current, head = migrate.schema_state(migrated_engine)
    assert (state, current) == ("current", head)
