"""Alembic environment: the engine comes from pba-server (migrate.upgrade)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from pba_server.models import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: take the URL from alembic.ini / -x
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # `pba-server migrate` hands in its progress reporter: called after each revision
        on_version_apply=config.attributes.get("on_version_apply", ()),
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
