"""Database: when a read may run on the event loop without waiting."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from glimpse.db.engine import Database


def test_sqlite_reads_without_waiting_once_a_connection_is_idle(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/e.sqlite")
    assert not db.reads_without_waiting()        # no idle connection yet: it would open one
    with db.read() as session:
        session.execute(text("SELECT 1"))
    assert db.reads_without_waiting()
    db.dispose()


def test_postgresql_reads_always_wait(pg_database: str) -> None:
    db = Database(pg_database)
    with db.read() as session:
        session.execute(text("SELECT 1"))
    assert not db.reads_without_waiting()
    db.dispose()
