"""Pre-fork supervisor of the API worker processes (``[DEFAULT] workers`` > 1).

The supervisor binds the listening socket, forks ``workers`` children and
keeps them running. It imports only the standard library it needs (no
uvicorn, no oslo.config, no SQLAlchemy, no multiprocessing): a ~10 MiB
process. Each child imports and builds the application itself after the
fork, so nothing of it is held by the parent.

Connections: the supervisor accepts them and hands them to the workers in
turn (round robin, as Node.js's cluster module does), each over the worker's
own ``AF_UNIX`` ``SOCK_SEQPACKET`` channel with ``SCM_RIGHTS``. A shared
listening socket lets whichever worker wakes first accept everything that is
queued: with a few keep-alive clients (a proxy's pool, a benchmark's four
connections) one worker then served all of them in a third of the starts
while the other idled. A worker enters the rotation once it reports ready
(one ``R`` message on its channel, sent when it serves), so no connection
waits for a starting worker; while none is ready, connections wait in the
listen backlog. Only ready workers are handed connections; a worker whose
channel is full or closed is skipped. A worker that reads EOF on its channel
(the supervisor is gone) shuts down.

Signals, as uvicorn's own multiprocess supervisor handles them:

- SIGTERM / SIGINT: every worker gets SIGTERM (a graceful shutdown: open
  requests finish, the background loops stop and drain); the supervisor waits
  for all of them, then :meth:`Supervisor.run` returns 0.
- SIGHUP: each worker is replaced by a fresh one. The fresh ones are forked
  first; each time one reports ready, one old worker leaves the rotation and
  gets SIGTERM, so the service never runs short of workers.
- A worker whose event loop does not answer a ping on its channel within
  :data:`HEALTHCHECK_TIMEOUT` (stuck: a deadlock, a blocking call on the
  loop) gets SIGKILL and is replaced like one that died.
- A worker told to stop (SIGTERM, or retired after a SIGHUP) that is still
  alive ``stop_timeout`` seconds later gets SIGKILL: a stop never waits
  forever on a worker stuck in its shutdown. What it had recorded is in the
  database (undelivered events are delivered after the restart).
- A worker that dies is replaced, unless it died before it started serving
  (exit status :data:`STARTUP_FAILURE`, as uvicorn's): that failure would repeat
  on every restart, so the supervisor stops the others and returns 1.

Blocking: :meth:`Supervisor.run` blocks until the shutdown is complete; it
never blocks on a worker (channels are non-blocking).
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
import time

TYPE_CHECKING = False  # no typing import in the supervisor: it stays resident
if TYPE_CHECKING:
    from collections.abc import Callable

LOG = logging.getLogger("glimpse.supervisor")

STARTUP_FAILURE = 3          # uvicorn's exit status for "could not start"
BACKLOG = 2048               # uvicorn's default
READY = b"R"                 # a worker's message on its channel: it serves now
PING, PONG = b"P", b"K"      # the supervisor asks, the worker's event loop answers
HEALTHCHECK_INTERVAL = 5.0   # seconds between pings of a ready worker
HEALTHCHECK_TIMEOUT = 30.0   # a worker whose event loop has not answered for this long is killed
_ACCEPTS_PER_WAKE = 64       # connections accepted before looking at signals again
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
    """Keeps ``workers`` children running ``serve(channel)`` (which returns the
    child's exit status) until SIGTERM or SIGINT, and hands them the
    connections accepted on ``sock``. A child told to stop that is still alive
    ``stop_timeout`` seconds later is killed."""

    def __init__(self, sock: socket.socket, workers: int,
                 serve: Callable[[socket.socket], int], *, stop_timeout: float) -> None:
        self.sock = sock
        self.workers = workers
        self.serve = serve
        self.stop_timeout = stop_timeout
        self.children: set[int] = set()
        self.channels: dict[int, socket.socket] = {}   # pid -> the supervisor's end
        self.rotation: list[int] = []     # ready workers, in the order they got ready
        self.stale: set[int] = set()      # to be replaced (SIGHUP) once fresh ones are ready
        self.retiring: set[int] = set()   # sent SIGTERM to be replaced: not restarted
        self.pending: list[int] = []
        self.received: int | None = None  # the signal that stopped the supervisor
        self.stopping = False
        self.status = 0
        self._turn = 0
        self._wake_r = self._wake_w = -1
        self._pinged: dict[int, float] = {}   # ready pid -> when its unanswered ping went out
        self._told_to_stop: dict[int, float] = {}   # pid -> when it was sent SIGTERM
        self._next_ping = 0.0

    # -- in the child -------------------------------------------------------

    def _child(self, channel: socket.socket) -> None:  # pragma: no cover - forked worker
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.sock.close()
            for other in self.channels.values():
                other.close()
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            code = self.serve(channel)
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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            ours.close()
            self._child(theirs)
        theirs.close()
        ours.setblocking(False)
        self.children.add(pid)
        self.channels[pid] = ours
        LOG.info("Started worker process [%d]", pid)
        return pid

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def _terminate(self, pids: set[int] | list[int]) -> None:
        now = time.monotonic()
        for pid in pids:
            self._told_to_stop.setdefault(pid, now)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _kill_overdue(self) -> None:
        """SIGKILL the workers still alive ``stop_timeout`` after their SIGTERM
        (``_reap`` then collects them as stopped, not as died)."""
        now = time.monotonic()
        for pid, since in list(self._told_to_stop.items()):
            if now - since >= self.stop_timeout and pid in self.children:
                del self._told_to_stop[pid]
                self._kill(pid, f"did not stop within {now - since:.0f} s")

    def _kill(self, pid: int, why: str) -> None:
        """SIGKILL ``pid`` (a worker that stopped responding), saying ``why``."""
        LOG.error("Worker process [%d] %s: killing it", pid, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _leave_rotation(self, pid: int) -> None:
        if pid in self.rotation:
            self.rotation.remove(pid)

    def _retire(self, pid: int) -> None:
        """Take ``pid`` out of the rotation and stop it gracefully (not restarted)."""
        self._leave_rotation(pid)
        self.stale.discard(pid)
        self.retiring.add(pid)
        self._terminate([pid])

    def _forget(self, pid: int) -> None:
        self.children.discard(pid)
        self._pinged.pop(pid, None)
        self._told_to_stop.pop(pid, None)
        self._leave_rotation(pid)
        self.stale.discard(pid)
        channel = self.channels.pop(pid, None)
        if channel is not None:
            channel.close()

    def _reap(self) -> None:
        """Collect dead children; replace them unless stopping or failed at start."""
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                for pid in list(self.children):
                    self._forget(pid)
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            self._forget(pid)
            if self.stopping or pid in self.retiring:
                self.retiring.discard(pid)
                LOG.info("Worker process [%d] stopped (%s)", pid, _describe(wait_status))
                continue
            if os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == STARTUP_FAILURE:
                LOG.error("Worker process [%d] failed to start: stopping", pid)
                self.status = 1
                self._stop()
                continue
            LOG.warning("Worker process [%d] died (%s)", pid, _describe(wait_status))
            if len(self.children - self.retiring - self.stale) < self.workers:
                self._spawn()

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.rotation.clear()
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
            self.stale |= self.children - self.retiring
            for _ in range(self.workers):
                self._spawn()

    def _read_channel(self, pid: int) -> None:
        """A worker's message: READY puts it in the rotation (and retires one stale
        worker); EOF means it is going away: no more connections for it."""
        channel = self.channels[pid]
        try:
            message = channel.recv(16)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message == PONG:
            self._pinged.pop(pid, None)
        elif message == READY and not self.stopping and pid not in self.retiring:
            if pid not in self.rotation:
                self.rotation.append(pid)
            if pid not in self.stale and self.stale:
                self._retire(min(self.stale, key=self._age))
        elif not message:
            self._leave_rotation(pid)
            self.channels.pop(pid).close()

    def _age(self, pid: int) -> int:
        """Order of readiness (stale workers never ready sort first)."""
        return self.rotation.index(pid) if pid in self.rotation else -1

    def _check_health(self) -> None:
        """Ping the ready workers every HEALTHCHECK_INTERVAL; SIGKILL one whose
        ping stayed unanswered for HEALTHCHECK_TIMEOUT (``_reap`` replaces it)."""
        now = time.monotonic()
        for pid, sent in list(self._pinged.items()):
            if now - sent >= HEALTHCHECK_TIMEOUT and pid in self.rotation:
                self._leave_rotation(pid)
                self._pinged.pop(pid)
                self._kill(pid, f"did not answer for {now - sent:.0f} s")
        if now < self._next_ping:
            return
        self._next_ping = now + HEALTHCHECK_INTERVAL
        for pid in self.rotation:
            if pid not in self._pinged:
                with contextlib.suppress(OSError):
                    self.channels[pid].send(PING)
                    self._pinged[pid] = now

    def _dispatch(self) -> None:
        """Accept what is queued (up to ``_ACCEPTS_PER_WAKE``) and hand each
        connection to the next ready worker; close it if none can take it."""
        for _ in range(_ACCEPTS_PER_WAKE):
            if not self.rotation:
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:   # that client gave up: take the next one
                continue
            except OSError as exc:       # EMFILE, ENOBUFS, ...: the backlog waits a moment
                LOG.warning("accept failed: %s", exc)
                time.sleep(0.1)          # (the socket stays readable: no busy loop)
                return
            with conn:
                with contextlib.suppress(OSError):   # as uvicorn's own accept does
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        for _ in range(len(self.rotation)):
            self._turn = (self._turn + 1) % len(self.rotation)
            pid = self.rotation[self._turn]
            try:
                socket.send_fds(self.channels[pid], [b"c"], [conn.fileno()])
                return
            except BlockingIOError:      # its channel is full (a stuck worker): next one
                continue
            except OSError:              # its channel is gone: it is stopping
                self._leave_rotation(pid)
                if not self.rotation:
                    break
        LOG.warning("No worker could take a connection: closed it")

    def run(self) -> int:
        """Fork the workers, supervise them, hand them connections, and return 0
        after a clean stop (1 if a worker failed to start)."""
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.sock.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            for _ in range(self.workers):
                self._spawn()
            while self.children:
                watched: list[int | socket.socket] = [self._wake_r]
                watched += self.channels.values()
                if self.rotation:
                    watched.append(self.sock)
                readable, _, _ = select.select(watched, [], [], 1.0)
                if self.sock in readable:
                    self._dispatch()
                for pid, channel in list(self.channels.items()):
                    if channel in readable:
                        self._read_channel(pid)
                if self._wake_r in readable:
                    self._drain_wakeups()
                while self.pending:
                    self._handle(self.pending.pop(0))
                self._reap()
                self._kill_overdue()
                if not self.stopping:
                    self._check_health()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for channel in self.channels.values():
                channel.close()
        return self.status

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise

