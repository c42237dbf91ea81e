"""Notifier.record: one outbox row per driver, in the caller's transaction.

The outbox lives in a throw-away SQLite file (the recorder's INSERT is
compiled per dialect and is part of what is tested; PostgreSQL is covered by
tests/integration/test_notifications_rabbitmq.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Row, select

from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox as outbox_table
from glimpse.notifications.recorder import Notifier


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'recorder.sqlite'}")
    migrate.upgrade(database.engine)
    return database


def outbox(db: Database) -> list[Row[Any]]:
    with db.read() as session:
        return list(session.execute(select(outbox_table).order_by(outbox_table.c.id)))


def test_non_ascii_payloads_are_stored_as_json_that_reads_back_equal(db: Database) -> None:
    notifier = Notifier(["messagingv2"], publisher_id="image.test")
    payload = {"id": "x", "name": "образ \u2603 \"q\" \\ \t", "tags": ["値"], "size": 2**40,
               "deleted_at": None, "protected": False}
    with db.write() as session:
        envelope = notifier.record(session, "image.create", lambda: payload)
    (row,) = outbox(db)
    assert json.loads(row.envelope) == envelope and envelope is not None
    assert envelope["payload"] == payload


def test_one_row_per_driver_with_the_stored_envelope(db: Database) -> None:
    woken: list[int] = []
    notifier = Notifier(["log", "noop", "messagingv2", "log"], publisher_id="image.test",
                        on_commit=lambda: woken.append(1))
    with db.write() as session:
        envelope = notifier.record(session, "image.update", lambda: {"id": "x", "n": 1},
                                   priority="WARN")
        assert woken == []                                    # not before the commit
    assert envelope is not None and woken == [1]
    rows = outbox(db)
    assert [r.driver for r in rows] == ["log", "messagingv2"]
    for row in rows:
        assert row.message_id == envelope["message_id"]
        assert (row.event_type, row.priority, row.attempts) == ("image.update", "WARN", 0)
        assert json.loads(row.envelope) == envelope
        assert list(json.loads(row.envelope)) == list(envelope)   # key order kept
        assert row.created_at == datetime.strptime(envelope["timestamp"],
                                                   "%Y-%m-%d %H:%M:%S.%f")
        assert row.delivered_at is None and row.next_attempt_at is None


def test_rows_roll_back_with_the_change(db: Database) -> None:
    notifier = Notifier(["log"], publisher_id="image.test")
    with pytest.raises(RuntimeError), db.write() as session:
        notifier.record(session, "image.create", lambda: {"id": "x"})
        raise RuntimeError("the change failed")
    assert outbox(db) == []


def test_noop_and_disabled_events_record_nothing_and_build_no_payload(db: Database) -> None:
    def payload() -> dict[str, str]:
        raise AssertionError("payload built for nothing")

    with db.write() as session:
        assert Notifier(["noop"], publisher_id="p").record(
            session, "image.create", payload) is None
        assert Notifier(["log"], publisher_id="p", disabled=["image.create"]).record(
            session, "image.create", payload) is None
    assert outbox(db) == []


def test_an_event_prepared_before_the_transaction_is_added_inside_it(db: Database) -> None:
    woken: list[int] = []
    notifier = Notifier(["log", "messagingv2"], publisher_id="image.test",
                        on_commit=lambda: woken.append(1))
    event = notifier.prepare("image.send", lambda: {"bytes_sent": 7}, priority="WARN")
    assert event is not None and outbox(db) == []          # preparing writes nothing
    with db.write() as session:
        envelope = notifier.add(session, event)
    assert envelope is event.envelope and woken == [1]
    rows = outbox(db)
    assert [(r.driver, r.event_type, r.priority) for r in rows] == [
        ("log", "image.send", "WARN"), ("messagingv2", "image.send", "WARN")]
    assert all(json.loads(r.envelope) == envelope for r in rows)
    assert envelope["payload"] == {"bytes_sent": 7}

    with pytest.raises(RuntimeError), db.write() as session:   # rolls back like record()
        notifier.add(session, notifier.prepare("image.send", lambda: {"bytes_sent": 8}))
        raise RuntimeError("the change failed")
    assert len(outbox(db)) == 2


def test_nothing_is_prepared_for_noop_or_disabled_events(db: Database) -> None:
    def payload() -> dict[str, str]:
        raise AssertionError("payload built for nothing")

    assert Notifier(["noop"], publisher_id="p").prepare("image.send", payload) is None
    assert Notifier(["log"], publisher_id="p", disabled=["image"]).prepare(
        "image.send", payload) is None
    with db.write() as session:
        assert Notifier(["log"], publisher_id="p").add(session, None) is None
    assert outbox(db) == []
