"""Task operations: the Tasks API (create/show/list) and the executor's status changes.

Each function that changes a task records its ``task.*`` notification in the
same transaction (contract 4.5): create -> ``task.create``; the executor's
claim -> ``task.run``; pending -> processing -> ``task.processing``; the end ->
``task.success`` / ``task.failure`` (with ``expires_at`` set to the end time
plus ``[task] task_time_to_live`` hours).

``succeed``/``fail`` take the caller's session so that an import can commit
the image's final change and the task's end together.

Visibility: a task is visible to its owner project and to admins; anyone else
gets NotFound. The ``/v2/tasks`` API itself is gated by Glance's
``tasks_api_access`` rule (admin by default, as in Glance).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.engine import Connection

from glimpse.auth.context import RequestContext
from glimpse.db import tasks_repo
from glimpse.db.engine import after_commit, utcnow
from glimpse.domain.task import FAILURE, PENDING, PROCESSING, SUCCESS, TASK_STATUSES, Task
from glimpse.exceptions import Forbidden, Invalid, NotFound
from glimpse.notifications import catalogue as ev
from glimpse.notifications import payloads
from glimpse.runtime import Runtime

LEGACY_IMPORT: Final = "import"
API_IMAGE_IMPORT: Final = "api_image_import"
TASK_TYPES: Final = ("import", "api_image_import", "location_import")
# The one ``type`` Glance's task list accepts as a filter (others: 400).
LIST_FILTER_TYPES: Final = ("import",)
EXECUTOR_KEY: Final = "task_executor"
CLAIM_SECONDS: Final = 30.0


# -- API ---------------------------------------------------------------------------------

def check_api_access(ctx: RequestContext) -> None:
    """Glance's ``tasks_api_access`` rule (admin by default), the one rule Glance
    checks for every call of the tasks API, on an empty target. Raises Forbidden."""
    from glimpse.auth import policy

    active = policy.installed()
    allowed = active.check(ctx, "tasks_api_access", {}) if active is not None else ctx.is_admin
    if not allowed:
        raise Forbidden("You are not authorized to complete tasks_api_access action.")


def wake_executor(rt: Runtime, session: Connection) -> None:
    """After commit, tell this process's executor that a task is waiting."""
    executor = rt.extras.get(EXECUTOR_KEY)
    if executor is not None:
        after_commit(session, executor.wake)


def insert_pending(rt: Runtime, session: Connection, ctx: RequestContext, task_type: str,
                   task_input: dict[str, Any], *, image_id: str | None = None) -> Task:
    """Insert a pending task owned by the caller's project; records ``task.create``."""
    now = utcnow()
    task = Task(id=str(uuid.uuid4()), type=task_type, owner=ctx.project_id, status=PENDING,
                input=task_input, created_at=now, updated_at=now, image_id=image_id,
                request_id=ctx.request_id or None, user_id=ctx.user_id)
    tasks_repo.insert_task(session, task)
    snapshot = _copy(task)
    rt.notifier.record(session, ev.TASK_CREATE, lambda: payloads.task(snapshot))
    wake_executor(rt, session)
    return task


def create_task(rt: Runtime, ctx: RequestContext, body: Any) -> Task:
    """``POST /v2/tasks``: validate and store a pending ``import`` task.

    Raises Invalid (400) for a malformed body, an unknown or unsupported type,
    missing/mistyped input keys or a refused ``import_from`` URL; Forbidden (403)
    without ``tasks_api_access`` (as in Glance, no other rule: an operator who
    opens the tasks API to a role lets it create tasks). Nothing is stored
    unless everything is valid, so no task is ever left pending for bad input.
    """
    check_api_access(ctx)
    from glimpse.tasks import import_flow

    task_type, task_input = import_flow.validate_task_body(rt, ctx, body)
    with rt.db.write() as session:
        return insert_pending(rt, session, ctx, task_type, task_input)


def _visible(ctx: RequestContext, task: Task | None) -> bool:
    return task is not None and (ctx.is_admin or ctx.owns(task.owner))


def get_task(rt: Runtime, ctx: RequestContext, task_id: str) -> Task:
    """``GET /v2/tasks/{id}``. Raises NotFound for unknown, expired or others' tasks."""
    check_api_access(ctx)
    with rt.db.read() as session:
        task = tasks_repo.get(session, task_id, now=utcnow())
    if task is None or not _visible(ctx, task):
        raise NotFound(f"Could not find task {task_id}")
    return task


