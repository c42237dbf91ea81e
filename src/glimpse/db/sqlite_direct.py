"""SQLite: SQLAlchemy statements run as their compiled text on the sqlite3 connection.

For the small, hot queries of ``images_repo`` (one image, its children, the
image INSERT/UPDATE) SQLAlchemy's execution machinery costs ~10x the query. Here
a statement built once is compiled once for SQLite; its text runs straight on
the sqlite3 connection of the caller's transaction, with SQLAlchemy's own bind
converters, and sqlite3's errors are re-raised as SQLAlchemy's. On other
databases, and for statements that need run-time expansion (``in_`` of a list
parameter, callable defaults), everything goes through SQLAlchemy as usual.
Nothing here commits: the caller's transaction decides.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

# Compiled statements kept before the cache is cleared (statements are built once).
MAX_STATEMENTS = 2048

SQLITE = sqlite_dialect.dialect()
_Converter = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Prepared:
    """A statement's SQLite text, the order of its ``?`` parameters with SQLAlchemy's
    converter for each (None: passed as is) and the values of its constant binds."""

    sql: str
    names: tuple[str, ...]
    converters: tuple[_Converter, ...]
    constants: dict[str, Any]

    def values(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for name, convert in zip(self.names, self.converters, strict=True):
            value = params[name] if name in params else self.constants[name]
            out.append(value if convert is None or value is None else convert(value))
        return out


def prepare(stmt: Any, column_keys: list[str] | None = None) -> Prepared | None:
    """``stmt`` compiled for SQLite (an INSERT/UPDATE writes ``column_keys``); None
    when SQLAlchemy must expand parameters at run time (``in_`` of a list
    parameter) or a bind is computed by a callable (a column default)."""
    compiled = stmt.compile(dialect=SQLITE, column_keys=column_keys)
    if "POSTCOMPILE" in compiled.string or compiled.positiontup is None:
        return None
    converters: list[_Converter] = []
    constants: dict[str, Any] = {}
    for name in compiled.positiontup:
        bind = compiled.binds.get(name)
        if bind is None or bind.callable is not None or bind.expanding:
            return None
        if not bind.required:
            constants[name] = bind.value
        converters.append(bind.type.dialect_impl(SQLITE).bind_processor(SQLITE))
    return Prepared(compiled.string, tuple(compiled.positiontup), tuple(converters),
                     constants)


_PREPARED: dict[tuple[int, tuple[str, ...] | None], tuple[Any, Prepared | None]] = {}


def cached(stmt: Any, column_keys: tuple[str, ...] | None = None) -> Prepared | None:
    """The cached :func:`prepare` of ``stmt`` (an INSERT/UPDATE writing
    ``column_keys``), keyed by identity: statements here are built once and kept."""
    key = (id(stmt), column_keys)
    entry = _PREPARED.get(key)
    if entry is None or entry[0] is not stmt:
        if len(_PREPARED) >= MAX_STATEMENTS:
            _PREPARED.clear()
        entry = (stmt, prepare(stmt, None if column_keys is None else list(column_keys)))
        _PREPARED[key] = entry
    return entry[1]


@contextmanager
def as_sqlalchemy_errors(sql: str, params: Any) -> Iterator[None]:
    """sqlite3's exceptions raised as SQLAlchemy's (IntegrityError, OperationalError,
    ...), as callers expect from a statement run through SQLAlchemy."""
    try:
        yield
    except sqlite3.Error as error:
        raise sqlalchemy_error(sql, params, error) from error


def sqlalchemy_error(sql: str, params: Any, error: sqlite3.Error) -> StatementError:
    """``error`` as the SQLAlchemy exception a statement run through SQLAlchemy
    raises. (The hot paths below catch with ``try`` rather than
    :func:`as_sqlalchemy_errors`: a generator context manager costs ~2 us.)"""
    return DBAPIError.instance(sql, params, error, sqlite3.Error)


def sqlite_connection(connection: Connection) -> Any | None:
    """The sqlite3 connection of ``connection``'s transaction (None on other databases)."""
    if connection.dialect.name != "sqlite":
        return None
    return connection.connection.driver_connection


def rows(session: Connection, stmt: Any, params: dict[str, Any]) -> list[Any]:
    """Rows of ``stmt`` as tuples (on SQLite the values are not converted: the
    caller converts what it needs, see ``images_repo.images_of``)."""
    raw = sqlite_connection(session)
    prepared = cached(stmt) if raw is not None else None
    if raw is None or prepared is None:
        return [tuple(row) for row in session.execute(stmt, params)]
    values = prepared.values(params)
    try:
        return list(raw.execute(prepared.sql, values).fetchall())
    except sqlite3.Error as error:
        raise sqlalchemy_error(prepared.sql, values, error) from error


def execute(session: Connection, stmt: Any, params: dict[str, Any] | list[dict[str, Any]],
             ) -> int:
    """Run the INSERT/UPDATE ``stmt`` once, or once per dict of a list (all with the
    same keys: they name the columns written); the count of rows it touched."""
    raw = sqlite_connection(session)
    if raw is not None:
        first = params[0] if isinstance(params, list) else params
        prepared = cached(stmt, tuple(first))
        if prepared is not None:
            values: Any = ([prepared.values(p) for p in params] if isinstance(params, list)
                           else prepared.values(first))
            try:
                if isinstance(params, list):
                    return int(raw.executemany(prepared.sql, values).rowcount)
                return int(raw.execute(prepared.sql, values).rowcount)
            except sqlite3.Error as error:
                raise sqlalchemy_error(prepared.sql, values, error) from error
    result = session.execute(stmt, params)
    return int(result.rowcount)
