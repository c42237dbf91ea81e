"""``sqlite_direct.execute_each``: the same rows as SQLAlchemy would write, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from glimpse.db import migrate, sqlite_direct
from glimpse.db.engine import Database
from glimpse.db.models import outbox

WHEN = datetime(2026, 11, 27, 12, 30, 1, 654321)
FIXED = {"message_id": "m", "event_type": "image.create", "priority": "INFO",
         "envelope": '{"a": 1}', "created_at": WHEN, "attempts": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path}/direct.sqlite" if request.param == "sqlite"
           else request.getfixturevalue("pg_database"))
    database = Database(url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def _rows(db: Database) -> list[tuple[object, ...]]:
    with db.read() as session:
        return [tuple(r) for r in session.execute(
            select(outbox.c.driver, outbox.c.message_id, outbox.c.created_at,
                   outbox.c.delivered_at).order_by(outbox.c.id))]


def test_insert_one_row_per_value_with_the_fixed_columns(db: Database) -> None:
    with db.write() as session:
        counts = [sqlite_direct.execute_each(session, insert(outbox), FIXED, "driver", drivers)
                  for drivers in (["log", "messagingv2"], ["one"], [])]
    # psycopg does not count INSERTs (-1); SQLite does
    assert counts == ([2, 1, 0] if db.dialect == "sqlite" else [-1, -1, 0])
    # the datetime went through SQLAlchemy's converter: it reads back exactly
    assert _rows(db) == [("log", "m", WHEN, None), ("messagingv2", "m", WHEN, None),
                         ("one", "m", WHEN, None)]


def test_update_each_key_with_one_fixed_value(db: Database) -> None:
    with db.write() as session:
        sqlite_direct.execute_each(session, insert(outbox), FIXED, "driver",
                                   ["a", "b", "c", "d"])
    with db.read() as session:
        all_ids = [r[0] for r in session.execute(select(outbox.c.id).order_by(outbox.c.id))]
    ids = [all_ids[0], all_ids[2], all_ids[3]]
    mark = (update(outbox).where(outbox.c.id == bindparam("row_id"))
            .values(delivered_at=bindparam("stamp")))
    with db.write() as session:
        assert sqlite_direct.execute_each(session, mark, {"stamp": WHEN}, "row_id", ids) == 3
    assert [r[3] for r in _rows(db)] == [WHEN, None, WHEN, WHEN]


def test_a_failed_row_raises_sqlalchemys_error_and_rolls_the_change_back(db: Database) -> None:
    with pytest.raises(IntegrityError), db.write() as session:
        sqlite_direct.execute_each(session, insert(outbox), FIXED, "driver", ["ok", None])
    assert _rows(db) == []
