"""The relay: delivers the outbox to the drivers in the background.

One worker thread per configured driver (so a driver stuck in a connect or
confirm timeout never delays another driver). Each thread loops over
``DriverWorker.step()`` (delivery.py: lease, read, send, mark; its docstring
has the per-step contract) and waits in between:

- idle, it polls every ``[outbox] poll_interval`` seconds; ``wake()`` (called
  after each commit that recorded events) cuts the wait short;
- a woken worker pauses ``RelaySettings.coalesce`` (20 ms) so concurrent
  requests' events share a batch, and under load (the last batch went out
  less than ``busy_interval`` ago) until ``busy_interval`` after the last
  batch: a batch every 100 ms carries ~rate/10 events, so the per-batch
  cost (read, publish, confirm round trip) is paid 10 times a second, not
  per event. Added delivery delay: at most ``busy_interval``;
- with a backlog (a full batch was read) it steps again at once, pipelined;
  after a short batch within ``RelaySettings.confirm_delay`` (0.1 s), and
  that step reads the short batch's confirms;
- while it waits for a retry (a batch failed, or the first pending row's
  retry time is in the future) ``wake()`` does not cut the wait short: no
  row could be sent before then, so a broker outage costs the requests no
  reads of the outbox.

Order: every service change of an image updates (row-locks) the image row
before recording its event, so two transactions on one image are serialised
and the second inserts its outbox row, and draws its id, only after the first
committed. Rows of *different* images may commit out of id order on
PostgreSQL; a row that is not yet committed is simply picked up by a later
read (rows are selected by ``delivered_at IS NULL``, never by "id greater than
the last one"). On SQLite writers are serialised, so commit order is id order
(which is why there the rows a worker already sent are left out of its reads
by ``id > max(sent)``: ``DriverWorker.pending``). Delivery is
at-least-once: a redelivered event (crash between confirm and mark, lease
overlap) is the stored envelope, so its ``message_id`` is the same. A broker
that is down is not an error: rows wait and are retried with backoff. Database
errors are logged and retried with backoff. Delivered rows older than
``[outbox] retention_hours`` are pruned every ``PRUNE_INTERVAL`` seconds by
the lease holder. Nothing here runs on a request thread: requests never wait
for the relay (``wake()`` only sets an event).

``stop(timeout)`` keeps delivering due rows until nothing is pending or
``timeout`` passed, writes the marks owed, then releases the leases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from glimpse.db.engine import DATABASE_ERRORS, Database
from glimpse.notifications.delivery import (
    PRUNE_INTERVAL,
    DriverWorker,
    PendingRow,
    RelaySettings,
    backoff_delay,
    due_prefix,
)
from glimpse.notifications.drivers import Driver, load_driver

__all__ = ["PRUNE_INTERVAL", "DriverWorker", "PendingRow", "Relay", "RelaySettings",
           "backoff_delay", "due_prefix"]

LOG = logging.getLogger(__name__)


class Relay:
    """The background relay of one process (see the module docstring).
    ``owner_gone(node_id)`` (:meth:`glimpse.liveness.LivenessMarks.gone`) lets it
    take a lease over at once from a holder whose process exited.

    ``start()`` returns at once; ``wake()`` is cheap and thread-safe;
    ``stop(timeout)`` blocks for at most about ``timeout`` seconds plus one
    in-flight batch.
    """

    def __init__(self, conf: Any, db: Database, drivers: Sequence[str], *, node_id: str,
                 loaded: dict[str, Driver] | None = None,
                 settings: RelaySettings | None = None,
                 owner_gone: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.node_id = node_id
        self.settings = settings or RelaySettings.from_conf(conf)
        loaded = loaded or {}
        self.workers = [
            DriverWorker(db, name, loaded.get(name) or load_driver(name, conf),
                         node_id=node_id, settings=self.settings, owner_gone=owner_gone)
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
            if not worker.wakeup.is_set():   # set() takes the event's lock: once per batch
                worker.wakeup.set()

    def stop(self, timeout: float) -> None:
        self._drain_deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(max(0.0, self._drain_deadline - time.monotonic()) + 15.0)
        self._threads.clear()

    def linger(self, worker: DriverWorker) -> float:
        """How long a woken worker waits before its step: ``coalesce``, or under
        load until ``busy_interval`` after its last batch (never longer)."""
        s = self.settings
        since_last = time.monotonic() - worker.last_publish
        return max(min(s.coalesce, s.poll_interval), min(s.busy_interval,
                                                         s.busy_interval - since_last))

    def _run(self, worker: DriverWorker) -> None:
        failures = 0
        while True:
            if self._stopping.is_set() and time.monotonic() >= self._drain_deadline:
                break
            try:
                wait = worker.step()
                failures = 0
            except DATABASE_ERRORS as exc:
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
                except DATABASE_ERRORS:
                    break
                wait = min(wait, max(0.0, self._drain_deadline - time.monotonic()))
            if wait > 0 and (not worker.holds_lease or worker.waiting_for_retry):
                # Another process delivers this driver, or nothing can be sent
                # before a retry is due: wake() (one per commit here) must not turn
                # into a lease attempt or a read of the pending rows per commit.
                # During a broker outage under load that was a read of up to
                # batch_size rows every ~20 ms, which took CPU from the requests.
                if self._stopping.is_set():
                    time.sleep(wait)        # draining: bounded by the deadline above
                else:
                    self._stopping.wait(wait)
                worker.wakeup.clear()
            elif wait > 0:
                woken = worker.wakeup.wait(wait)
                worker.wakeup.clear()
                if woken and not self._stopping.is_set():
                    time.sleep(self.linger(worker))
        try:
            worker.finish()                 # settle a batch still in flight
        except Exception:
            LOG.exception("Relay for %s: could not settle the last batch", worker.driver_name)
        try:
            worker.release_lease()          # writes the marks owed first
        except DATABASE_ERRORS:
            LOG.warning("Relay for %s: could not release the lease", worker.driver_name)
        worker.driver.close()
