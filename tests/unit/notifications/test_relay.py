"""Relay logic: order, marking, backoff, leases, pruning, draining.

A fake driver stands in for the transport; the outbox lives in a throw-away
SQLite file (the relay's SQL is part of what is tested).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Row, select

from glimpse.db import migrate
from glimpse.db.engine import Database
from glimpse.db.models import outbox
from glimpse.notifications.delivery import mark_delivered
from glimpse.notifications.drivers import DeliveryError, Driver, OutboxEvent, Ticket
from glimpse.notifications.recorder import Notifier
from glimpse.notifications.relay import (
    DriverWorker,
    PendingRow,
    Relay,
    RelaySettings,
    backoff_delay,
    due_prefix,
)


class FakeDriver(Driver):
    """Records what it was given; ``failures`` scripts the next calls: an int k
    means "confirm k events then fail", None means succeed."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.sent: list[OutboxEvent] = []
        self.calls = 0
        self.failures: list[int | None] = []
        self.closed = False

    def send_batch(self, events: Sequence[OutboxEvent]) -> int:
        self.calls += 1
        plan = self.failures.pop(0) if self.failures else None
        if plan is None:
            self.sent.extend(events)
            return len(events)
        self.sent.extend(events[:plan])
        raise DeliveryError(plan, f"broker down after {plan}")

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'relay.sqlite'}")
    migrate.upgrade(database.engine)
    return database


SETTINGS = RelaySettings(batch_size=4, poll_interval=0.05, initial_backoff=0.5,
                         max_backoff=4.0, lease_seconds=15.0, retention_hours=1,
                         mark_interval=0.0)


def record(db: Database, count: int, drivers: Sequence[str] = ("fake",),
           image: str = "img") -> list[str]:
    notifier = Notifier(drivers, publisher_id="image.test")
    ids = []
    for i in range(count):
        with db.write() as session:
            env = notifier.record(session, "image.update", lambda i=i: {"id": image, "n": i})
            assert env is not None
            ids.append(env["message_id"])
    return ids


def rows(db: Database, driver: str = "fake") -> list[Row[Any]]:
    with db.read() as session:
        return list(session.execute(select(outbox).where(outbox.c.driver == driver)
                                    .order_by(outbox.c.id)))


def worker(db: Database, driver: Driver, clock: Clock, node: str = "node-a",
           name: str = "fake") -> DriverWorker:
    return DriverWorker(db, name, driver, node_id=node, settings=SETTINGS, clock=clock)


def test_backoff_is_capped_exponential() -> None:
    assert [backoff_delay(n, 0.5, 4.0) for n in range(0, 7)] == [0, 0.5, 1, 2, 4, 4, 4]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0


def test_due_prefix_stops_at_first_row_waiting_for_retry() -> None:
    now = datetime(2026, 1, 1)
    ev = OutboxEvent(1, "m", "image.update", "INFO", "{}")
    r = [PendingRow(ev, 0, None), PendingRow(ev, 1, now - timedelta(seconds=1)),
         PendingRow(ev, 1, now + timedelta(seconds=1)), PendingRow(ev, 0, None)]
    assert due_prefix(r, now) == r[:2]
    assert due_prefix(r[2:], now) == []
    assert due_prefix([], now) == []


def test_delivers_in_id_order_in_batches_and_marks_delivered(db: Database) -> None:
    message_ids = record(db, 10)
    fake, clock = FakeDriver(), Clock()
    w = worker(db, fake, clock)
    while w.step() == 0.0:
        pass
    assert [e.message_id for e in fake.sent] == message_ids
    assert fake.calls == 3                                    # batch_size 4: 4 + 4 + 2
    assert all(r.delivered_at == clock.now for r in rows(db))
    assert w.step() == SETTINGS.poll_interval and fake.calls == 3   # nothing left


def test_mark_delivered_sets_exactly_the_given_rows(db: Database) -> None:
    record(db, 6)
    ids = [r.id for r in rows(db)]
    when = datetime(2026, 11, 26, 12, 0, 0, 123456)
    with db.write() as session:
        mark_delivered(session, [ids[1], ids[4], ids[5]], when)
    assert [r.delivered_at for r in rows(db)] == [None, when, None, None, when, when]


