"""The relay: delivers the outbox to the drivers in the background.

One worker thread per configured driver (so a driver stuck in a connect or
confirm timeout never delays another driver). Each worker loops:

1. **Lease.** It holds the driver's row in ``relay_leases``:
   ``UPDATE relay_leases SET owner=me, expires_at=now+lease WHERE driver=d AND
   (owner=me OR owner IS NULL OR expires_at < now)``. Only the holder delivers,
   so across several Glimpse processes/nodes on one PostgreSQL exactly one
   relay delivers a driver's events at a time, in order. The lease is renewed
   before a batch once a third of it has passed; a node that dies loses it
   after ``[outbox] lease_seconds`` and another takes over. On PostgreSQL the
   lease times come from the database clock (node clocks may differ). A holder
   stalled for longer than the lease (e.g. a confirm wait) may overlap with its
   successor: the result is a duplicate, never a loss (at-least-once).
2. **Read.** Pending rows (``delivered_at IS NULL``) in ``outbox.id`` order,
   ``[outbox] batch_size`` at a time. The batch is cut at the first row whose
   ``next_attempt_at`` is still in the future: a row waiting for its retry
   holds back every later row of that driver, which keeps the order.
3. **Send** through the driver, which confirms once the transport accepted
   the batch. Pipelined: batch N+1 is published (``Driver.publish``) before
   batch N is confirmed and marked (``Driver.confirm``), so the broker works
   while the database does; rows in flight are left out of the next read. If
   batch N fails, batch N+1 is discarded unmarked and sent again after N.
4. **Mark** the confirmed rows delivered in one UPDATE. On failure the first
   unconfirmed row gets ``attempts+1``, ``last_error`` and ``next_attempt_at =
   now + min(max_backoff, initial_backoff * 2**(attempts-1))``; the worker
   stops that batch there and the other drivers' workers carry on.

Why ``id`` order is per-image change order: every service change of an image
updates (row-locks) the image row before recording its event, so two
transactions on one image are serialised and the second inserts its outbox
row, and draws its id, only after the first committed. Rows of *different*
images may commit out of id order on PostgreSQL; a row that is not yet
committed is simply picked up by a later read (rows are selected by
``delivered_at IS NULL``, never by "id greater than the last one"), and rows
are marked delivered by id list, never by id range. On SQLite writers are
serialised, so commit order is id order.

Redelivery (crash between send and mark, lease overlap) resends the stored
envelope, so the ``message_id`` is the same. A broker that is down is not an
error: rows wait and are retried with backoff. Idle workers poll every
``[outbox] poll_interval`` seconds; ``wake()`` (called after each commit that
recorded events) cuts the wait short, after a short pause
(``RelaySettings.coalesce``) that lets concurrent requests' events share a batch.
``stop(timeout)`` keeps delivering due rows until nothing is pending or
``timeout`` passed, then releases the leases. Delivered rows older than
``[outbox] retention_hours`` are pruned every ``PRUNE_INTERVAL`` seconds by
the lease holder. Nothing here runs on a
request thread: requests never wait for the relay.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    DateTime,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from glimpse.db.engine import Database, utcnow
from glimpse.db.models import OutboxRow, RelayLeaseRow
from glimpse.notifications.drivers import (
    DeliveryError,
    Driver,
    OutboxEvent,
    Ticket,
    load_driver,
)

LOG = logging.getLogger(__name__)

_outbox = cast(Table, OutboxRow.__table__)
_leases = cast(Table, RelayLeaseRow.__table__)

# Statements of the delivery loop, built once (values bound at execution).
_PENDING = (select(_outbox.c.id, _outbox.c.message_id, _outbox.c.event_type,
                   _outbox.c.priority, _outbox.c.envelope, _outbox.c.attempts,
                   _outbox.c.next_attempt_at)
            .where(_outbox.c.driver == bindparam("driver"), _outbox.c.delivered_at.is_(None))
            .order_by(_outbox.c.id).limit(bindparam("limit", type_=Integer())))
_PENDING_EXCLUDING = _PENDING.where(_outbox.c.id.not_in(bindparam("exclude", expanding=True)))
_MARK_DELIVERED = update(_outbox).where(_outbox.c.id.in_(bindparam("ids", expanding=True)))

PRUNE_INTERVAL = 300.0          # seconds between prune passes
_PRUNE_CHUNK = 5000
_MAX_ERROR_TEXT = 2000


def backoff_delay(attempts: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempts`` (1 = first retry): capped exponential."""
    if attempts < 1:
        return 0.0
    return float(min(maximum, initial * (2 ** min(attempts - 1, 62))))


@dataclass(frozen=True)
class PendingRow:
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
    # of concurrent requests go out as one batch: one read and one mark per batch
    # instead of per event (the relay's database work is most of an event's cost).
    coalesce: float = 0.02

    @classmethod
    def from_conf(cls, conf: Any) -> RelaySettings:
        o = conf.outbox
        return cls(batch_size=o.batch_size, poll_interval=o.poll_interval,
                   initial_backoff=o.initial_backoff, max_backoff=o.max_backoff,
                   lease_seconds=o.lease_seconds, retention_hours=o.retention_hours)


