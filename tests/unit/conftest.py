"""``db``: a migrated database, once on SQLite and once on PostgreSQL, for the unit
tests of database code (repositories, the outbox, quota checks); ``db_url``: the
URL of an empty one, for tests of the schema itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from glimpse.db import migrate
from glimpse.db.engine import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.sqlite"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path}/unit.sqlite" if request.param == "sqlite"
           else request.getfixturevalue("pg_database"))
    database = Database(url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()
