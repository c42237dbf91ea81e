"""The event spool: events kept on local disk while the database is away, moved
into the outbox (a throw-away SQLite file) by this process or, once their
process is gone, by another. Other processes are real child processes: a file
is free only when the kernel dropped its owner's lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox as outbox_table
from glimpse.exceptions import DatabaseUnavailable
from glimpse.notifications.recorder import Notifier
from glimpse.notifications.spool import EventSpool

DRIVERS = ("messagingv2", "log")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'spool.sqlite'}")
    migrate.upgrade(database.engine)
    return database


def notifier(woken: list[int] | None = None) -> Notifier:
    hook = (lambda: woken.append(1)) if woken is not None else None
    return Notifier(list(DRIVERS), publisher_id="image.test", on_commit=hook)


def send_event(image_id: str) -> Any:
    event = notifier().prepare("image.send", lambda: {"image_id": image_id, "bytes_sent": 7})
    assert event is not None
    return event


def outbox(db: Database) -> list[tuple[str, str, str, str]]:
    with db.read() as session:
        rows = session.execute(select(outbox_table).order_by(outbox_table.c.id))
        return [(r.driver, r.message_id, r.envelope, r.created_at.isoformat()) for r in rows]


def child(spool_dir: Path, image_id: str, *, wait_for: Path | None = None) -> subprocess.Popen[str]:
    """Another process that spools one image.send (and, with ``wait_for``, stays
    alive until that file exists); prints the event's message_id."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
        from tests.unit.notifications.test_spool import DRIVERS, send_event
        from glimpse.notifications.spool import EventSpool
        event = send_event({image_id!r})
        EventSpool({str(spool_dir)!r}).put(event, DRIVERS)
        print(event.row["message_id"], flush=True)
        wait_for = {str(wait_for) if wait_for else None!r}
        while wait_for and not os.path.exists(wait_for):
            time.sleep(0.02)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_this_processs_events_go_to_the_outbox_once(db: Database, tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool")
    first, second = send_event("img-1"), send_event("img-2")
    spool.put(first, DRIVERS)
    spool.put(second, DRIVERS)
    assert spool.pending() and spool.own_pending()
    woken: list[int] = []

    assert spool.replay(db, notifier(woken)) == 2
    rows = outbox(db)
    assert [(r[0], r[1]) for r in rows] == [
        (d, e.row["message_id"]) for e in (first, second) for d in DRIVERS]
    assert [r[2] for r in rows[::2]] == [first.row["envelope"], second.row["envelope"]]
    assert rows[0][3] == first.row["created_at"].isoformat()
    assert woken == [1]                     # the relay is told
    assert not spool.pending() and not spool.own_pending()
    assert spool.replay(db, notifier()) == 0
    assert len(outbox(db)) == 4

    spool.put(send_event("img-3"), DRIVERS)     # the same file takes more afterwards
    assert spool.replay(db, notifier()) == 1 and len(outbox(db)) == 6


def test_a_gone_processs_file_is_replayed_and_a_live_ones_is_left(db: Database,
                                                                  tmp_path: Path) -> None:
    spool_dir, release = tmp_path / "spool", tmp_path / "release"
    gone = child(spool_dir, "img-gone")
    gone_id = gone.communicate(timeout=60)[0].strip()
    alive = child(spool_dir, "img-alive", wait_for=release)
    assert alive.stdout is not None
    alive_id = alive.stdout.readline().strip()
    try:
        spool = EventSpool(spool_dir)
        assert spool.replay(db, notifier()) == 1
        assert {r[1] for r in outbox(db)} == {gone_id}
        assert len(list(spool_dir.iterdir())) == 1      # the live process's file stays
        assert spool.pending() and not spool.own_pending()
    finally:
        release.touch()
        alive.wait(60)
    assert spool.replay(db, notifier()) == 1
    assert {r[1] for r in outbox(db)} == {gone_id, alive_id}
    assert list(spool_dir.iterdir()) == []


def test_the_events_stay_while_the_database_is_away(db: Database, tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool")
    event = send_event("img-1")
    spool.put(event, DRIVERS)
    away = Database("postgresql://glimpse@127.0.0.1:1/glimpse")     # nothing listens
    with pytest.raises(DatabaseUnavailable):
        spool.replay(away, notifier())
    assert spool.pending()
    assert spool.replay(db, notifier()) == 1
    assert [r[1] for r in outbox(db)] == [event.row["message_id"]] * 2


def test_a_line_cut_short_by_a_crash_is_skipped(db: Database, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    whole = send_event("img-1")
    row = {**whole.row, "created_at": whole.row["created_at"].isoformat()}
    line = json.dumps({"drivers": list(DRIVERS), "row": row})
    (spool_dir / "gone-host.123.jsonl").write_text(line + "\n" + line[:40])
    assert EventSpool(spool_dir).replay(db, notifier()) == 1
    assert "line 2 is not a whole event" in caplog.text
    assert list(spool_dir.iterdir()) == []
