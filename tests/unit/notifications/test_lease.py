"""Relay leases on SQLite and PostgreSQL: one holder per driver, and a holder
whose process exited (its liveness mark is free) replaced at once."""

from __future__ import annotations

from pathlib import Path

from glimpse.db.engine import Database, utcnow
from glimpse.liveness import LivenessMarks
from glimpse.notifications.lease import DriverLease
from tests.mark_holder import hold_mark


def lease(db: Database, node: str, driver: str = "fake",
          marks: LivenessMarks | None = None) -> DriverLease:
    return DriverLease(db, driver, node, 15.0, utcnow,
                       owner_gone=marks.gone if marks is not None else None)


def test_one_holder_at_a_time_until_released(db: Database) -> None:
    a, b = lease(db, "node-a"), lease(db, "node-b")
    assert a.hold() and not b.hold()
    a.release()
    assert b.hold()
    a.forget()
    assert not a.hold()


def test_the_lease_of_an_exited_process_is_taken_over_at_once(
        db: Database, tmp_path: Path) -> None:
    """Without waiting ``lease_seconds``: every lease node-a held (one per driver)
    goes to node-b the moment node-a's process is killed, not before."""
    marks = LivenessMarks(tmp_path)
    a, a_other = lease(db, "node-a"), lease(db, "node-a", "other")
    assert a.hold() and a_other.hold()
    b, b_other = lease(db, "node-b", marks=marks), lease(db, "node-b", "other", marks=marks)
    process_a = hold_mark(tmp_path, "node-a")
    try:
        assert not b.hold() and not b_other.hold()        # node-a lives
    finally:
        process_a.kill()
        process_a.wait(30)
    assert b.hold() and b_other.hold()                    # the same instant, it exited
    a.forget()
    assert not a.hold()                                   # a stale belief learns the truth


def test_a_holder_with_no_mark_here_keeps_its_lease(db: Database, tmp_path: Path) -> None:
    """Another machine's process (no mark in this directory) is waited for."""
    assert lease(db, "far:away").hold()
    assert not lease(db, "node-b", marks=LivenessMarks(tmp_path)).hold()
