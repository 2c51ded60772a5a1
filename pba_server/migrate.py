"""Alembic, driven from code: the migrations live in the top-level migrations/,
installed as pba_server._migrations (see pba_server.core.resources)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from pba_server.core import resources


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def schema_state(engine: Engine) -> tuple[str, str | None, str]:
    """('current'|'behind'|'empty'|'ahead', current revision, head revision)."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return "current", current, head
    if current is None:
        return "empty", current, head
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    return ("behind" if current in known else "ahead"), current, head
