"""The event spool: events that could not reach the database, kept on local disk
until they can.

An ``image.send`` is recorded after its bytes went out; when the database is
unavailable at that moment (a failover, a restart), the event must not live in
memory only: a process that stops or dies before the database is back would
lose what billing counts. :meth:`EventSpool.put` appends the prepared event
(its envelope and outbox columns, ``message_id`` included) as one JSON line to
this process's file, ``<directory>/<host>.<pid>.jsonl``, and fsyncs it.
:meth:`EventSpool.replay` moves every line of this process's file, and of the
files of this host's processes that are gone, into the outbox in one write
transaction, then removes those files.

Which files are free: each process holds an exclusive ``flock`` on its own file
for as long as it lives (the kernel drops it when the process dies, however it
dies); a replay takes a file only if it can lock it without waiting. That holds
whatever the host is called (a container's name changes when it is recreated)
and, for a directory shared between hosts, as far as the filesystem's locks
reach (NFSv4's do).

At-least-once: a replay whose commit is followed by a crash before the file is
removed is replayed again, the same events with the same ``message_id`` (as a
relay redelivery). A replayed event goes out after the events committed while
it waited (its envelope keeps the time it happened).

Blocking: both methods write to the local disk; ``replay`` also waits for the
database and raises what ``Database.write`` raises (``DatabaseUnavailable``
while it is still away), keeping the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from glimpse.db.engine import Database
from glimpse.notifications.recorder import Notifier, PreparedEvent, insert_outbox_rows

LOG = logging.getLogger(__name__)

_HOST = socket.gethostname().replace("/", "_")
_SUFFIX = ".jsonl"


class EventSpool:
    """One process's view of the spool directory (see the module docstring).
    Thread-safe; after ``fork`` a child writes to a file of its own."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @property
    def own_file(self) -> Path:
        return self.directory / f"{_HOST}.{os.getpid()}{_SUFFIX}"

    def _own_fd(self) -> int:
        """This process's file, open for appending and locked (held until exit)."""
        if self._fd is None or self._pid != os.getpid():
            if self._fd is not None:
                # a forked child's copy of its parent's file: closing it leaves the
                # parent's lock to the parent (and the file free once it is gone)
                os.close(self._fd)
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.own_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def put(self, event: PreparedEvent, drivers: tuple[str, ...]) -> None:
        """Append ``event`` (for ``drivers``) to this process's file and fsync it.
        Raises OSError when the disk refuses (the caller logs the event's figures)."""
        row = dict(event.row)
        row["created_at"] = row["created_at"].isoformat()
        line = json.dumps({"drivers": list(drivers), "row": row}, separators=(",", ":"))
        with self._lock:
            fd = self._own_fd()
            os.write(fd, line.encode() + b"\n")
            os.fsync(fd)

    def own_pending(self) -> bool:
        """Whether this process's own file holds events."""
        try:
            return self.own_file.stat().st_size > 0
        except FileNotFoundError:
            return False

    def pending(self) -> bool:
        """Whether any file holds events (a directory listing)."""
        return any(self._files())

    def _files(self) -> Iterator[Path]:
        """The files that hold something (this process's own stays, empty, once
        replayed)."""
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                if path.name.endswith(_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        if path.stat().st_size > 0:
                            yield path

    def replay(self, db: Database, notifier: Notifier) -> int:
        """Move the free files' events into the outbox (one transaction), remove the
        files; returns how many events. Wakes the relay after the commit."""
        with self._lock, contextlib.ExitStack() as held:
            taken: list[tuple[Path, list[dict[str, Any]]]] = []
            for path in sorted(self._files()):
                lines = self._take(path, held)
                if lines is not None:
                    taken.append((path, lines))
            events = [entry for _, lines in taken for entry in lines]
            if not events:
                for path, _ in taken:
                    self._remove(path)
                return 0
            with db.write() as session:
                for entry in events:
                    row = dict(entry["row"])
                    row["created_at"] = datetime.fromisoformat(row["created_at"])
                    insert_outbox_rows(session, row, tuple(entry["drivers"]))
            for path, _ in taken:
                self._remove(path)
        notifier.wake_relay()
        LOG.info("Recorded %d event(s) kept in the spool while the database was unavailable",
                 len(events))
        return len(events)

    def _take(self, path: Path, held: contextlib.ExitStack) -> list[dict[str, Any]] | None:
        """The file's events if this process may replay it (its own, or a dead
        process's that it could lock), else None. Other files stay locked in
        ``held`` until the replay ends."""
        if path == self.own_file:
            # ours, or left by a process gone that had our pid: nobody else writes it
            return self._read(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        held.callback(os.close, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None                      # its process is alive
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None                  # replayed and removed meanwhile
        except FileNotFoundError:
            return None
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        entries = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except ValueError:               # a line cut short by a crash mid-write
                LOG.error("Event spool %s: line %d is not a whole event; skipped",
                          path, number)
        return entries

    def _remove(self, path: Path) -> None:
        if path == self.own_file and self._fd is not None and self._pid == os.getpid():
            os.ftruncate(self._fd, 0)        # keep the file and its lock: still ours
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
