"""Engine creation and the transaction helper every service uses.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout; write
transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the
lock instead of failing half-way with "database is locked". PostgreSQL uses
READ COMMITTED and row locks (``SELECT ... FOR UPDATE``) where services need them.
A ``Database`` on a SQLite file checkpoints the WAL in a thread of its own
(:class:`Checkpointer`), never inside a writer's COMMIT.

SQLite's query planner needs table statistics (``ANALYZE``) to pick the index
that serves an image list in order (without them it reads every visible row
and sorts: 2 ms instead of 0.07 ms for a page of 20 among 1000 images).
``Database`` refreshes them itself after its 1st, 100th, 1,000th, ... write
(bounded by ``PRAGMA analysis_limit``), then recycles its pooled connections,
which only load statistics when they open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from glimpse.exceptions import DatabaseUnavailable

LOG = logging.getLogger(__name__)

# SQLite: rows examined per index by ANALYZE (keeps a refresh to a few ms).
ANALYSIS_LIMIT = 1000
# SQLite: statistics are refreshed after the first write, after SECOND_ANALYZE_AFTER
# writes, then each time the count of writes grew tenfold.
FIRST_ANALYZE_AFTER = 1
SECOND_ANALYZE_AFTER = 100
# Connections a pool opens beyond ``pool_size`` while they are all in use (closed
# again when returned). What a worker can hold at once is bounded by its threads:
# 2 * [DEFAULT] worker_threads (glimpse.api.app.bound_request_threads) + one read on
# the event loop + the relay + [task] max_workers task threads + the task scheduler:
# 11 with the defaults (2 and 4), within pool_size 5 + 10 up to worker_threads = 4,
# so no request thread waits for a connection. Connections are opened only when
# needed, so a larger bound costs nothing until used.
MAX_OVERFLOW = 10
# SQLite: page cache per connection, KiB (SQLite's default is 2,000). A worker keeps
# several connections, and another process's commit empties their caches anyway, so
# a large cache mostly held pages of past reads: with 256 KiB the server tree's
# peak over the request rows of bench/memory.py went 135.3 -> 132.6 MiB (log) and
# 138.5 -> 135.8 (messagingv2), with list requests/s over ~10,000 images the same
# within noise (976-1,080 vs 1,041-1,222; filtered and sorted lists too).
SQLITE_CACHE_KIB = 256


def utcnow() -> datetime:
    """Naive UTC now, microsecond precision: the one clock the services read."""
    return datetime.now(UTC).replace(tzinfo=None)


def missing_sqlite_file(url: str) -> str | None:
    """The path of ``url``'s SQLite file when that file does not exist; None when it
    exists, for ``:memory:``, ``file:`` URIs (``?uri=true``, whose mode decides) and
    for other databases. Opening a missing file would create an empty database:
    read-only commands report this path instead."""
    parsed = make_url(url)
    if (parsed.get_backend_name() != "sqlite" or not parsed.database
            or parsed.database == ":memory:" or "uri" in parsed.query
            or os.path.exists(parsed.database)):
        return None
    return os.path.abspath(parsed.database)


def make_engine(url: str, *, pool_size: int = 5, manual_checkpoints: bool = False) -> Engine:
    """Create an engine for ``url``; SQLite files get their directory and pragmas.
    ``manual_checkpoints``: SQLite connections do not checkpoint the WAL when they
    commit (the caller runs checkpoints, see :class:`Checkpointer`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        # LIFO: a checkout gets the connection returned last, whose page cache is the
        # warmest (SQLite keeps one per connection and empties it whenever another
        # connection committed). The default FIFO rotated every transaction through
        # all of a worker's connections, so each one began by reading its pages again.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=MAX_OVERFLOW,
                               pool_use_lifo=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None   # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            if manual_checkpoints:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            # straight to the driver: exec_driver_sql's machinery costs more than BEGIN
            conn.connection.driver_connection.execute(
                "BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_size=pool_size, max_overflow=MAX_OVERFLOW, pool_pre_ping=True)


class WriteGate:
    """SQLite: the queue that writers of every process on one database file wait in.

    SQLite lets one writer in at a time; the others wait in its busy handler,
    which *sleeps* 1, 2, 5 ... 100 ms between tries, so under load some writes
    wait seconds while the lock is free most of the time. Writers that go
    through :meth:`held` first take a per-process lock, then an exclusive
    ``flock`` on ``<database>-writers.lock`` (the kernel wakes the next waiter
    at once), and only then ``BEGIN IMMEDIATE``. Other programs on the same
    file still work: they meet SQLite's lock and busy handler as before. A
    nested ``held`` in the same thread passes straight through.
    """

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}-writers.lock"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        if getattr(self._local, "held", False):
            yield
            return
        with self._lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.held = True
            try:
                yield
            finally:
                self._local.held = False
                fcntl.flock(fd, fcntl.LOCK_UN)


# SQLite: writes (per process) between two requests for a WAL checkpoint.
CHECKPOINT_EVERY = 200
# SQLite: the WAL is started over (Checkpointer) once it holds this many frames
# (pages: 16 MiB at 4 KiB), waiting at most RESTART_BUSY_MS for its readers;
# a WAL file left longer than JOURNAL_SIZE_LIMIT bytes is then cut to it.
RESTART_FRAMES = 4096
RESTART_BUSY_MS = 50
JOURNAL_SIZE_LIMIT = 64 << 20


class Checkpointer:
    """SQLite: WAL checkpoints in a daemon thread of their own.

    Left to SQLite, the writer whose COMMIT takes the WAL past 1000 pages copies
    it into the database and syncs both files (~50 ms here) while it still holds
    the write lock, so every other writer of every process waits: a latency
    spike every few hundred writes. Here connections never checkpoint on commit;
    :meth:`request` wakes a thread that runs ``PRAGMA wal_checkpoint(PASSIVE)``
    on its own connection, which neither takes nor waits for the write lock
    (sqlite3 releases the GIL meanwhile). The threads of every process on one
    database take turns (an ``flock`` on ``<database>-checkpoint.lock``), so no
    pass meets another one in SQLite and is lost.

    A passive checkpoint copies pages but never rewinds the WAL: SQLite starts
    the log over only when a writer begins with every frame copied and no
    reader in the log, which under steady writes from several threads and
    processes never happens (the WAL grew 25 MB/s, to 200 MB in 8 s of image
    creates, and every read and write got slower with it). So once the WAL
    holds ``RESTART_FRAMES`` frames, the thread runs a second passive pass
    (copying, still outside the gate, what was written during the first), then
    takes the :class:`WriteGate` (other writers queue in the kernel) and runs
    ``wal_checkpoint(RESTART)``: it copies the few frames written since, syncs,
    and waits at most ``RESTART_BUSY_MS`` for readers of the old log; the next writer
    starts the log from its beginning, and ``journal_size_limit`` cuts a file
    left large. Blocks writers for that long, about once per
    ``RESTART_FRAMES`` pages written. If readers stay, it gives up and tries
    at the next request. A failure is logged; the next request tries again.
    Started on the first request (after any fork).
    """

    def __init__(self, database_path: str, gate: WriteGate | None = None) -> None:
        self.path = database_path
        self.gate = gate
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.runs = 0
        self.restarts = 0

    def request(self) -> None:
        with self._start_lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="glimpse-wal-checkpoint")
                self._thread.start()
        self._wake.set()

    def connect(self) -> Any:
        """The thread's own sqlite3 connection."""
        import sqlite3

        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout={RESTART_BUSY_MS}")
        connection.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return connection

    def _run(self) -> None:
        import sqlite3

        connection = self.connect()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    self.checkpoint(connection)
                except (sqlite3.Error, OSError) as exc:   # OSError: the lock file
                    LOG.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            connection.close()

    def checkpoint(self, connection: Any) -> None:
        """One pass on ``connection`` (a sqlite3 connection): passive; when the WAL
        is long, passive again, then a restart under the write gate. Blocks while
        another process's checkpointer makes its pass. Raises sqlite3.Error, or
        OSError when the lock file cannot be opened."""
        # One checkpointer at a time per database, in the kernel's queue: a pass
        # that meets another one in SQLite returns busy at once, and its process
        # passes again only CHECKPOINT_EVERY writes later (a fifth of the passes
        # of two workers were lost), so the WAL ran longer and every read and
        # write paid for it.
        fd = os.open(f"{self.path}-checkpoint.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._checkpoint(connection)
        finally:
            os.close(fd)                        # and with it the lock

    def _checkpoint(self, connection: Any) -> None:
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        if frames < RESTART_FRAMES or self.gate is None:
            return
        # Under load that pass took tens of ms, and the restart copies and syncs
        # what was written meanwhile with every writer waiting: copy it first.
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self.gate.held():
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if not busy:
            self.restarts += 1

    def stop(self, timeout: float = 5.0) -> None:
        with self._start_lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)


