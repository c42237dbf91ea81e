"""One driver's delivery loop: read pending outbox rows, send, mark delivered.

``DriverWorker.step()`` does one unit of work; the relay thread (relay.py)
loops over it, tests call it directly. Contract per step:

1. **Lease** (lease.py): only the holder delivers. A worker that loses it
   settles its batch in flight, writes the marks it owes and backs off.
2. **Read** pending rows (``delivered_at IS NULL``) in ``outbox.id`` order,
   ``batch_size`` at a time, leaving out the rows this worker already sent
   (in flight, or confirmed and not yet marked). The batch is cut at the
   first row whose ``next_attempt_at`` is in the future: a row waiting for its
   retry holds back every later row of the driver, which keeps the order.
3. **Send** through the driver. Batch N+1 is published before batch N is
   confirmed: with a backlog (a full batch) at once, so the broker works while
   the database does; after a short batch (nothing more was pending) at the
   next step, at most ``confirm_delay`` (capped by ``poll_interval``) later, so
   that the broker's acks of N gather in the socket meanwhile and are taken in
   one read rather than one wake-up per ack frame (~12 us of relay CPU per
   event). If N fails, N+1 is discarded unmarked and sent again after N. A
   driver that settles at publish (``Ticket.done``) is confirmed at once.
4. **Mark.** Confirmed rows are marked delivered by id list (never by id
   range) in one UPDATE for many batches: at most every ``mark_interval``
   seconds, or once ``batch_size`` rows wait, or when the worker finds the
   outbox empty, fails, loses or releases the lease, or stops. On SQLite
   every write queues behind the API's writers, so marking per batch of a
   few events was most of the relay's cost. Until marked, a confirmed row
   is only excluded from this worker's reads; if the process dies first it
   is sent again with the same ``message_id`` (at-least-once, never lost).
   On failure the first unconfirmed row gets ``attempts+1``, ``last_error``
   and ``next_attempt_at = now + min(max_backoff, initial_backoff *
   2**(attempts-1))``, written in the same transaction as the pending marks.

Blocking: reads and writes wait for the database (writes on SQLite behind
the write lock); ``publish``/``confirm`` block in the driver (connect and
confirm timeouts). Database errors propagate (SQLAlchemyError, or
DatabaseUnavailable when the database itself is down) and are retried by the
relay thread; rows confirmed but not yet marked stay owed and
are marked by a later write.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import (
    CursorResult,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection

from glimpse.db import sqlite_direct
from glimpse.db.engine import Database, utcnow
from glimpse.db.models import outbox as _outbox
from glimpse.db.sqlite_direct import SQLITE
from glimpse.notifications.drivers import DeliveryError, Driver, OutboxEvent, Ticket
from glimpse.notifications.lease import DriverLease

LOG = logging.getLogger(__name__)

# Statements of the delivery loop, built once (values bound at execution).
_PENDING = (select(_outbox.c.id, _outbox.c.message_id, _outbox.c.event_type,
                   _outbox.c.priority, _outbox.c.envelope, _outbox.c.attempts,
                   _outbox.c.next_attempt_at)
            .where(_outbox.c.driver == bindparam("driver"), _outbox.c.delivered_at.is_(None))
            .order_by(_outbox.c.id).limit(bindparam("limit", type_=Integer())))
_PENDING_EXCLUDING = _PENDING.where(_outbox.c.id.not_in(bindparam("exclude", expanding=True)))
_MARK_DELIVERED = update(_outbox).where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
# SQLite: the rows a worker already sent are left out by ``id > max(sent)`` (see
# DriverWorker.pending).
_PENDING_AFTER = _PENDING.where(_outbox.c.id > bindparam("after"))
# SQLite: one UPDATE for a whole list of rows, the ids passed as one JSON array
# (``json_each``; SQLite's JSON functions are built in since 3.38). The plan is
# one rowid lookup per id whatever the statistics say, where ``id IN (<hundreds
# of ids>)`` may become a full scan when they undercount the table (statistics
# are refreshed at 1, 100, 1,000, ... writes, sampled). One statement instead of
# one per row: the sqlite3 module releases the GIL around every statement, and on
# the worker that runs the relay a release can hand the GIL to a request thread
# and wait to get it back (16.5 -> 11.4 us of relay CPU per event, alone).
_MARK_LISTED = (update(_outbox)
                .where(_outbox.c.id.in_(select(
                    func.json_each(bindparam("ids_json", type_=String()))
                    .table_valued("value").c.value)))
                .values(delivered_at=bindparam("stamp", type_=DateTime())))
_SQLITE_DATETIME = cast(Callable[[str], datetime],
                        DateTime().dialect_impl(SQLITE).result_processor(SQLITE, None))

PRUNE_INTERVAL = 300.0          # seconds between prune passes
_PRUNE_CHUNK = 5000
_MAX_ERROR_TEXT = 2000


def backoff_delay(attempts: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempts`` (1 = first retry): capped exponential."""
    if attempts < 1:
        return 0.0
    return float(min(maximum, initial * (2 ** min(attempts - 1, 62))))