def test_failure_keeps_order_and_backs_off(db: Database) -> None:
    message_ids = record(db, 6)
    fake, clock = FakeDriver(), Clock()
    fake.failures = [2, 0]          # 1st call: 2 confirmed then fail; 2nd call: fail at once
    w = worker(db, fake, clock)
    w.step()
    state = rows(db)
    assert [r.delivered_at is not None for r in state] == [True, True, False, False, False,
                                                           False]
    failed = state[2]
    assert failed.attempts == 1 and "broker down after 2" in (failed.last_error or "")
    assert failed.next_attempt_at == clock.now + timedelta(seconds=0.5)
    assert all(r.attempts == 0 and r.next_attempt_at is None for r in state[3:])
    # Not due yet: nothing is sent, not even the later rows (order!).
    calls = fake.calls
    assert w.step() > 0 and fake.calls == calls
    clock.advance(0.5)
    w.step()                                    # fails again at once: attempt 2, 1 s
    failed = rows(db)[2]
    assert failed.attempts == 2 and failed.next_attempt_at == clock.now + timedelta(seconds=1)
    clock.advance(1)
    while w.step() == 0.0:
        pass
    assert [e.message_id for e in fake.sent] == message_ids
    assert all(r.delivered_at is not None for r in rows(db))


def test_plain_exception_counts_as_nothing_delivered(db: Database) -> None:
    record(db, 3)
    clock = Clock()

    class Broken(FakeDriver):
        def send_batch(self, events: Sequence[OutboxEvent]) -> int:
            raise ConnectionError("refused")

    w = worker(db, Broken(), clock)
    w.step()
    state = rows(db)
    assert [r.delivered_at for r in state] == [None, None, None]
    assert state[0].attempts == 1 and "refused" in (state[0].last_error or "")


def test_backoff_caps_at_max(db: Database) -> None:
    record(db, 1)
    fake, clock = FakeDriver(), Clock()
    fake.failures = [0] * 6
    w = worker(db, fake, clock)
    delays = []
    for _ in range(6):
        w.step()
        row = rows(db)[0]
        assert row.next_attempt_at is not None
        delays.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
    assert delays == [0.5, 1, 2, 4, 4, 4]


def test_one_failing_driver_does_not_hold_back_another(db: Database) -> None:
    message_ids = record(db, 5, drivers=("bad", "good"))
    clock = Clock()
    bad, good = FakeDriver("bad"), FakeDriver("good")
    bad.failures = [0] * 100
    wb = worker(db, bad, clock, name="bad")
    wg = worker(db, good, clock, name="good")
    for _ in range(5):
        wb.step()
        wg.step()
    assert [e.message_id for e in good.sent] == message_ids
    assert bad.sent == []
    assert all(r.delivered_at is None for r in rows(db, "bad"))
    assert all(r.delivered_at is not None for r in rows(db, "good"))


def test_lease_gives_one_relay_per_driver_and_fails_over(db: Database) -> None:
    record(db, 3)
    clock = Clock()
    fa, fb = FakeDriver(), FakeDriver()
    a, b = worker(db, fa, clock, node="node-a"), worker(db, fb, clock, node="node-b")
    assert a.hold_lease() and not b.hold_lease()
    a.step()
    b.step()
    assert len(fa.sent) == 3 and fb.sent == []
    record(db, 2)
    clock.advance(SETTINGS.lease_seconds + 1)        # node-a died: its lease ran out
    assert b.hold_lease()
    b.step()
    assert len(fb.sent) == 2
    # node-a comes back with a stale belief; a forced renewal tells it the truth.
    a.lease.forget()
    assert not a.hold_lease()
    b.release_lease()
    assert a.hold_lease()


def test_prune_removes_only_old_delivered_rows(db: Database) -> None:
    record(db, 4)
    fake, clock = FakeDriver(), Clock()
    fake.failures = [2]
    w = worker(db, fake, clock)
    w.step()                                          # 2 delivered, 2 pending
    assert w.prune() == 0                             # delivered just now: kept
    clock.advance(3600 + 1)
    assert w.prune() == 2
    assert [r.delivered_at for r in rows(db)] == [None, None]


