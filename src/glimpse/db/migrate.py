"""Schema migrations (Alembic), callable from code and from ``glimpse-manage db sync``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


# PostgreSQL advisory lock key that migrations hold (the 64-bit "glimpse!" in ASCII).
MIGRATION_LOCK = 0x676C696D70736521


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``, in one transaction. Idempotent; safe to run
    at every start, and from several processes at once (deployment tools running
    ``db sync`` on every node): they take turns, blocking until the one before
    them commits, and the later ones find nothing to do. The turn is a PostgreSQL
    advisory lock held by the transaction, or SQLite's write lock taken at BEGIN
    (``BEGIN IMMEDIATE`` on engines from :func:`glimpse.db.engine.make_engine`)."""
    cfg = _config(engine)
    with engine.execution_options(sqlite_immediate=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()
