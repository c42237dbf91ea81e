"""Liveness marks: has another Glimpse process on this machine exited?

A relay lease or a task claim held by a process that died is otherwise taken
over only once it runs out (``[outbox] lease_seconds``, ``[task]
claim_timeout``). With marks, a process of the same machine sees at once that
the holder is gone and takes over at its next look (about a second).

Each process that runs the background loops holds an exclusive ``flock`` on
``<state_path>/processes/<node id>.alive`` for its whole life. The kernel drops
the lock when the process exits, however it exits (SIGKILL, a crash, the OOM
killer), and never while it runs: no pid reuse, no zombie, no PID namespace
can fool it. ``gone(node)`` is True only when that node's mark exists in this
directory and nobody holds its lock. A node of another machine (no mark here),
a live one, or any error answers False, and the caller waits for the claim to
run out, as it would without marks: a wrong answer can only be a slow one.

Marks of exited processes are removed by :meth:`LivenessMarks.sweep` once they
were seen dead by two sweeps (what they held has been taken over or run out
by then). Nothing here touches the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

SUFFIX = ".alive"
_TEMP_SUFFIX = ".tmp"
_TEMP_MAX_AGE = 60.0      # seconds: a temporary mark older than this was abandoned


def mark_name(node_id: str) -> str:
    """The mark's file name: the node id with anything but ``[A-Za-z0-9._-]`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", node_id) + SUFFIX


class LivenessMarks:
    """This process's mark, and the questions about other processes' marks.

    ``hold`` and ``release`` are called once, at start and at stop; ``gone`` and
    ``sweep`` from any thread. None of them blocks (non-blocking ``flock``)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._own: tuple[Path, int] | None = None
        self._seen_dead: set[str] = set()

    def hold(self, node_id: str) -> bool:
        """Create this process's mark and lock it. False (logged) when the
        directory cannot be used: the service runs as before, takeovers wait for
        claims to run out."""
        final = self.directory / mark_name(node_id)
        temp = self.directory / f".{final.name}.{os.getpid()}{_TEMP_SUFFIX}"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.rename(temp, final)      # appears under its name already locked
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
        except OSError as exc:
            LOG.warning("No liveness mark in %s (%s): a crashed process's relay lease and "
                        "task claims are taken over only when they run out",
                        self.directory, exc)
            return False
        self._own = (final, fd)
        return True

    def release(self) -> None:
        """Remove this process's mark (a clean stop)."""
        if self._own is None:
            return
        path, fd = self._own
        self._own = None
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)

    def gone(self, node_id: str) -> bool:
        """True only when ``node_id``'s mark is here and no process holds it."""
        path = self.directory / mark_name(node_id)
        if self._own is not None and path == self._own[0]:
            return False
        return unlocked(path)

    def sweep(self) -> int:
        """Remove the marks that this call and the previous one both found
        unlocked, and temporary marks abandoned for a minute. Returns how many
        were removed. Call it every few minutes, no more often than the longest
        claim lasts: a mark seen dead once may still be what a takeover needs."""
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return 0
        removed = 0
        dead: set[str] = set()
        for path in entries:
            name = path.name
            if name.endswith(SUFFIX):
                if (self._own is not None and path == self._own[0]) or not unlocked(path):
                    continue
                dead.add(name)
                if name not in self._seen_dead:
                    continue
            elif not (name.startswith(".") and name.endswith(_TEMP_SUFFIX)
                      and _abandoned_temp(path)):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        self._seen_dead = dead
        return removed


def unlocked(path: Path) -> bool:
    """True when ``path`` exists and an exclusive ``flock`` on it is free right now
    (whoever held it has closed it or exited). Never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        return True
    finally:
        os.close(fd)                # also drops the lock just taken


def _abandoned_temp(path: Path) -> bool:
    try:
        old = time.time() - path.stat().st_mtime > _TEMP_MAX_AGE
    except OSError:
        return False
    return old and unlocked(path)