def test_pending_rows_stay_out_of_the_prune_index_which_the_prune_uses(db: Database) -> None:
    record(db, 3)
    fake, clock = FakeDriver(), Clock()
    fake.failures = [1]
    worker(db, fake, clock).step()                    # 1 delivered, 2 pending
    with db.engine.connect() as conn:
        in_index = conn.exec_driver_sql(
            "SELECT count(*) FROM outbox INDEXED BY ix_outbox_delivered_at "
            "WHERE delivered_at IS NOT NULL").scalar()
        plan = " ".join(str(r[3]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE driver = 'fake' "
            "AND delivered_at IS NOT NULL AND delivered_at < '2030-01-01' LIMIT 5000"))
    assert in_index == 1
    assert "ix_outbox_delivered_at" in plan


def test_relay_thread_delivers_on_wake_and_drains_on_stop(db: Database) -> None:
    fake = FakeDriver()
    settings = RelaySettings(batch_size=3, poll_interval=5.0, initial_backoff=0.01,
                             max_backoff=0.05, lease_seconds=15.0, retention_hours=1)
    relay = Relay(None, db, ["fake"], node_id="n1", loaded={"fake": fake}, settings=settings)
    relay.start()
    try:
        notifier = Notifier(["fake"], publisher_id="image.test", on_commit=relay.wake)
        with db.write() as session:
            notifier.record(session, "image.create", lambda: {"id": "x"})
        deadline = time.monotonic() + 3    # poll_interval is 5 s: only wake() explains it
        while not fake.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.sent) == 1
        fake.failures = [0]                         # one transient failure, then success
        ids = record(db, 7)
    finally:
        relay.stop(5.0)
    assert [e.message_id for e in fake.sent][1:] == ids
    assert all(r.delivered_at is not None for r in rows(db))
    assert fake.closed


def test_stop_gives_up_after_timeout_and_keeps_rows(db: Database) -> None:
    fake = FakeDriver()
    fake.failures = [0] * 10_000
    settings = RelaySettings(batch_size=10, poll_interval=0.01, initial_backoff=0.01,
                             max_backoff=0.02, lease_seconds=15.0, retention_hours=1)
    record(db, 2)
    relay = Relay(None, db, ["fake"], node_id="n1", loaded={"fake": fake}, settings=settings)
    relay.start()
    relay.stop(0.3)
    assert [r.delivered_at for r in rows(db)] == [None, None]
    assert not any(t.is_alive() for t in threading.enumerate()
                   if t.name.startswith("glimpse-relay-fake"))


