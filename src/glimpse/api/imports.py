"""Interoperable import over HTTP: ``GET /v2/info/import``, ``PUT /v2/images/{id}/stage``,
``POST /v2/images/{id}/import`` and ``GET /v2/images/{id}/tasks``.

As Glance: stage answers 204 and import 202, both with an empty body; staging
takes ``application/octet-stream`` only (415 otherwise) and streams the body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api.auth import context_of
from glimpse.domain.task import Task
from glimpse.exceptions import ClientDisconnected, Invalid, UnsupportedMediaType
from glimpse.runtime import Runtime
from glimpse.services import imports as import_service
from glimpse.services import tasks as task_service

OCTET_STREAM = "application/octet-stream"


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def info_import(request: Request) -> Response:
    context_of(request)
    return JSONResponse({"import-methods": {
        "description": "Import methods available.", "type": "array",
        "value": import_service.import_methods(_runtime(request))}})


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise Invalid(f"Invalid Content-Length: {value!r}") from None
    if length < 0:
        raise Invalid(f"Invalid Content-Length: {value!r}")
    return length


async def _body(request: Request) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            yield chunk
    except ClientDisconnect:
        raise ClientDisconnected(
            f"the client disconnected after sending {received} bytes") from None


async def stage(request: Request) -> Response:
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != OCTET_STREAM:
        raise UnsupportedMediaType(f"The request media type {content_type} is not supported "
                                   f"by this server. Invalid content type {content_type}")
    length = _content_length(request)
    try:
        await import_service.stage(_runtime(request), context_of(request),
                                   request.path_params["image_id"], _body(request),
                                   content_length=length)
    except ClientDisconnected:
        return Response(status_code=400)   # nobody is listening any more
    return Response(status_code=204)


async def import_image(request: Request) -> Response:
    raw = await request.body()
    if not raw.strip():
        raise Invalid("Import request requires a 'method' field.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Malformed JSON in request body.") from None
    await run_in_threadpool(import_service.request_import, _runtime(request),
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
    tasks = await run_in_threadpool(task_service.tasks_of_image, _runtime(request),
                                    context_of(request), request.path_params["image_id"])
    return JSONResponse({"tasks": [image_task_view(t) for t in tasks]})


routes: list[BaseRoute] = [
    Route("/v2/info/import", info_import, methods=["GET"]),
    Route("/v2/images/{image_id}/stage", stage, methods=["PUT"]),
    Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
    Route("/v2/images/{image_id}/tasks", image_tasks, methods=["GET"]),
]