# SQLite result codes of a database that cannot serve now (busy, locked, out of
# memory, I/O error, disk full, cannot open, lock protocol), not of a bad statement
# ("no such table" and syntax errors are OperationalError too, code 1).
SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 10, 13, 14, 15})


def unavailable(error: SQLAlchemyError) -> DatabaseUnavailable | None:
    """``error`` as :class:`DatabaseUnavailable` when the database itself failed:
    a disconnect, a pool checkout that timed out, PostgreSQL's
    ``OperationalError``/``InterfaceError`` (connection refused or lost, shutdown,
    deadlock, statement timeout), SQLite's for the result codes above. None for
    a statement's own failure (``IntegrityError``, a missing table, ...)."""
    if not (isinstance(error, PoolTimeout)
            or (isinstance(error, DBAPIError) and error.connection_invalidated)):
        if not isinstance(error, OperationalError | InterfaceError):
            return None
        code = getattr(error.orig, "sqlite_errorcode", None)
        if code is not None and code & 0xFF not in SQLITE_UNAVAILABLE:
            return None
    return _unavailable_because(error)


def _unavailable_because(error: SQLAlchemyError) -> DatabaseUnavailable:
    """DatabaseUnavailable whose detail is the first line of the driver's reason."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return DatabaseUnavailable(lines[0] if lines else type(orig).__name__)


def checked_out(engine: Engine) -> Connection:
    """``engine.connect()``, where any database error means the database cannot
    serve: no statement of ours has run yet. (A connection reset during the
    pool's pre-ping surfaced from SQLAlchemy's psycopg dialect as a
    ``ProgrammingError`` about autocommit, which read as a bad statement.)"""
    try:
        return engine.connect()
    except DBAPIError as error:
        raise _unavailable_because(error) from error


def raise_if_unavailable(error: SQLAlchemyError) -> None:
    """Raise :func:`unavailable`'s DatabaseUnavailable for ``error`` (from it), if any."""
    down = unavailable(error)
    if down is not None:
        raise down from error


