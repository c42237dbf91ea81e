"""The relay's read and mark on both databases: ``DriverWorker.pending`` gives the
stored rows back exactly, ``mark_delivered`` marks exactly the listed rows (SQLite
gets the ids as one JSON array, PostgreSQL as an expanded list)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select

from glimpse.db.engine import Database
from glimpse.db.models import outbox
from glimpse.notifications.delivery import DriverWorker, RelaySettings, mark_delivered
from glimpse.notifications.drivers.log import LogDriver

WHEN = datetime(2026, 11, 27, 12, 30, 1, 654321)
ROW = {"driver": "messagingv2", "message_id": "m", "event_type": "image.create",
       "priority": "INFO", "envelope": '{"a": 1}', "created_at": WHEN, "attempts": 0}


def _add(db: Database, count: int, **values: object) -> list[int]:
    with db.write() as session:
        session.execute(insert(outbox), [{**ROW, **values}] * count)
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


def test_pending_gives_the_stored_rows_back_exactly_in_id_order(db: Database) -> None:
    awkward = ('{"payload":{"name":"образ \\"q\\" \\\\ \\t \\u0000 \u2603 値"},'
               '"n":[1.5e300,-0,null,true]}')
    ids = _add(db, 3, envelope=awkward)
    retry_at = datetime(2026, 11, 27, 13, 0, 0, 1)
    with db.write() as session:
        session.execute(outbox.update().where(outbox.c.id == ids[1])
                        .values(attempts=2, next_attempt_at=retry_at))
    _add(db, 1, driver="log")                                  # another driver's row
    worker = DriverWorker(db, "messagingv2", LogDriver(), node_id="n",
                          settings=RelaySettings())
    rows = worker.pending(10)
    assert [r.event.id for r in rows] == ids
    assert {r.event.envelope for r in rows} == {awkward}
    assert [(r.event.message_id, r.event.event_type, r.event.priority) for r in rows] == [
        ("m", "image.create", "INFO")] * 3
    assert [(r.attempts, r.next_attempt_at) for r in rows] == [
        (0, None), (2, retry_at), (0, None)]
    assert [r.event.id for r in worker.pending(1)] == ids[:1]
    assert [r.event.id for r in worker.pending(10, exclude=ids[:2])] == ids[2:]
    with db.write() as session:
        mark_delivered(session, ids[:1], WHEN)
    assert [r.event.id for r in worker.pending(10)] == ids[1:]