def mark_delivered(connection: Connection, ids: Sequence[int], when: datetime) -> None:
    """Set ``delivered_at = when`` on the outbox rows ``ids``, in ``connection``'s
    transaction."""
    if connection.dialect.name == "sqlite":
        sqlite_direct.execute(connection, _MARK_LISTED,
                              {"stamp": when, "ids_json": orjson.dumps(list(ids)).decode()})
    else:
        connection.execute(_MARK_DELIVERED, {"ids": list(ids), "delivered_at": when})


class PendingRow(NamedTuple):
    event: OutboxEvent
    attempts: int
    next_attempt_at: datetime | None


def due_prefix(rows: Sequence[PendingRow], now: datetime) -> list[PendingRow]:
    """The leading rows that may be sent now: up to (not including) the first row
    whose retry time is in the future. Order is never skipped over."""
    due: list[PendingRow] = []
    for row in rows:
        if row.next_attempt_at is not None and row.next_attempt_at > now:
            break
        due.append(row)
    return due


@dataclass
class RelaySettings:
    batch_size: int = 500
    poll_interval: float = 0.2
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    lease_seconds: float = 15.0
    retention_hours: int = 24
    # After a wake-up, wait this long (at most poll_interval) so that the events
    # of concurrent requests go out as one batch.
    coalesce: float = 0.02
    # Under load (the last batch went out less than this long ago) a woken relay
    # waits until this long after the last batch: batches of ~rate*busy_interval
    # events instead of a read, publish and confirm per few events. Bounds the
    # added delivery delay.
    busy_interval: float = 0.1
    # A short batch's confirms are read at the next step, at most this long after
    # its publish (the step comes sooner when new events wake the relay).
    confirm_delay: float = 0.1
    # Confirmed rows are marked delivered at most this often (or when batch_size
    # of them wait, or the worker idles, fails or stops).
    mark_interval: float = 0.25

    @classmethod
    def from_conf(cls, conf: Any) -> RelaySettings:
        o = conf.outbox
        return cls(batch_size=o.batch_size, poll_interval=o.poll_interval,
                   initial_backoff=o.initial_backoff, max_backoff=o.max_backoff,
                   lease_seconds=o.lease_seconds, retention_hours=o.retention_hours)


