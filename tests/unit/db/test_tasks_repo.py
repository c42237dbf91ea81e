"""The task repository's list against both databases: Glance's order (sort key,
then created_at, then id, all in one direction) and keyset paging through ties and
NULLs."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from glimpse.db import tasks_repo as repo
from glimpse.db.engine import Database
from glimpse.domain.task import Task

T0 = datetime(2026, 1, 1, 12, 0, 0)
NOW = T0 + timedelta(hours=1)


def seed(db: Database) -> list[Task]:
    """Nine tasks of three owners and two statuses; a third have no expiry
    (pending), created_at shared by pairs so that ids break some ties."""
    tasks = []
    for n, (owner, status) in enumerate(itertools.product(("p1", "p2", "p3"),
                                                          ("success", "pending", "failure"))):
        created = T0 + timedelta(seconds=n // 2)
        tasks.append(Task(id=f"00000000-0000-4000-8000-{(7 * n) % 9:012d}", type="import",
                          owner=owner, status=status, created_at=created, updated_at=created,
                          expires_at=None if status == "pending"
                          else NOW + timedelta(minutes=1 + n % 4)))
    with db.write() as session:
        for task in tasks:
            repo.insert_task(session, task)
    return tasks


def expected(tasks: list[Task], sort_key: str, sort_dir: str) -> list[str]:
    """The order Glance gives: ``sort_key`` (NULLs first ascending, last descending),
    then created_at, then id, all in ``sort_dir``."""
    def key(task: Task) -> tuple[Any, ...]:
        value = getattr(task, sort_key)
        return (value is not None, value or "", task.created_at, task.id)

    ordered = sorted(tasks, key=key)
    return [t.id for t in (reversed(ordered) if sort_dir == "desc" else ordered)]


def paged(db: Database, sort_key: str, sort_dir: str, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    marker = None
    while True:
        with db.read() as session:
            page = repo.list_tasks(session, now=NOW, owner=None, all_owners=True,
                                   sort_key=sort_key, sort_dir=sort_dir, limit=limit,
                                   marker=marker, **filters)
        seen += [t.id for t in page]
        if len(page) < limit:
            return seen
        marker = page[-1].id
        assert len(seen) < 20


@pytest.mark.parametrize("sort_key", sorted(repo.SORT_KEYS))
def test_every_sort_key_pages_in_glances_order(db: Database, sort_key: str) -> None:
    tasks = seed(db)
    for sort_dir, limit in itertools.product(("asc", "desc"), (1, 2, 4, 50)):
        assert paged(db, sort_key, sort_dir, limit) == expected(tasks, sort_key, sort_dir), \
            (sort_dir, limit)


def test_owner_filter_keeps_one_project(db: Database) -> None:
    tasks = seed(db)
    got = paged(db, "status", "desc", 2, owner_filter="p2")
    assert got == expected([t for t in tasks if t.owner == "p2"], "status", "desc")