#: What a background loop catches for any failure of the database.
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, DatabaseUnavailable)


class Database:
    """Owns the engine; hands out Core connections in transactions.

    ``write()`` is for every change: it yields a ``Connection`` in a transaction
    (``BEGIN IMMEDIATE`` on SQLite), commits on success, rolls back on any
    exception (re-raised), and after a commit runs the hooks registered for
    that transaction with :func:`after_commit` (e.g. waking the relay), outside
    the write gate. The hooks of a rolled-back transaction are dropped.
    On a SQLite file it queues in the :class:`WriteGate` (blocks until the
    writers before it are done) with a pooled connection already in hand.
    ``read()`` is for queries only: a ``Connection`` in a transaction.
    Both raise :class:`DatabaseUnavailable` (from the SQLAlchemy error) when the
    database itself fails, in the transaction or its body (see :func:`unavailable`);
    other errors propagate unchanged. Nothing here retries.
    (Core, not the ORM: ``sqlalchemy.orm`` would add ~6 MiB to every process
    and ~0.15 ms to every transaction, for a transaction wrapper.)
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        file = make_url(url).database if make_url(url).get_backend_name() == "sqlite" else None
        on_file = bool(file) and file != ":memory:"
        self.engine = make_engine(url, pool_size=pool_size, manual_checkpoints=on_file)
        self.dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(sqlite_immediate=True)
        database = self.engine.url.database if self.dialect == "sqlite" else None
        self._gate = (WriteGate(os.path.abspath(database))
                      if database and database != ":memory:" else None)
        self.checkpointer = (Checkpointer(os.path.abspath(database), self._gate)
                             if on_file and database else None)
        self._since_checkpoint = 0
        self._writes = 0
        self._analyze_at: int | None = FIRST_ANALYZE_AFTER if self.dialect == "sqlite" else None
        self._writes_lock = threading.Lock()

    def _gate_held(self) -> AbstractContextManager[None]:
        """The write gate, held (a SQLite file), or nothing to queue in."""
        return self._gate.held() if self._gate is not None else nullcontext()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        hooks: list[Callable[[], None]] = []
        try:
            # the pool's checkout and check-in happen outside the gate: every process's
            # writers queue for the time the gate is held (~0.1 ms less per write)
            with checked_out(self._write_engine) as connection, self._gate_held():
                _after_commit[connection] = hooks
                try:
                    with connection.begin():
                        yield connection
                finally:
                    # this transaction's hooks only: never run after a rollback, never
                    # seen by the next user of the pooled connection
                    del _after_commit[connection]
        except SQLAlchemyError as error:
            raise_if_unavailable(error)
            raise
        # committed and the gate released: the hooks (e.g. waking the relay
        # thread, which then competes for the GIL) never delay the next writer
        for hook in hooks:
            hook()
        if self.checkpointer is not None:
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                self.checkpointer.request()
        if self._analyze_at is not None:
            self._count_write()

    def _count_write(self) -> None:
        with self._writes_lock:
            self._writes += 1
            due = self._analyze_at is not None and self._writes >= self._analyze_at
            if due:
                self._analyze_at = max(self._writes * 10, SECOND_ANALYZE_AFTER)
        if due:
            self.refresh_statistics()

    def refresh_statistics(self) -> None:
        """SQLite: ``ANALYZE`` (bounded), then recycle the pool so every connection
        plans with the new statistics. Never raises: a failure is logged (the
        planner keeps the old statistics)."""
        if self.dialect != "sqlite":
            return
        try:
            # in the gate: other writers queue in the kernel, not in SQLite's
            # sleeping busy handler, while ANALYZE holds the write lock
            with self._gate_held(), self._write_engine.begin() as conn:
                conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
                conn.exec_driver_sql("ANALYZE")
            self.engine.dispose()
        except SQLAlchemyError as exc:
            LOG.warning("Could not refresh the SQLite statistics: %s", exc)

    def reads_without_waiting(self) -> bool:
        """True when a short ``read()`` would not wait for anything: SQLite (WAL readers
        take no lock) with an idle pooled connection. The API then runs bounded reads
        on the event loop: a hop to the thread pool costs more CPU (~0.4 ms) than
        showing one image."""
        if self.dialect != "sqlite":
            return False
        checkedin = getattr(self.engine.pool, "checkedin", None)
        return callable(checkedin) and checkedin() > 0

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A ``Connection`` in a transaction, for queries only (committed at the end;
        nothing to commit)."""
        try:
            with checked_out(self.engine) as connection, connection.begin():
                yield connection
        except SQLAlchemyError as error:
            raise_if_unavailable(error)
            raise

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()


# The after_commit hooks of each open write() transaction, by its connection:
# state of the transaction, not of the pooled DBAPI connection (``Connection.info``
# outlives the transaction).
_after_commit: dict[Connection, list[Callable[[], None]]] = {}


def after_commit(connection: Connection, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the current write transaction of ``connection`` has
    committed (once, however often it is registered); dropped if it rolls back.
    Raises RuntimeError if ``connection`` is not in a ``Database.write()``."""
    hooks = _after_commit.get(connection)
    if hooks is None:
        raise RuntimeError("after_commit() outside a Database.write() transaction")
    if hook not in hooks:
        hooks.append(hook)
