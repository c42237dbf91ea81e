"""Pre-fork supervisor of the API worker processes (``[DEFAULT] workers`` > 1).

The supervisor binds the listening socket once, then forks ``workers``
children that each serve on that shared socket (the kernel spreads the
connections). It imports only the standard library it needs (no uvicorn, no
oslo.config, no SQLAlchemy, no multiprocessing): it stays a ~10 MiB process
whose only job is to keep the workers running. Each child imports and builds
the application itself after the fork, so nothing of it is held by the parent.

Signals, as uvicorn's own multiprocess supervisor handles them:

- SIGTERM / SIGINT: every worker gets SIGTERM (a graceful shutdown: open
  requests finish, the background loops stop and drain); the supervisor waits
  for all of them, then :meth:`Supervisor.run` returns 0.
- SIGHUP: each worker is replaced by a fresh one (the new one is forked before
  the old one gets SIGTERM; the socket stays open, so no connection is refused).
- A worker that dies is replaced, unless it died before it started serving
  (exit status :data:`STARTUP_FAILURE`, as uvicorn's): that failure would repeat
  on every restart, so the supervisor stops the others and returns 1.

Blocking: :meth:`Supervisor.run` blocks until the shutdown is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import sys

TYPE_CHECKING = False  # no typing import in the supervisor: it stays resident
if TYPE_CHECKING:
    from collections.abc import Callable

LOG = logging.getLogger("glimpse.supervisor")

STARTUP_FAILURE = 3          # uvicorn's exit status for "could not start"
BACKLOG = 2048               # uvicorn's default
_STOP = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (*_STOP, signal.SIGHUP, signal.SIGCHLD)


def bind_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a ':'),
    with SO_REUSEADDR, as uvicorn binds it. Raises OSError (address in use, ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"signal {signal.Signals(os.WTERMSIG(wait_status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


class Supervisor:
    """Keeps ``workers`` children running ``serve(sock)`` (which returns the
    child's exit status) until SIGTERM or SIGINT."""

    def __init__(self, sock: socket.socket, workers: int,
                 serve: Callable[[socket.socket], int]) -> None:
        self.sock = sock
        self.workers = workers
        self.serve = serve
        self.children: set[int] = set()
        self.retiring: set[int] = set()   # replaced on SIGHUP: not restarted
        self.pending: list[int] = []
        self.received: int | None = None  # the signal that stopped the supervisor
        self.stopping = False
        self.status = 0
        self._wake_r = self._wake_w = -1

    # -- in the child -------------------------------------------------------

    def _child(self) -> None:  # pragma: no cover - runs in the forked worker
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            code = self.serve(self.sock)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            LOG.exception("Worker process %d failed", os.getpid())
        finally:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    # -- in the supervisor --------------------------------------------------

    def _spawn(self) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            self._child()
        self.children.add(pid)
        LOG.info("Started worker process [%d]", pid)
        return pid

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def _terminate(self, pids: set[int] | list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        """Collect dead children; replace them unless stopping or failed at start."""
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            self.children.discard(pid)
            if self.stopping or pid in self.retiring:
                self.retiring.discard(pid)
                LOG.info("Worker process [%d] stopped (%s)", pid, _describe(wait_status))
                continue
            if os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == STARTUP_FAILURE:
                LOG.error("Worker process [%d] failed to start: stopping", pid)
                self.status = 1
                self._stop()
                continue
            LOG.warning("Worker process [%d] died (%s): starting another", pid,
                        _describe(wait_status))
            self._spawn()

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._terminate(self.children)

    def _handle(self, signum: int) -> None:
        if signum in _STOP:
            if self.received is None:
                self.received = signum
            LOG.info("Received %s: stopping the worker processes",
                     signal.Signals(signum).name)
            self._stop()
        elif signum == signal.SIGHUP and not self.stopping:
            LOG.info("Received SIGHUP: replacing the worker processes")
            old = list(self.children)
            for pid in old:
                self._spawn()
                self.retiring.add(pid)
                self._terminate([pid])

    def run(self) -> int:
        """Fork the workers, supervise them, and return 0 after a clean stop
        (1 if a worker failed to start)."""
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            for _ in range(self.workers):
                self._spawn()
            while self.children:
                select.select([self._wake_r], [], [], 1.0)
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise
                while self.pending:
                    self._handle(self.pending.pop(0))
                self._reap()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.status
