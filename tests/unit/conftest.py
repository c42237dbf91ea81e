"""``db``: a migrated database, once on SQLite and once on PostgreSQL, for the unit
tests of database code (repositories, the outbox, quota checks); ``db_url``: the
URL of an empty one, for tests of the schema itself (the migrations)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from glimpse.db import migrate
from glimpse.db.engine import Database
from tests.conftest import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.sqlite"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session: each ``db`` starts as a copy of it."""
    path = tmp_path_factory.mktemp("template") / "migrated.sqlite"
    database = Database(f"sqlite:///{path}")
    migrate.upgrade(database.engine)
    database.dispose()             # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database migrated once per session (no connection is
    kept to it): each ``db`` is created from it as a template."""
    with fresh_pg_database(pg_url) as url:
        database = Database(url)
        migrate.upgrade(database.engine)
        database.dispose()
        yield url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of its own for one test: a copy of the session's migrated
    one (migrating each took ~0.1-0.25 s; the migrations have tests of their own)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/unit.sqlite"
            shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "unit.sqlite")
        else:
            url = stack.enter_context(fresh_pg_database(
                request.getfixturevalue("pg_url"), request.getfixturevalue("migrated_pg")))
        database = Database(url)
        stack.callback(database.dispose)
        yield database
