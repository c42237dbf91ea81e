"""``/v2/tasks``: create (legacy ``import``), list, show; DELETE answers 405 as Glance.

Representations are Glance's, key for key: a task shows ``id, input, type,
status, owner, message, result, created_at, updated_at, self, schema,
request_id, user_id`` and ``expires_at`` once set; list entries leave out
``input``, ``result`` and ``message``. Times are ``YYYY-MM-DDTHH:MM:SSZ``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api import errors
from glimpse.api.auth import context_of
from glimpse.api.public_url import public_base_url
from glimpse.api.request_io import read_json, runtime_of
from glimpse.domain.task import Task
from glimpse.exceptions import Invalid
from glimpse.services import tasks as task_service


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def task_view(task: Task) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": task.id, "input": task.input, "type": task.type, "status": task.status,
        "owner": task.owner, "message": task.message or "", "result": task.result,
        "created_at": _time(task.created_at), "updated_at": _time(task.updated_at),
        "self": f"/v2/tasks/{task.id}", "schema": "/v2/schemas/task",
    }
    # as Glance's _format_task: each only when it has a value
    for key, value in (("image_id", task.image_id), ("request_id", task.request_id),
                       ("user_id", task.user_id)):
        if value:
            view[key] = value
    if task.expires_at is not None:
        view["expires_at"] = _time(task.expires_at)
    return view


def task_summary(task: Task) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": task.id, "type": task.type, "status": task.status, "owner": task.owner,
        "created_at": _time(task.created_at), "updated_at": _time(task.updated_at),
        "self": f"/v2/tasks/{task.id}", "schema": "/v2/schemas/task",
    }
    if task.expires_at is not None:
        view["expires_at"] = _time(task.expires_at)
    return view


async def create(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_json(request)
    task = await run_in_threadpool(task_service.create_task, rt, ctx, body)
    location = f"{public_base_url(request)}/v2/tasks/{task.id}"
    return JSONResponse(task_view(task), status_code=201, headers={"Location": location})


def parse_query(params: list[tuple[str, str]]) -> task_service.TaskQuery:
    """Query parameters -> TaskQuery; Invalid (400) with Glance's messages."""
    values = dict(params)
    limit: int | None = None
    if "limit" in values:
        try:
            limit = int(values["limit"])
        except ValueError:
            raise Invalid("limit param must be an integer") from None
        if limit < 0:
            raise Invalid("limit param must be positive")
    return task_service.TaskQuery(
        type=values.get("type"), status=values.get("status"), owner=values.get("owner"),
        sort_key=values.get("sort_key", "created_at"),
        sort_dir=values.get("sort_dir", "desc"), limit=limit, marker=values.get("marker"))


async def index(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    task_service.check_api_access(ctx)      # as Glance: 403 before any 400 of the query
    params = list(request.query_params.multi_items())
    query = parse_query(params)
    tasks = await run_in_threadpool(task_service.list_tasks, rt, ctx, query)
    first = "/v2/tasks" + (f"?{request.url.query}" if request.url.query else "")
    body: dict[str, Any] = {"tasks": [task_summary(t) for t in tasks], "first": first,
                            "schema": "/v2/schemas/tasks"}
    page = query.limit if query.limit is not None else rt.conf.limit_param_default
    page = min(page, rt.conf.api_limit_max)
    if tasks and len(tasks) >= page:
        kept = [(k, v) for k, v in params if k != "marker"]
        body["next"] = "/v2/tasks?" + urlencode([*kept, ("marker", tasks[-1].id)])
    return JSONResponse(body)


async def show(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    task = await run_in_threadpool(task_service.get_task, rt, ctx,
                                   request.path_params["task_id"])
    return JSONResponse(task_view(task))


async def delete(request: Request) -> Response:
    context_of(request)
    return errors.error_response(
        405, "This operation is currently not permitted on Glance Tasks. They are auto "
             "deleted after reaching the time based on their expires_at property.",
        {"Allow": "GET"}, accept=request.headers.get("accept", ""))


routes: list[BaseRoute] = [
    Route("/v2/tasks", create, methods=["POST"]),
    Route("/v2/tasks", index, methods=["GET"]),
    Route("/v2/tasks/{task_id}", show, methods=["GET"]),
    Route("/v2/tasks/{task_id}", delete, methods=["DELETE"]),
]