@dataclass(frozen=True)
class TaskQuery:
    type: str | None = None
    status: str | None = None
    owner: str | None = None
    sort_key: str = "created_at"
    sort_dir: str = "desc"
    limit: int | None = None
    marker: str | None = None


def list_tasks(rt: Runtime, ctx: RequestContext, query: TaskQuery) -> list[Task]:
    """``GET /v2/tasks``: one page of the caller's live tasks (admins: everyone's)."""
    check_api_access(ctx)
    if query.status is not None and query.status not in TASK_STATUSES:
        raise Invalid(f"Invalid status value: {query.status}")
    if query.type is not None and query.type not in LIST_FILTER_TYPES:
        raise Invalid(f"Invalid type value: {query.type}")
    if query.sort_dir not in ("asc", "desc"):
        raise Invalid(f"Invalid sort direction: {query.sort_dir}")
    if query.limit is not None:
        query_limit = min(query.limit, rt.conf.api_limit_max)
    else:
        query_limit = rt.conf.limit_param_default
    with rt.db.read() as session:
        return tasks_repo.list_tasks(
            session, now=utcnow(), owner=ctx.project_id, all_owners=ctx.is_admin,
            type_=query.type, status=query.status, owner_filter=query.owner,
            sort_key=query.sort_key,
            sort_dir=query.sort_dir, limit=query_limit, marker=query.marker)


def tasks_of_image(rt: Runtime, ctx: RequestContext, image_id: str) -> list[Task]:
    """``GET /v2/images/{id}/tasks``: the image's import tasks, for callers who may
    see the image (NotFound otherwise)."""
    from glimpse.services import access

    with rt.db.read() as session:
        access.get_visible_image(session, ctx, image_id)
        return tasks_repo.of_image(session, image_id, now=utcnow())


# -- executor ------------------------------------------------------------------------------

def _copy(task: Task) -> Task:
    return Task(**{**task.__dict__, "input": dict(task.input),
                   "result": None if task.result is None else dict(task.result)})


def claim(rt: Runtime, task_id: str, node: str) -> Task | None:
    """Claim a pending task for ``node`` and record ``task.run``; None if another
    process (or thread) got it first. Exactly one claimer wins per task."""
    with rt.db.write() as session:
        until = utcnow() + timedelta(seconds=claim_seconds(rt))
        if not tasks_repo.claim(session, task_id, node=node, until=until):
            return None
        task = tasks_repo.get(session, task_id, now=utcnow(), include_expired=True)
        if task is None:
            return None
        snapshot = _copy(task)
        rt.notifier.record(session, ev.TASK_RUN, lambda: payloads.task(snapshot))
        return task


def claim_seconds(rt: Runtime) -> float:
    return float(getattr(rt.conf.task, "claim_timeout", CLAIM_SECONDS))


def start_processing(rt: Runtime, session: Connection, task: Task) -> None:
    """pending -> processing with ``task.processing``, in the caller's transaction."""
    task.transition(PROCESSING)
    task.updated_at = utcnow()
    tasks_repo.update_task(session, task)
    snapshot = _copy(task)
    rt.notifier.record(session, ev.TASK_PROCESSING, lambda: payloads.task(snapshot))


def _end(rt: Runtime, session: Connection, task: Task, status: str) -> None:
    now = utcnow()
    task.transition(status)
    task.updated_at = now
    task.expires_at = now + timedelta(hours=rt.conf.task.task_time_to_live)
    tasks_repo.update_task(session, task)
    tasks_repo.release(session, task.id)
    snapshot = _copy(task)
    event = ev.TASK_SUCCESS if status == SUCCESS else ev.TASK_FAILURE
    rt.notifier.record(session, event, lambda: payloads.task(snapshot))


def succeed(rt: Runtime, session: Connection, task: Task, result: dict[str, Any]) -> None:
    """processing -> success with ``result``; records ``task.success``."""
    task.result = result
    task.message = ""
    _end(rt, session, task, SUCCESS)


def fail(rt: Runtime, session: Connection, task: Task, message: str,
         result: dict[str, Any] | None = None) -> None:
    """pending/processing -> failure with ``message``; records ``task.failure``."""
    task.message = message
    task.result = result
    _end(rt, session, task, FAILURE)


def load_for_update(session: Connection, task_id: str) -> Task | None:
    return tasks_repo.get(session, task_id, now=utcnow(), for_update=True,
                          include_expired=True)
