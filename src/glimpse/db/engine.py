"""Engine creation and the transaction helper every service uses.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout; write
transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the
lock instead of failing half-way with "database is locked". PostgreSQL uses
READ COMMITTED and row locks (``SELECT ... FOR UPDATE``) where services need them.

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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

LOG = logging.getLogger(__name__)

# SQLite: rows examined per index by ANALYZE (keeps a refresh to a few ms).
ANALYSIS_LIMIT = 1000
# SQLite: statistics are refreshed after the first write, after SECOND_ANALYZE_AFTER
# writes, then each time the count of writes grew tenfold.
FIRST_ANALYZE_AFTER = 1
SECOND_ANALYZE_AFTER = 100


def utcnow() -> datetime:
    """Naive UTC now, microsecond precision: the one clock the services read."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine for ``url``; SQLite files get their directory and pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None   # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
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
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


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


class Database:
    """Owns the engine; hands out sessions in transactions.

    ``write()`` is for every change: it commits on success, rolls back on any
    exception (re-raised), and after a commit runs the ``after_commit`` hooks
    registered in ``session.info["after_commit"]`` (e.g. waking the relay).
    On a SQLite file it first queues in the :class:`WriteGate` (blocks until
    the writers before it are done).
    ``read()`` is for queries only; ``query()`` too, on a Core connection.
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)
        database = self.engine.url.database if self.dialect == "sqlite" else None
        self._gate = (WriteGate(os.path.abspath(database))
                      if database and database != ":memory:" else None)
        self._writes = 0
        self._analyze_at: int | None = FIRST_ANALYZE_AFTER if self.dialect == "sqlite" else None
        self._writes_lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Session]:
        gate: AbstractContextManager[None] = (
            self._gate.held() if self._gate is not None else nullcontext())
        with gate:
            session = self._write_sessions()
            try:
                with session.begin():
                    yield session
                for hook in session.info.get("after_commit", ()):
                    hook()
            finally:
                session.close()
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
            with self.engine.execution_options(sqlite_immediate=True).begin() as conn:
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
    def read(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextmanager
    def query(self) -> Iterator[Connection]:
        """Like ``read()``, but a Core ``Connection`` in a transaction instead of an
        ORM ``Session`` (which costs ~0.15 ms more to open and close than the
        queries of showing one image). For queries only; ``images_repo``'s read
        functions accept either."""
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the current write transaction has committed."""
    hooks: list[Callable[[], None]] = session.info.setdefault("after_commit", [])
    if hook not in hooks:
        hooks.append(hook)
