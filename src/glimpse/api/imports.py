"""Interoperable import over HTTP: ``GET /v2/info/import``, ``PUT /v2/images/{id}/stage``,
``POST /v2/images/{id}/import`` and ``GET /v2/images/{id}/tasks``.

As Glance: stage answers 204 and import 202, both with an empty body; staging
takes ``application/octet-stream`` only (415 otherwise) and streams the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api.auth import context_of
from glimpse.api.request_io import (
    body_stream,
    content_length,
    read_json,
    require_octet_stream,
    runtime_of,
)
from glimpse.domain.task import Task
from glimpse.exceptions import ClientDisconnected
from glimpse.services import imports as import_service
from glimpse.services import tasks as task_service

OCTET_STREAM = "application/octet-stream"


async def info_import(request: Request) -> Response:
    context_of(request)
    return JSONResponse({"import-methods": {
        "description": "Import methods available.", "type": "array",
        "value": import_service.import_methods(runtime_of(request))}})


async def stage(request: Request) -> Response:
    require_octet_stream(request)
    length = content_length(request)
    try:
        await import_service.stage(runtime_of(request), context_of(request),
                                   request.path_params["image_id"], body_stream(request),
                                   content_length=length)
    except ClientDisconnected:
        return Response(status_code=400)   # nobody is listening any more
    return Response(status_code=204)


async def import_image(request: Request) -> Response:
    body = await read_json(request, empty="Import request requires a 'method' field.")
    await run_in_threadpool(import_service.request_import, runtime_of(request),
                            context_of(request), request.path_params["image_id"], body)
    return Response(status_code=202)


def _db_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def image_task_view(task: Task) -> dict[str, Any]:
    """One entry of ``GET /v2/images/{id}/tasks`` (Glance shows database-style fields)."""
    return {"id": task.id, "type": task.type, "status": task.status, "owner": task.owner,
            "expires_at": _db_time(task.expires_at), "created_at": _db_time(task.created_at),
            "updated_at": _db_time(task.updated_at), "deleted_at": _db_time(task.deleted_at),
            "deleted": task.deleted, "image_id": task.image_id,
            "request_id": task.request_id, "user_id": task.user_id, "input": task.input,
            "result": task.result, "message": task.message or ""}


async def image_tasks(request: Request) -> Response:
    tasks = await run_in_threadpool(task_service.tasks_of_image, runtime_of(request),
                                    context_of(request), request.path_params["image_id"])
    return JSONResponse({"tasks": [image_task_view(t) for t in tasks]})


routes: list[BaseRoute] = [
    Route("/v2/info/import", info_import, methods=["GET"]),
    Route("/v2/images/{image_id}/stage", stage, methods=["PUT"]),
    Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
    Route("/v2/images/{image_id}/tasks", image_tasks, methods=["GET"]),
]
