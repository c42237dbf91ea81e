"""The Core tables in ``db/models.py`` describe exactly the schema the migrations build."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from glimpse.db import migrate, models
from glimpse.db.engine import Database


def test_the_tables_match_the_migrated_schema(db_url: str) -> None:
    db = Database(db_url)
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, models.metadata) == []
    db.dispose()


def test_the_outbox_indexes_are_partial_on_both_databases(db_url: str) -> None:
    """``metadata.create_all`` (as tests and tools may use) builds the same partial
    indexes as the migration, on PostgreSQL through the ``before_create`` listener."""
    db = Database(db_url)
    models.metadata.create_all(db.engine)
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            sql = dict(conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'outbox'"
                " AND type = 'index' AND sql IS NOT NULL").all())
        else:
            sql = dict(conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'outbox'").all())
        names = {ix["name"] for ix in inspect(conn).get_indexes("outbox")}
    assert names == {"ix_outbox_pending", "ix_outbox_delivered_at"}
    assert "delivered_at IS NULL" in sql["ix_outbox_pending"]
    assert "delivered_at IS NOT NULL" in sql["ix_outbox_delivered_at"]
    db.dispose()
