"""The task executor: runs pending tasks in this process with a bounded thread pool.

One *scheduler* thread loops:

* claims pending tasks while the pool has room (``[task] max_workers``): a claim
  is a conditional UPDATE (see :mod:`glimpse.db.tasks_repo`), so with several
  processes on one database each task runs exactly once; the claim and its
  ``task.run`` event commit together;
* renews the claims of the tasks it runs (every third of the claim time), so a
  live process keeps its tasks while a dead one's claims run out;
* recovers tasks whose process died: their claim ran out, or their process was
  on this machine and its liveness mark (:mod:`glimpse.liveness`) says it
  exited. A ``pending`` one is released to be claimed again (nothing happened
  yet: safe to resume); a ``processing`` one is failed with a clear message
  and its image put back to ``queued`` with ``os_glance_failed_import`` (see
  ``import_flow.fail_task``);
* purges tasks whose ``expires_at`` passed, and the marks of exited processes.

It sleeps ``POLL_INTERVAL`` between rounds unless :meth:`Executor.wake` is
called (after a task is created in this process). ``stop(timeout)`` stops
claiming, waits up to ``timeout`` seconds for running tasks, then cancels the
rest: they fail at once (a read blocked on a stalled server is aborted) with a
message saying the service shut down, their image back to ``queued``. Tasks of a
process that dies without ``stop`` are recovered by the next scheduler round of
a process of the same machine, or of any process once their claim expires
(``[task] claim_timeout``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from glimpse.db import tasks_repo
from glimpse.db.engine import utcnow
from glimpse.domain.task import PENDING, Task
from glimpse.exceptions import DatabaseUnavailable
from glimpse.services import tasks as task_service

LOG = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
PURGE_INTERVAL = 300.0
CANCEL_GRACE = 5.0
INTERRUPTED = ("Task interrupted: the Glimpse process running it stopped before it "
               "finished. The image was returned to queued; start the import again.")
NODE_SUFFIX = ":executor"      # a claim's ``claimed_by`` is the process's node id + this


class Executor:
    """Runs tasks for one Glimpse process. ``runtime`` is a :class:`glimpse.runtime.Runtime`."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self.node = f"{runtime.node_id}{NODE_SUFFIX}"
        self.max_workers = int(runtime.conf.task.max_workers)
        self.claim_seconds = task_service.claim_seconds(runtime)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel = threading.Event()
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._last_purge = 0.0
        self._last_renew = 0.0
        runtime.extras[task_service.EXECUTOR_KEY] = self

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="glimpse-task")
        self._thread = threading.Thread(target=self._loop, name="glimpse-task-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop claiming; give running tasks ``timeout`` seconds to finish, then cancel
        them (they fail with a message saying so, image back to ``queued``) and wait
        a few more seconds for that to be recorded."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            running = list(self._running.values())
        for future in running:
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        self._cancel.set()
        deadline = time.monotonic() + CANCEL_GRACE
        for future in running:
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.rt.extras.get(task_service.EXECUTOR_KEY) is self:
            del self.rt.extras[task_service.EXECUTOR_KEY]

    def wake(self) -> None:
        """Look for pending tasks now (called after a task commits in this process)."""
        self._wake.set()

    # -- scheduler ---------------------------------------------------------------------------
    def _loop(self) -> None:
        """Rounds until stopped. A round that fails is retried at the next poll; while
        the database is down that is logged once, and once more when it is back."""
        database_down = False
        while not self._stopping.is_set():
            try:
                self._round()
                if database_down:
                    LOG.warning("Task executor: the database answers again")
                database_down = False
            except DatabaseUnavailable as exc:
                if not database_down:
                    LOG.warning("Task executor: database unavailable (%s); retrying every "
                                "%.0f s", exc.detail, POLL_INTERVAL)
                database_down = True
            except Exception:
                LOG.exception("Task executor round failed; retrying")
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()

    def _round(self) -> None:
        now = time.monotonic()
        if now - self._last_renew >= self.claim_seconds / 3:
            self._renew()
            self._last_renew = now
        self.recover()
        if now - self._last_purge >= PURGE_INTERVAL:
            with self.rt.db.write() as session:
                purged = tasks_repo.purge_expired(session, now=utcnow())
            if purged:
                LOG.info("Purged %d expired task(s)", purged)
            from glimpse.tasks import import_flow

            import_flow.sweep_staging(self.rt)
            if self.rt.liveness is not None:
                self.rt.liveness.sweep()
            self._last_purge = now
        self._claim_some()

    def _free_slots(self) -> int:
        with self._lock:
            for task_id in [t for t, f in self._running.items() if f.done()]:
                del self._running[task_id]
            return self.max_workers - len(self._running)

    def _claim_some(self) -> None:
        while not self._stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                return
            with self.rt.db.read() as session:
                candidates = tasks_repo.claimable(session, limit=free)
            if not candidates:
                return
            claimed_any = False
            for task_id in candidates:
                if self._stopping.is_set():
                    return
                task = task_service.claim(self.rt, task_id, self.node)
                if task is None:
                    continue   # another process won it
                claimed_any = True
                self._submit(task)
            if not claimed_any:
                return

    def _submit(self, task: Task) -> None:
        assert self._pool is not None
        with self._lock:
            self._running[task.id] = self._pool.submit(self._run, task)

    def _run(self, task: Task) -> None:
        from glimpse.tasks import import_flow

        try:
            import_flow.run(self.rt, task, self.node, self._cancel)
        except Exception:
            LOG.exception("Task %s: could not record its outcome; it will be recovered "
                          "when its claim expires", task.id)
        finally:
            self._wake.set()   # a slot is free

    def _renew(self) -> None:
        with self._lock:
            ids = [t for t, f in self._running.items() if not f.done()]
        if not ids:
            return
        until = utcnow() + _seconds(self.claim_seconds)
        with self.rt.db.write() as session:
            tasks_repo.renew(session, ids, node=self.node, until=until)

    def recover(self) -> None:
        """Release or fail the tasks of processes that are gone: the claim ran
        out, or the claiming process's liveness mark says it exited."""
        from glimpse.tasks import import_flow

        now = utcnow()
        with self.rt.db.read() as session:
            claimed = tasks_repo.claims(session)
        exited: dict[str, bool] = {}
        for task_id, status, node, until in claimed:
            with self._lock:
                if task_id in self._running:
                    continue
            why = "claim expired"
            if until is None or until >= now:
                owner = node.removesuffix(NODE_SUFFIX)
                if owner not in exited:
                    exited[owner] = self._exited(owner)
                if not exited[owner]:
                    continue
                why = f"process {owner} exited"
            if status == PENDING:
                with self.rt.db.write() as session:
                    tasks_repo.release(session, task_id)
                LOG.warning("Task %s: %s before it started; released", task_id, why)
            else:
                LOG.warning("Task %s: %s while processing; failing it", task_id, why)
                import_flow.fail_task(self.rt, task_id, INTERRUPTED)

    def _exited(self, node_id: str) -> bool:
        marks = self.rt.liveness
        return marks is not None and marks.gone(node_id)


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)