class DriverWorker:
    """Delivers one driver's outbox rows. ``step()`` does one unit of work and is
    what the thread loops over (and what tests call directly)."""

    def __init__(self, db: Database, driver_name: str, driver: Driver, *, node_id: str,
                 settings: RelaySettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.driver_name = driver_name
        self.driver = driver
        self.node_id = node_id
        self.settings = settings
        self.clock = clock
        self.wakeup = threading.Event()
        self.delivered = 0                       # events delivered by this worker
        self._lease_renewed_at: float | None = None   # monotonic time of last renewal
        self._lease_row_ensured = False
        self._last_prune: float | None = None   # None: prune at the first step
        self._in_flight: tuple[list[PendingRow], Ticket] | None = None

    # -- lease ---------------------------------------------------------------

    def _now_expr(self) -> Any:
        """'now' for lease arithmetic: the database clock on PostgreSQL."""
        if self.db.dialect == "postgresql":
            return func.timezone("UTC", func.clock_timestamp(), type_=DateTime)
        return self.clock()

    def _ensure_lease_row(self) -> None:
        if self._lease_row_ensured:
            return
        values = {"driver": self.driver_name, "owner": None, "expires_at": None}
        dialect_insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(_leases).values(**values).on_conflict_do_nothing(
            index_elements=["driver"])
        with self.db.write() as session:
            session.execute(stmt)
        self._lease_row_ensured = True

    def hold_lease(self) -> bool:
        """True when this worker holds the driver's lease (renewing it when a third
        of it has passed)."""
        now_mono = time.monotonic()
        if (self._lease_renewed_at is not None
                and now_mono - self._lease_renewed_at < self.settings.lease_seconds / 3):
            return True
        self._ensure_lease_row()
        now = self._now_expr()
        stmt = (update(_leases)
                .where(_leases.c.driver == self.driver_name,
                       or_(_leases.c.owner == self.node_id, _leases.c.owner.is_(None),
                           _leases.c.expires_at.is_(None), _leases.c.expires_at < now))
                .values(owner=self.node_id,
                        expires_at=now + timedelta(seconds=self.settings.lease_seconds)))
        with self.db.write() as session:
            held = cast(CursorResult[Any], session.execute(stmt)).rowcount == 1
        if held:
            if self._lease_renewed_at is None:
                LOG.info("Relay %s now delivers driver %s", self.node_id, self.driver_name)
            self._lease_renewed_at = now_mono
        else:
            self._lease_renewed_at = None
        return held

    @property
    def holds_lease(self) -> bool:
        return self._lease_renewed_at is not None

    def release_lease(self) -> None:
        """Give the lease up so another relay can take over at once."""
        if self._lease_renewed_at is None:
            return
        self._lease_renewed_at = None
        with self.db.write() as session:
            session.execute(update(_leases)
                            .where(_leases.c.driver == self.driver_name,
                                   _leases.c.owner == self.node_id)
                            .values(owner=None, expires_at=None))

    # -- delivery ------------------------------------------------------------

    def pending(self, limit: int, exclude: Sequence[int] = ()) -> list[PendingRow]:
        """Undelivered rows in id order, leaving out ``exclude`` (the batch in flight)."""
        params: dict[str, Any] = {"driver": self.driver_name, "limit": limit}
        stmt = _PENDING
        if exclude:
            stmt, params["exclude"] = _PENDING_EXCLUDING, list(exclude)
        with self.db.read() as session:
            return [PendingRow(OutboxEvent(r.id, r.message_id, r.event_type, r.priority,
                                           r.envelope), r.attempts, r.next_attempt_at)
                    for r in session.execute(stmt, params)]

    def step(self) -> float:
        """One unit of work. Returns how long to wait before the next step
        (0 = more work is due now).

        Pipelined: the next batch is published before the one in flight is
        confirmed and marked, so the broker works while the database does. A
        batch published behind one that then fails is discarded unmarked (it
        is sent again after the failed one: duplicates, never reordering).
        """
        if not self.hold_lease():
            self.finish()
            return max(self.settings.poll_interval, min(1.0, self.settings.lease_seconds / 5))
        self._maybe_prune()
        in_flight = [r.event.id for r in self._in_flight[0]] if self._in_flight else []
        rows = self.pending(self.settings.batch_size, exclude=in_flight)
        now = self.clock()
        due = due_prefix(rows, now)
        ticket = self.driver.publish([row.event for row in due]) if due else None
        wait = self.finish()
        if wait is not None:                        # the previous batch failed
            if ticket is not None:
                with contextlib.suppress(Exception):
                    self.driver.confirm(ticket)
            return wait
        if ticket is not None:
            self._in_flight = (due, ticket)
            if ticket.done:                         # a driver that does not pipeline
                wait = self.finish()
            return 0.0 if wait is None else wait
        if rows:                                    # the first row waits for its retry
            assert rows[0].next_attempt_at is not None
            until = (rows[0].next_attempt_at - now).total_seconds()
            return max(0.01, min(until, self.settings.poll_interval * 5, 1.0))
        return self.settings.poll_interval

    def finish(self) -> float | None:
        """Confirm and mark the batch in flight. Returns None on success (or when
        nothing is in flight), else how long to wait before retrying."""
        if self._in_flight is None:
            return None
        due, ticket = self._in_flight
        self._in_flight = None
        events = [row.event for row in due]
        error: BaseException | None = None
        try:
            delivered = self.driver.confirm(ticket)
        except DeliveryError as exc:
            delivered, error = max(0, min(exc.delivered, len(events))), exc
        except Exception as exc:
            delivered, error = 0, exc
        self._mark_delivered([e.id for e in events[:delivered]])
        self.delivered += delivered
        if error is None or delivered >= len(due):
            return None
        failed = due[delivered]
        attempts = failed.attempts + 1
        delay = backoff_delay(attempts, self.settings.initial_backoff, self.settings.max_backoff)
        self._mark_failed(failed.event.id, attempts, str(error), self.clock()
                          + timedelta(seconds=delay))
        LOG.warning("Notification driver %s failed (attempt %d of event %s, retry in %.1fs): "
                    "%s", self.driver_name, attempts, failed.event.message_id, delay, error)
        return min(delay, self.settings.poll_interval * 5, 1.0)

    def _mark_delivered(self, ids: list[int]) -> None:
        if not ids:
            return
        with self.db.write() as session:
            session.execute(_MARK_DELIVERED, {"ids": ids, "delivered_at": self.clock()})

    def _mark_failed(self, row_id: int, attempts: int, error: str, retry_at: datetime) -> None:
        with self.db.write() as session:
            session.execute(update(_outbox).where(_outbox.c.id == row_id)
                            .values(attempts=attempts, last_error=error[:_MAX_ERROR_TEXT],
                                    next_attempt_at=retry_at))

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
        """True when a batch is in flight or the first pending row is due within
        ``within`` seconds (draining waits for a retry that falls before its deadline)."""
        if self._in_flight is not None:
            return True
        rows = self.pending(1)
        return bool(rows) and bool(due_prefix(rows, self.clock() + timedelta(seconds=within)))


class Relay:
    """The background relay of one process (see the module docstring).

    ``start()`` returns at once; ``wake()`` is cheap and thread-safe;
    ``stop(timeout)`` blocks for at most about ``timeout`` seconds plus one
    in-flight batch.
    """

    def __init__(self, conf: Any, db: Database, drivers: Sequence[str], *, node_id: str,
                 loaded: dict[str, Driver] | None = None,
                 settings: RelaySettings | None = None) -> None:
        self.db = db
        self.node_id = node_id
        self.settings = settings or RelaySettings.from_conf(conf)
        loaded = loaded or {}
        self.workers = [
            DriverWorker(db, name, loaded.get(name) or load_driver(name, conf),
                         node_id=node_id, settings=self.settings)
            for name in dict.fromkeys(drivers) if name and name != "noop"]
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._drain_deadline = 0.0

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                      name=f"glimpse-relay-{worker.driver_name}")
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        for worker in self.workers:
            worker.wakeup.set()

    def stop(self, timeout: float) -> None:
        self._drain_deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(max(0.0, self._drain_deadline - time.monotonic()) + 15.0)
        self._threads.clear()

    def _run(self, worker: DriverWorker) -> None:
        failures = 0
        while True:
            if self._stopping.is_set() and time.monotonic() >= self._drain_deadline:
                break
            try:
                wait = worker.step()
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                wait = backoff_delay(failures, self.settings.initial_backoff,
                                     self.settings.max_backoff)
                LOG.warning("Relay for %s: database error (retry in %.1fs): %s",
                            worker.driver_name, wait, exc)
            except Exception:
                failures += 1
                wait = backoff_delay(failures, self.settings.initial_backoff,
                                     self.settings.max_backoff)
                LOG.exception("Relay for %s: unexpected error (retry in %.1fs)",
                              worker.driver_name, wait)
            if self._stopping.is_set():
                if not worker.holds_lease:
                    break
                try:
                    if not worker.has_due(within=self._drain_deadline - time.monotonic()):
                        break
                except SQLAlchemyError:
                    break
                wait = min(wait, max(0.0, self._drain_deadline - time.monotonic()))
            if wait > 0 and not worker.holds_lease:
                # Another process delivers this driver: wake() (one per commit
                # here) must not turn into one lease attempt, a write
                # transaction, per commit; the lease is retried on time.
                self._stopping.wait(wait)
                worker.wakeup.clear()
            elif wait > 0:
                woken = worker.wakeup.wait(wait)
                worker.wakeup.clear()
                if woken and not self._stopping.is_set():
                    time.sleep(min(self.settings.coalesce, self.settings.poll_interval))
        try:
            worker.finish()                 # settle a batch still in flight
        except Exception:
            LOG.exception("Relay for %s: could not settle the last batch", worker.driver_name)
        try:
            worker.release_lease()
        except SQLAlchemyError:
            LOG.warning("Relay for %s: could not release the lease", worker.driver_name)
        worker.driver.close()
