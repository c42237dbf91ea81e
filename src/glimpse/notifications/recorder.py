"""``Notifier``: records notifications into the outbox inside the caller's transaction.

Services call ``notifier.record(session, event_type, build_payload)`` right where
the state changes, before the transaction commits (or, when the payload is known
before the transaction, ``prepare`` it first and ``add`` it inside, so that the
envelope's JSON is not built while the write lock is held). Nothing is sent here: the
row commits or rolls back with the change it describes, and the relay delivers
it later. With no driver but ``noop`` configured, or with the event disabled,
``record`` returns at once and ``build_payload`` is never called.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import Connection, Dialect

from glimpse.db import sqlite_direct
from glimpse.db.engine import after_commit, utcnow
from glimpse.db.models import outbox as _outbox
from glimpse.notifications.catalogue import INFO, is_disabled
from glimpse.notifications.envelope import Payload, make_envelope

_COLUMNS = ("driver", "message_id", "event_type", "priority", "envelope", "created_at",
            "attempts")


class _OutboxInsert:
    """The outbox INSERT compiled once for one dialect, its rows built as the driver
    takes them: on SQLite run straight on the sqlite3 connection of the caller's
    transaction, elsewhere with ``exec_driver_sql``.

    It runs inside every write that records an event, on the request thread:
    through SQLAlchemy's statement execution it cost ~130 us of CPU (measured
    with the ORM ``Session``: execution, parameter construction), as driver SQL
    ~50 us, through :mod:`glimpse.db.sqlite_direct`'s generic path ~30 us (its
    per-column parameter loop), here ~15-20 us of which SQLite's INSERT is 8-10.
    The SQL, the parameter order and the type conversions are SQLAlchemy's
    own, taken from the compiled Core statement.
    """

    def __init__(self, dialect: Dialect) -> None:
        compiled = insert(_outbox).inline().compile(dialect=dialect, column_keys=list(_COLUMNS))
        self.sql = compiled.string
        self.positional = compiled.positional
        order = compiled.positiontup if compiled.positional else None
        self.order: tuple[str, ...] = tuple(order) if order else _COLUMNS
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name in self.order:
            processor = _outbox.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def execute(self, connection: Connection, fixed: dict[str, Any],
                drivers: Sequence[str]) -> None:
        rows = [{**fixed, "driver": driver} for driver in drivers]
        for name, processor in self.processors.items():
            for row in rows:
                row[name] = processor(row[name])
        params: list[Any] = ([tuple(row[name] for name in self.order) for row in rows]
                             if self.positional else rows)
        raw = sqlite_direct.sqlite_connection(connection)
        if raw is None:
            connection.exec_driver_sql(self.sql, params[0] if len(params) == 1 else params)
            return
        try:
            if len(params) == 1:
                raw.execute(self.sql, params[0])
            else:
                raw.executemany(self.sql, params)
        except sqlite3.Error as error:
            raise sqlite_direct.sqlalchemy_error(self.sql, params, error) from error


_INSERTS: dict[tuple[str, str, str], _OutboxInsert] = {}


def insert_outbox_rows(session: Connection, fixed: dict[str, Any],
                       drivers: Sequence[str]) -> None:
    """Insert one outbox row per driver in ``session``'s transaction: ``fixed``
    holds every other column of ``_COLUMNS``."""
    dialect = session.dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    statement = _INSERTS.get(key)
    if statement is None:
        statement = _INSERTS[key] = _OutboxInsert(dialect)
    statement.execute(session, fixed, drivers)


def delivering_drivers(names: Sequence[str]) -> tuple[str, ...]:
    """The configured driver names that produce rows: in order, without duplicates
    and without ``noop`` (which produces nothing at all)."""
    return tuple(dict.fromkeys(d for d in names if d and d != "noop"))


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event ready for the outbox: its envelope and its row's columns but ``driver``."""

    envelope: dict[str, Any]
    row: dict[str, Any]


class Notifier:
    """Knows the configured drivers, the disabled events and the publisher id."""

    def __init__(self, drivers: Sequence[str], *, publisher_id: str,
                 disabled: Sequence[str] = (),
                 on_commit: Callable[[], None] | None = None) -> None:
        self.drivers = delivering_drivers(drivers)
        self.publisher_id = publisher_id
        self.disabled = tuple(disabled)
        self._on_commit = on_commit

    def set_on_commit(self, hook: Callable[[], None] | None) -> None:
        """Called after a transaction that recorded events commits (wakes the relay)."""
        self._on_commit = hook

    def wake_relay(self) -> None:
        """Events were committed outside :meth:`add` (the spool's replay): wake the relay."""
        if self._on_commit is not None:
            self._on_commit()

    def wants(self, event_type: str) -> bool:
        return bool(self.drivers) and not is_disabled(event_type, self.disabled)

    def prepare(self, event_type: str, build_payload: Callable[[], Payload],
                priority: str = INFO) -> PreparedEvent | None:
        """The event's envelope and outbox row, built now (no I/O); None when no driver
        wants it (``build_payload`` is then never called). Services whose payload
        is known before their transaction build it here, outside the write lock,
        and :meth:`add` it inside."""
        if not self.wants(event_type):
            return None
        now = utcnow()
        envelope = make_envelope(publisher_id=self.publisher_id, event_type=event_type,
                                 priority=priority, payload=build_payload(), moment=now)
        # orjson: key order kept, compact, non-ASCII as UTF-8 (valid JSON for every
        # consumer); ~1/8 of json.dumps's CPU on the request thread
        text = orjson.dumps(envelope).decode()
        return PreparedEvent(envelope, {
            "message_id": envelope["message_id"], "event_type": event_type,
            "priority": priority, "envelope": text, "created_at": now, "attempts": 0,
        })

    def add(self, session: Connection, event: PreparedEvent | None) -> dict[str, Any] | None:
        """Insert a prepared event into the outbox in ``session``'s transaction; return
        its envelope (None for None).

        Must be called inside ``Database.write()``. Raises whatever the insert
        raises, which rolls the caller's whole change back: a change is never
        committed without its event.
        """
        if event is None:
            return None
        insert_outbox_rows(session, event.row, self.drivers)
        if self._on_commit is not None:
            after_commit(session, self._on_commit)
        return event.envelope

    def record(self, session: Connection, event_type: str, build_payload: Callable[[], Payload],
               priority: str = INFO) -> dict[str, Any] | None:
        """:meth:`prepare` then :meth:`add`, inside ``session``'s transaction, for
        payloads that depend on what the transaction read or changed."""
        return self.add(session, self.prepare(event_type, build_payload, priority))