class DriverWorker:
    """Delivers one driver's outbox rows (see the module docstring). Used by one
    thread at a time."""

    def __init__(self, db: Database, driver_name: str, driver: Driver, *, node_id: str,
                 settings: RelaySettings, clock: Callable[[], datetime] = utcnow,
                 owner_gone: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.driver_name = driver_name
        self.driver = driver
        self.node_id = node_id
        self.settings = settings
        self.clock = clock
        self.lease = DriverLease(db, driver_name, node_id, settings.lease_seconds, clock,
                                 owner_gone)
        self.wakeup = threading.Event()          # set by Relay.wake()
        self.delivered = 0                       # events this worker marked delivered
        self.last_publish = float("-inf")        # monotonic time of the last publish
        self._last_prune: float | None = None   # None: prune at the first step
        self._in_flight: tuple[list[PendingRow], Ticket] | None = None
        self._owed: list[int] = []               # confirmed, not yet marked delivered
        self._last_mark = float("-inf")          # monotonic time of the last mark write
        # True after a step that ended waiting for a retry (a failed batch, or the
        # first pending row's next_attempt_at is in the future): nothing can be
        # sent before the wait it returned is over, so new events need not wake it.
        self.waiting_for_retry = False

    # -- lease ---------------------------------------------------------------

    def hold_lease(self) -> bool:
        return self.lease.hold()

    @property
    def holds_lease(self) -> bool:
        return self.lease.held

    def release_lease(self) -> None:
        """Write the marks owed, then give the lease up."""
        self.flush_marks()
        self.lease.release()

    # -- delivery ------------------------------------------------------------

    def pending(self, limit: int, exclude: Sequence[int] = ()) -> list[PendingRow]:
        """Undelivered rows in id order, leaving out ``exclude`` (rows already sent).

        On SQLite ``exclude`` is left out by ``id > max(exclude)`` rather than
        ``id NOT IN (exclude)``, which is equivalent there: writers are
        serialised, and a new row's id is ``max(id) + 1`` (the rows sent are not
        yet marked, so never pruned: the maximum is at least theirs), so commit
        order is id order and a pending row below a row that was read was
        visible to that read. What was sent is always a prefix of the pending
        rows in id order (reads skip nothing before the excluded rows; a batch
        stops at the first row waiting for its retry; a failed batch owes only
        its confirmed prefix). Were a row ever left out wrongly, it would wait,
        not be lost: once the marks are written nothing is excluded. Saves the
        per-execution expansion of the id list (~20 us of relay CPU per event in
        batches of ~60).
        """
        params: dict[str, Any] = {"driver": self.driver_name, "limit": limit}
        with self.db.read() as conn:
            stmt = _PENDING
            if exclude and self.db.dialect == "sqlite":
                stmt, params["after"] = _PENDING_AFTER, max(exclude)
            elif exclude:
                stmt, params["exclude"] = _PENDING_EXCLUDING, list(exclude)
            found = sqlite_direct.rows(conn, stmt, params)
        # sqlite_direct.rows leaves SQLite's DATETIME text as it is
        return [PendingRow(OutboxEvent(r[0], r[1], r[2], r[3], r[4]), r[5],
                           _SQLITE_DATETIME(r[6]) if isinstance(r[6], str) else r[6])
                for r in found]

    def _sent_ids(self) -> list[int]:
        """Rows this worker sent that are not marked: in flight or owed."""
        if self._in_flight is None:
            return self._owed
        return [*self._owed, *(r.event.id for r in self._in_flight[0])]

    def step(self) -> float:
        """One unit of work. Returns how long to wait before the next step
        (0 = more work is due now)."""
        self.waiting_for_retry = False
        if not self.hold_lease():
            self.finish()
            self.flush_marks()
            return max(self.settings.poll_interval, min(1.0, self.settings.lease_seconds / 5))
        self._maybe_prune()
        limit = self.settings.batch_size
        rows = self.pending(limit, exclude=self._sent_ids())
        now = self.clock()
        due = due_prefix(rows, now)
        ticket = None
        if due:
            ticket = self.driver.publish([row.event for row in due])
            self.last_publish = time.monotonic()
        wait = self.finish()
        if wait is not None:                        # the previous batch failed
            if ticket is not None:
                with contextlib.suppress(Exception):
                    self.driver.confirm(ticket)
            self.waiting_for_retry = True
            return wait
        if ticket is not None:
            self._in_flight = (due, ticket)
            backlog = len(rows) == limit and len(due) == len(rows)
            if not ticket.done and len(due) == len(rows):
                # a backlog: read the next batch while this one confirms; a short
                # batch: its acks gather meanwhile and the next step takes them at once
                return 0.0 if backlog else min(self.settings.confirm_delay,
                                                self.settings.poll_interval)
            wait = self.finish()
            if wait is not None:
                self.waiting_for_retry = True
                return wait
            if backlog:
                return 0.0
        elif not rows:                              # nothing pending: pay what is owed now
            self.flush_marks()
            return self.settings.poll_interval
        if len(due) < len(rows):                    # the next row waits for its retry
            retry_at = rows[len(due)].next_attempt_at
            assert retry_at is not None
            self.waiting_for_retry = True
            until = (retry_at - now).total_seconds()
            return max(0.01, min(until, self.settings.poll_interval * 5, 1.0))
        return self._idle_wait()

    def _idle_wait(self) -> float:
        """poll_interval, or less when marks are owed (the next step writes them)."""
        if not self._owed:
            return self.settings.poll_interval
        due_in = self._last_mark + self.settings.mark_interval - time.monotonic()
        return max(0.005, min(self.settings.poll_interval, due_in))

    def finish(self) -> float | None:
        """Confirm the batch in flight (blocks up to the driver's confirm timeout)
        and owe its marks. Returns None on success (or when nothing is in flight),
        else how long to wait before retrying; a failure is written at once."""
        if self._in_flight is None:
            return None
        due, ticket = self._in_flight
        self._in_flight = None
        error: BaseException | None = None
        try:
            delivered = self.driver.confirm(ticket)
        except DeliveryError as exc:
            delivered, error = max(0, min(exc.delivered, len(due))), exc
        except Exception as exc:
            delivered, error = 0, exc
        self._owed.extend(row.event.id for row in due[:delivered])
        if error is None or delivered >= len(due):
            self._maybe_flush()
            return None
        failed = due[delivered]
        attempts = failed.attempts + 1
        delay = backoff_delay(attempts, self.settings.initial_backoff, self.settings.max_backoff)
        self.flush_marks(failed=(failed.event.id, attempts, str(error),
                                 self.clock() + timedelta(seconds=delay)))
        LOG.warning("Notification driver %s failed (attempt %d of event %s, retry in %.1fs): "
                    "%s", self.driver_name, attempts, failed.event.message_id, delay, error)
        return min(delay, self.settings.poll_interval * 5, 1.0)

    def _maybe_flush(self) -> None:
        if (len(self._owed) >= self.settings.batch_size
                or time.monotonic() - self._last_mark >= self.settings.mark_interval):
            self.flush_marks()

    def flush_marks(self, failed: tuple[int, int, str, datetime] | None = None) -> None:
        """Mark the owed rows delivered and record ``failed`` = (row id, attempts,
        error, retry time), in one write transaction. On a database error the
        rows stay owed (and excluded from reads) and the error propagates."""
        if not self._owed and failed is None:
            return
        ids = list(self._owed)
        with self.db.write() as session:
            if ids:
                mark_delivered(session, ids, self.clock())
            if failed is not None:
                row_id, attempts, error, retry_at = failed
                session.execute(update(_outbox).where(_outbox.c.id == row_id)
                                .values(attempts=attempts, last_error=error[:_MAX_ERROR_TEXT],
                                        next_attempt_at=retry_at))
        del self._owed[:len(ids)]
        self.delivered += len(ids)
        self._last_mark = time.monotonic()

    def _maybe_prune(self, force: bool = False) -> int:
        now_mono = time.monotonic()
        if (not force and self._last_prune is not None
                and now_mono - self._last_prune < PRUNE_INTERVAL):
            return 0
        self._last_prune = now_mono
        return self.prune()

    def prune(self) -> int:
        """Delete this driver's rows delivered more than ``retention_hours`` ago."""
        cutoff = self.clock() - timedelta(hours=self.settings.retention_hours)
        removed = 0
        while True:
            chunk = (select(_outbox.c.id)
                     .where(_outbox.c.driver == self.driver_name,
                            and_(_outbox.c.delivered_at.is_not(None),
                                 _outbox.c.delivered_at < cutoff))
                     .limit(_PRUNE_CHUNK).scalar_subquery())
            with self.db.write() as session:
                count = cast(CursorResult[Any], session.execute(
                    delete(_outbox).where(_outbox.c.id.in_(chunk)))).rowcount
            removed += count
            if count < _PRUNE_CHUNK:
                return removed

    def has_due(self, within: float = 0.0) -> bool:
        """Writes the owed marks, then: True when a batch is in flight or the first
        pending row is due within ``within`` seconds (draining waits for a retry
        that falls before its deadline)."""
        self.flush_marks()
        if self._in_flight is not None:
            return True
        rows = self.pending(1)
        return bool(rows) and bool(due_prefix(rows, self.clock() + timedelta(seconds=within)))
