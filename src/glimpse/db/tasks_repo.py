"""Task repository: the only module that reads and writes task rows.

Every function takes the caller's ``Connection`` in a transaction and never
commits. Tasks are returned as :class:`glimpse.domain.task.Task`. Expired tasks
(``expires_at`` in the past) are invisible to :func:`get` and :func:`list_tasks`
and removed by :func:`purge_expired`.

Claims (the executor's "exactly once" across processes): :func:`claim` is a
single conditional ``UPDATE ... WHERE status='pending' AND claimed_by IS NULL``;
the database lets exactly one of several concurrent claimers change the row
(its rowcount is 1 for the winner, 0 for the others), on SQLite and PostgreSQL.
A claim lasts until ``claimed_until``; the holder renews it while it works.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, delete, desc, false, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from glimpse.db.keyset import rows_after
from glimpse.db.models import tasks as _tasks
from glimpse.domain.task import PENDING, PROCESSING, Task
from glimpse.exceptions import Invalid

SORT_KEYS: Final = frozenset({"id", "type", "status", "owner", "expires_at", "created_at",
                              "updated_at"})


def _to_task(row: Any) -> Task:
    return Task(id=row.id, type=row.type, owner=row.owner, status=row.status,
                input=json.loads(row.input) if row.input else {},
                result=json.loads(row.result) if row.result else None,
                message=row.message or "", expires_at=row.expires_at,
                created_at=row.created_at, updated_at=row.updated_at,
                deleted_at=row.deleted_at, image_id=row.image_id,
                request_id=row.request_id, user_id=row.user_id)


def _values(task: Task) -> dict[str, Any]:
    return {"type": task.type, "status": task.status, "owner": task.owner,
            "input": json.dumps(task.input),
            "result": None if task.result is None else json.dumps(task.result),
            "message": task.message or "", "image_id": task.image_id,
            "expires_at": task.expires_at, "created_at": task.created_at,
            "updated_at": task.updated_at, "deleted_at": task.deleted_at,
            "request_id": task.request_id, "user_id": task.user_id}


def _alive(now: datetime) -> ColumnElement[bool]:
    return or_(_tasks.c.expires_at.is_(None), _tasks.c.expires_at > now)


def insert_task(session: Connection, task: Task) -> None:
    session.execute(insert(_tasks).values(id=task.id, **_values(task)))


def update_task(session: Connection, task: Task) -> None:
    """Write every column of ``task`` but the claim."""
    values = _values(task)
    del values["created_at"]
    session.execute(update(_tasks).where(_tasks.c.id == task.id).values(**values))


def get(session: Connection, task_id: str, *, now: datetime, for_update: bool = False,
        include_expired: bool = False) -> Task | None:
    stmt = select(_tasks).where(_tasks.c.id == task_id, _tasks.c.deleted_at.is_(None))
    if not include_expired:
        stmt = stmt.where(_alive(now))
    if for_update and session.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.execute(stmt).first()
    return None if row is None else _to_task(row)


def list_tasks(session: Connection, *, now: datetime, owner: str | None, all_owners: bool,
               type_: str | None = None, status: str | None = None,
               owner_filter: str | None = None,
               sort_key: str = "created_at", sort_dir: str = "desc",
               limit: int | None = None, marker: str | None = None) -> list[Task]:
    """One page of live tasks. ``all_owners`` (admins) lists every project's;
    ``owner_filter`` keeps one project's.

    Order is total, as Glance's: ``sort_key``, then ``created_at``, then ``id``, all
    in ``sort_dir`` (so tasks that share a status or type come newest first by
    default). ``marker`` is the id of the last task of the previous page; an
    unknown (or invisible) marker raises Invalid as Glance does (400).
    """
    if sort_key not in SORT_KEYS:
        raise Invalid("Sort key supplied was not valid.")
    scope: list[ColumnElement[bool]] = [_tasks.c.deleted_at.is_(None), _alive(now)]
    if not all_owners:
        scope.append(_tasks.c.owner == owner)
    stmt = select(_tasks).where(*scope)
    if type_ is not None:
        stmt = stmt.where(_tasks.c.type == type_)
    if status is not None:
        stmt = stmt.where(_tasks.c.status == status)
    if owner_filter is not None:
        stmt = stmt.where(_tasks.c.owner == owner_filter)
    keys = [_tasks.c[name] for name in dict.fromkeys((sort_key, "created_at", "id"))]
    if marker is not None:
        mark = session.execute(select(_tasks).where(_tasks.c.id == marker, *scope)).first()
        if mark is None:
            raise Invalid(f"Task with the given id {marker} was not found")
        stmt = stmt.where(_after(keys, [getattr(mark, key.name) for key in keys], sort_dir))
    stmt = stmt.order_by(_ordered(keys[0], sort_dir),
                         *(key.desc() if sort_dir == "desc" else key.asc() for key in keys[1:]))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_to_task(row) for row in session.execute(stmt)]


def _after(keys: list[Any], values: list[Any], sort_dir: str) -> ColumnElement[bool]:
    """Rows after ``values`` in the order of ``keys`` (:mod:`glimpse.db.keyset`). Only
    the first key may be NULL (``expires_at``): NULLs come first ascending, last
    descending, so it is compared here and the rest by ``rows_after``."""
    first, first_value = keys[0], values[0]
    descending = sort_dir == "desc"
    if first_value is None:
        beyond_first: ColumnElement[bool] = false() if descending else first.is_not(None)
        same_first: ColumnElement[bool] = first.is_(None)
    else:
        beyond_first = (or_(first < first_value, first.is_(None)) if descending
                        else first > first_value)
        same_first = first == first_value
    return or_(beyond_first,
               and_(same_first, rows_after(keys[1:], values[1:], descending=descending)))


def _ordered(key: Any, sort_dir: str) -> Any:
    """``key`` in ``sort_dir`` with NULLs first ascending and last descending (both DBs)."""
    return key.desc().nulls_last() if sort_dir == "desc" else key.asc().nulls_first()


# -- executor claims ---------------------------------------------------------------------

def claimable(session: Connection, *, limit: int) -> list[str]:
    """Ids of pending, unclaimed tasks, oldest first."""
    stmt = (select(_tasks.c.id)
            .where(_tasks.c.status == PENDING, _tasks.c.claimed_by.is_(None),
                   _tasks.c.deleted_at.is_(None))
            .order_by(_tasks.c.created_at, _tasks.c.id).limit(limit))
    return [row[0] for row in session.execute(stmt)]


def claim(session: Connection, task_id: str, *, node: str, until: datetime) -> bool:
    """Claim a pending, unclaimed task for ``node``; True when this call won it."""
    result = session.execute(
        update(_tasks)
        .where(_tasks.c.id == task_id, _tasks.c.status == PENDING,
               _tasks.c.claimed_by.is_(None))
        .values(claimed_by=node, claimed_until=until))
    return bool(getattr(result, "rowcount", 0) == 1)


def renew(session: Connection, task_ids: Sequence[str], *, node: str, until: datetime) -> None:
    """Extend ``node``'s claims on ``task_ids``."""
    if task_ids:
        session.execute(update(_tasks)
                        .where(_tasks.c.id.in_(list(task_ids)), _tasks.c.claimed_by == node)
                        .values(claimed_until=until))


