"""``mark_delivered``: exactly the listed outbox rows get the delivery time, on both
databases (SQLite passes the ids as one JSON array, PostgreSQL as an expanded list)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox
from glimpse.notifications.delivery import mark_delivered

WHEN = datetime(2026, 11, 27, 12, 30, 1, 654321)
ROW = {"driver": "messagingv2", "message_id": "m", "event_type": "image.create",
       "priority": "INFO", "envelope": '{"a": 1}', "created_at": WHEN, "attempts": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path}/delivery.sqlite" if request.param == "sqlite"
           else request.getfixturevalue("pg_database"))
    database = Database(url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def _add(db: Database, count: int) -> list[int]:
    with db.write() as session:
        session.execute(insert(outbox), [ROW] * count)
    with db.read() as session:
        return [r[0] for r in session.execute(select(outbox.c.id).order_by(outbox.c.id))]


def _delivered(db: Database) -> list[datetime | None]:
    with db.read() as session:
        return [r[0] for r in session.execute(
            select(outbox.c.delivered_at).order_by(outbox.c.id))]


def test_marks_exactly_the_listed_rows_with_the_time_as_given(db: Database) -> None:
    ids = _add(db, 5)
    with db.write() as session:
        mark_delivered(session, [ids[3], ids[0], ids[4]], WHEN)
    # the datetime went through SQLAlchemy's converter: it reads back exactly
    assert _delivered(db) == [WHEN, None, None, WHEN, WHEN]


def test_a_relay_sized_list_and_ids_that_are_gone(db: Database) -> None:
    ids = _add(db, 600)
    with db.write() as session:
        mark_delivered(session, [*ids[:500], ids[-1] + 1000], WHEN)   # one id pruned meanwhile
    delivered = _delivered(db)
    assert delivered[:500] == [WHEN] * 500 and delivered[500:] == [None] * 100