class PipeliningDriver(FakeDriver):
    """Tickets stay open until ``confirm``; ``fail_confirm`` scripts confirm outcomes
    (an int k: k events of that batch confirmed, then the connection died)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, list[str]]] = []
        self.fail_confirm: list[int | None] = []
        self.open: list[Ticket] = []

    def publish(self, events: Sequence[OutboxEvent]) -> Ticket:
        ticket = Ticket(len(events))
        ticket.events = list(events)  # type: ignore[attr-defined]
        self.log.append(("publish", [e.message_id for e in events]))
        self.open.append(ticket)
        return ticket

    def confirm(self, ticket: Ticket) -> int:
        if not ticket.done:
            plan = self.fail_confirm.pop(0) if self.fail_confirm else None
            events = ticket.events  # type: ignore[attr-defined]
            self.log.append(("confirm", [e.message_id for e in events]))
            if plan is None:
                self.sent.extend(events)
                ticket.settle(len(events))
                self.open.remove(ticket)
            else:                     # the connection died: every open batch fails
                self.sent.extend(events[:plan])
                for t in self.open:
                    t.settle(plan if t is ticket else 0, DeliveryError(
                        plan if t is ticket else 0, "connection lost"))
                self.open.clear()
        return ticket.outcome()


def test_pipelined_driver_overlaps_batches(db: Database) -> None:
    ids = record(db, 10)
    fake, clock = PipeliningDriver(), Clock()
    w = worker(db, fake, clock)
    while w.step() == 0.0:
        pass
    assert [kind for kind, _ in fake.log] == ["publish", "publish", "confirm", "publish",
                                              "confirm"]        # the short batch: in flight
    assert w.step() == SETTINGS.poll_interval                    # nothing new: confirmed
    assert [e.message_id for e in fake.sent] == ids
    assert [kind for kind, _ in fake.log][-1] == "confirm"
    assert all(r.delivered_at is not None for r in rows(db))


def test_pipelined_failure_discards_the_batch_behind_it(db: Database) -> None:
    ids = record(db, 10)
    fake, clock = PipeliningDriver(), Clock()
    fake.fail_confirm = [1]          # batch 1: one event confirmed, then the connection died
    w = worker(db, fake, clock)
    w.step()                         # publish batch 1
    w.step()                         # publish batch 2, confirm batch 1 -> failure
    state = rows(db)
    assert [r.delivered_at is not None for r in state] == [True] + [False] * 9
    assert state[1].attempts == 1 and state[1].next_attempt_at is not None
    assert all(r.attempts == 0 for r in state[2:])      # batch 2 was void, not failed
    clock.advance(1)
    while w.step() == 0.0:
        pass
    w.step()                         # the last, short batch is confirmed
    assert [e.message_id for e in fake.sent] == ids       # in order, each confirmed once
    assert all(r.delivered_at is not None for r in rows(db))


def test_short_batch_is_confirmed_at_the_next_step_with_the_batch_behind_it(
        db: Database) -> None:
    first = record(db, 3)
    fake, clock = PipeliningDriver(), Clock()
    w = worker(db, fake, clock)
    reads: list[Sequence[int]] = []
    real_pending = w.pending

    def logged_pending(limit: int, exclude: Sequence[int] = ()) -> list[PendingRow]:
        reads.append(list(exclude))
        return real_pending(limit, exclude)

    w.pending = logged_pending
    # acks gather while the batch is in flight: confirmed no later than the delay
    assert w.step() == min(SETTINGS.confirm_delay, SETTINGS.poll_interval)
    assert fake.log == [("publish", first)]
    assert all(r.delivered_at is None for r in rows(db))
    second = record(db, 2)
    w.step()                  # publishes the new events, then confirms the first batch
    assert fake.log[:3] == [("publish", first), ("publish", second), ("confirm", first)]
    assert len(reads[1]) == 3                         # the batch in flight was not read again
    assert [r.delivered_at is not None for r in rows(db)] == [True] * 3 + [False] * 2
    assert w.step() == SETTINGS.poll_interval         # nothing new: the second is confirmed
    assert fake.log[-1] == ("confirm", second)
    assert all(r.delivered_at is not None for r in rows(db))
    assert [e.message_id for e in fake.sent] == first + second


def lazy_marking_worker(db: Database, driver: Driver, clock: Clock) -> DriverWorker:
    settings = RelaySettings(batch_size=4, poll_interval=0.05, initial_backoff=0.5,
                             max_backoff=4.0, mark_interval=3600.0)
    return DriverWorker(db, "fake", driver, node_id="node-a", settings=settings, clock=clock)


def test_marks_are_owed_across_batches_and_never_resent(db: Database) -> None:
    first = record(db, 2)
    fake, clock = FakeDriver(), Clock()
    w = lazy_marking_worker(db, fake, clock)
    w.step()                                          # the first mark is written at once
    assert all(r.delivered_at is not None for r in rows(db))
    second = record(db, 1)
    assert 0 < w.step() <= 0.05                       # sent; its mark is owed
    third = record(db, 2)
    w.step()
    assert [r.delivered_at is not None for r in rows(db)] == [True, True, False, False, False]
    assert [e.message_id for e in fake.sent] == first + second + third   # each sent once
    assert w.step() == 0.05                           # outbox empty: the owed marks written
    assert all(r.delivered_at is not None for r in rows(db))
    assert len(fake.sent) == 5


def test_owed_marks_reach_the_database_once_batch_size_rows_wait(db: Database) -> None:
    fake, clock = FakeDriver(), Clock()
    w = lazy_marking_worker(db, fake, clock)
    record(db, 1)
    w.step()                                          # first mark: at once
    record(db, 3)
    w.step()                                          # 3 owed (< batch_size 4)
    assert sum(r.delivered_at is None for r in rows(db)) == 3
    record(db, 1)
    w.step()                                          # 4 owed: written
    assert all(r.delivered_at is not None for r in rows(db))


def test_failure_writes_owed_marks_with_it_and_release_writes_the_rest(db: Database) -> None:
    fake, clock = FakeDriver(), Clock()
    w = lazy_marking_worker(db, fake, clock)
    record(db, 1)
    w.step()
    record(db, 2)
    w.step()                                          # 2 owed
    record(db, 2)
    fake.failures = [1]                               # 1 confirmed, then the broker fails
    w.step()
    state = rows(db)
    assert [r.delivered_at is not None for r in state] == [True, True, True, True, False]
    assert state[4].attempts == 1 and state[4].next_attempt_at is not None
    clock.advance(1)
    record(db, 1)
    w.step()                                          # rows 5-6 sent, marks owed
    assert [r.delivered_at is None for r in rows(db)] == [False] * 4 + [True, True]
    w.release_lease()
    assert all(r.delivered_at is not None for r in rows(db))


def test_owed_marks_are_written_before_draining_ends(db: Database) -> None:
    fake = FakeDriver()
    settings = RelaySettings(batch_size=50, poll_interval=5.0, mark_interval=3600.0)
    relay = Relay(None, db, ["fake"], node_id="n1", loaded={"fake": fake}, settings=settings)
    relay.start()
    try:
        notifier = Notifier(["fake"], publisher_id="image.test", on_commit=relay.wake)
        for i in range(3):
            with db.write() as session:
                notifier.record(session, "image.create", lambda: {"id": "x"})
            deadline = time.monotonic() + 3
            while len(fake.sent) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        relay.stop(5.0)
    assert len(fake.sent) == 3
    assert all(r.delivered_at is not None for r in rows(db))


def test_a_woken_relay_lingers_longer_only_while_batches_are_frequent(db: Database) -> None:
    settings = RelaySettings(poll_interval=0.2, coalesce=0.02, busy_interval=0.1)
    relay = Relay(None, db, ["fake"], node_id="n1", loaded={"fake": FakeDriver()},
                  settings=settings)
    w = relay.workers[0]
    assert relay.linger(w) == 0.02                    # no batch yet
    w.last_publish = time.monotonic() - 5
    assert relay.linger(w) == 0.02                    # idle: the short pause
    w.last_publish = time.monotonic()
    assert 0.09 < relay.linger(w) <= 0.1              # busy: a batch per busy_interval
    w.last_publish = time.monotonic() - 0.05
    assert 0.02 <= relay.linger(w) <= 0.05


def test_wakes_do_not_make_a_relay_that_waits_for_a_retry_read_the_outbox(
        db: Database) -> None:
    """During a broker outage every commit still calls wake(); a worker whose
    first row waits for its retry must not read the pending rows per wake-up
    (under load that was a read of up to batch_size rows every ~20 ms)."""
    fake = FakeDriver()
    fake.failures = [0] * 100
    settings = RelaySettings(batch_size=50, poll_interval=0.2, initial_backoff=30.0,
                             max_backoff=30.0, lease_seconds=15.0, retention_hours=1,
                             coalesce=0.005)
    record(db, 3)
    relay = Relay(None, db, ["fake"], node_id="n1", loaded={"fake": fake}, settings=settings)
    w = relay.workers[0]
    reads = 0
    pending = w.pending

    def counting_pending(limit: int, exclude: Sequence[int] = ()) -> list[PendingRow]:
        nonlocal reads
        reads += 1
        return pending(limit, exclude)

    w.pending = counting_pending  # type: ignore[method-assign]
    relay.start()
    try:
        deadline = time.monotonic() + 5
        while fake.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fake.calls == 1                  # failed once: the next try is 30 s away
        time.sleep(0.05)
        before, started = reads, time.monotonic()
        for _ in range(100):                    # a commit every 5 ms for half a second
            relay.wake()
            time.sleep(0.005)
        # the head row's retry is polled once a second (poll_interval * 5, at most 1 s)
        assert reads - before <= int(time.monotonic() - started) + 1
        assert fake.calls == 1
    finally:
        relay.stop(0.0)