def release(session: Connection, task_id: str) -> None:
    """Drop the claim (the task ended, or may be picked up again)."""
    session.execute(update(_tasks).where(_tasks.c.id == task_id)
                    .values(claimed_by=None, claimed_until=None))


def claims(session: Connection) -> list[tuple[str, str, str, datetime | None]]:
    """``(id, status, claimed_by, claimed_until)`` of the pending/processing tasks
    that a process claimed."""
    stmt = select(_tasks.c.id, _tasks.c.status, _tasks.c.claimed_by,
                  _tasks.c.claimed_until).where(
        _tasks.c.claimed_by.is_not(None), _tasks.c.status.in_([PENDING, PROCESSING]))
    return [(row[0], row[1], row[2], row[3]) for row in session.execute(stmt)]


def still_claimed_by(session: Connection, task_id: str, node: str) -> bool:
    row = session.execute(select(_tasks.c.claimed_by).where(_tasks.c.id == task_id)).first()
    return row is not None and row[0] == node


def purge_expired(session: Connection, *, now: datetime) -> int:
    """Delete tasks whose ``expires_at`` passed; returns how many."""
    result = session.execute(delete(_tasks).where(_tasks.c.expires_at.is_not(None),
                                                  _tasks.c.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


def of_image(session: Connection, image_id: str, *, now: datetime) -> list[Task]:
    """Live tasks that worked on ``image_id``, newest first."""
    stmt = (select(_tasks)
            .where(_tasks.c.image_id == image_id, _tasks.c.deleted_at.is_(None), _alive(now))
            .order_by(desc(_tasks.c.created_at), desc(_tasks.c.id)))
    return [_to_task(row) for row in session.execute(stmt)]
