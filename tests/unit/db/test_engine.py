"""Database: when a read may run on the event loop without waiting."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_after_commit_hooks_run_once_committed_and_outside_the_write_gate(
        tmp_path: Path) -> None:
    from glimpse.db.engine import after_commit

    db = Database(f"sqlite:///{tmp_path}/e.sqlite")
    seen: list[tuple[bool, int]] = []
    assert db._gate is not None
    gate = db._gate

    def hook() -> None:
        with db.read() as other:   # another connection sees the committed row
            count = other.execute(text("SELECT count(*) FROM t")).scalar_one()
        seen.append((bool(getattr(gate._local, "held", False)), count))

    with db.write() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    with db.write() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        after_commit(session, hook)
        assert seen == []
    assert seen == [(False, 1)]
    db.dispose()


def test_wal_checkpoints_run_in_their_own_thread(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from glimpse.db import engine

    monkeypatch.setattr(engine, "CHECKPOINT_EVERY", 5)
    db = Database(f"sqlite:///{tmp_path}/e.sqlite")
    assert db.checkpointer is not None
    with db.write() as session:
        assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == 0
        session.execute(text("CREATE TABLE t (x TEXT)"))
    for i in range(4):
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (:x)"), {"x": "y" * 5000 + str(i)})
    deadline = time.monotonic() + 10
    while db.checkpointer.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db.checkpointer.runs == 1
    db.dispose()
    assert db.checkpointer._thread is not None and not db.checkpointer._thread.is_alive()
