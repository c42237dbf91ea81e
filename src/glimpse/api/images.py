"""``/v2/images``: create, list, show, PATCH, delete, tags, deactivate/reactivate.

HTTP only: parse and validate the request (JSON, media type, the image JSON
Schema), call the service in a thread pool (the services block on the
database), and shape the response exactly as Glance's (key order, ``self``,
``file``, ``schema``, times as ``YYYY-MM-DDTHH:MM:SSZ``, extra properties at
top level, no ``locations``/``direct_url``). Errors are raised as
``glimpse.exceptions`` and mapped by ``glimpse.api.errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api import errors
from glimpse.api.auth import context_of
from glimpse.api.public_url import public_base_url
from glimpse.api.request_io import read_json, runtime_of
from glimpse.domain.image import Image
from glimpse.runtime import Runtime
from glimpse.services import image_patch, image_query, images
from glimpse.services.imports import import_methods

_T = TypeVar("_T")

# Properties Glance never shows (internal bookkeeping of imports).
HIDDEN_PROPERTIES: Final = frozenset({"os_glance_stage_host", "os_glance_hash_op_host"})
_ATTRIBUTES: Final = ("name", "disk_format", "container_format", "visibility", "size",
                      "virtual_size", "status", "checksum", "protected", "min_ram",
                      "min_disk", "owner", "os_hidden", "os_hash_algo", "os_hash_value")


def isotime(moment: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (Glance's format) of a naive UTC time."""
    if moment is None:
        return None
    if moment.tzinfo is None and moment.year >= 1000:
        return moment.isoformat(timespec="seconds") + "Z"   # same text, 5x cheaper
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_view(image: Image) -> dict[str, Any]:
    """The image as Glance shows it: extra properties first, then the core keys
    (in ``_ATTRIBUTES`` order, then id, times, tags and links)."""
    view: dict[str, Any] = {k: v for k, v in image.properties.items()
                            if k not in HIDDEN_PROPERTIES}
    image_id = image.id
    view.update((  # one literal instead of a getattr loop: 3x cheaper, same keys in order
        ("name", image.name), ("disk_format", image.disk_format),
        ("container_format", image.container_format), ("visibility", image.visibility),
        ("size", image.size), ("virtual_size", image.virtual_size),
        ("status", image.status), ("checksum", image.checksum),
        ("protected", image.protected), ("min_ram", image.min_ram),
        ("min_disk", image.min_disk), ("owner", image.owner),
        ("os_hidden", image.os_hidden), ("os_hash_algo", image.os_hash_algo),
        ("os_hash_value", image.os_hash_value), ("id", image_id),
        ("created_at", isotime(image.created_at)), ("updated_at", isotime(image.updated_at)),
        ("tags", sorted(image.tags)), ("self", f"/v2/images/{image_id}"),
        ("file", f"/v2/images/{image_id}/file"), ("schema", "/v2/schemas/image"),
    ))
    return view


def validate_image(body: dict[str, Any], *, partial: bool = False) -> None:
    """Validate against the image JSON Schema served at /v2/schemas/image."""
    from glimpse.api import schemas

    schemas.validate_image(body, partial=partial)


class FastJSONResponse(JSONResponse):
    """Starlette's JSONResponse rendered by orjson: the same bytes (compact, UTF-8, no
    ASCII escaping) ~8x faster for a page of images; anything orjson refuses (e.g. an
    int beyond 64 bits, a non-string key) is rendered by the json module as before."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except (TypeError, orjson.JSONEncodeError):
            return super().render(content)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return FastJSONResponse(body, status_code=status, headers=headers)


async def create(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_json(request)
    images.check_create_allowed(body)
    validate_image(body)
    image = await run_in_threadpool(images.create_image, rt, ctx, body)
    headers = {"Location": f"{public_base_url(request)}/v2/images/{image.id}"}
    methods = import_methods(rt)
    if methods:
        headers["OpenStack-image-import-methods"] = ",".join(methods)
    return _json(image_view(image), 201, headers)


async def _read_one(rt: Runtime, fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(*args)``, a read of one image: on the event loop when the database
    answers without waiting (SQLite; a thread-pool hop costs more CPU than the
    read), else in the thread pool. Lists stay in the pool: measured, a page of
    20 run on the loop made the rows slower, not faster."""
    if rt.db.reads_without_waiting():
        return fn(*args)
    return await run_in_threadpool(fn, *args)


async def index(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    params = list(request.query_params.multi_items())
    parsed = image_query.parse_list_params(params, limit_default=rt.conf.limit_param_default,
                                           limit_max=rt.conf.api_limit_max)
    found, next_marker = await run_in_threadpool(images.list_images, rt, ctx, parsed)
    body: dict[str, Any] = {"images": [image_view(i) for i in found]}
    body.update(image_query.links(params, next_marker))
    return _json(body)


async def show(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    image = await _read_one(rt, images.get_image, rt, ctx, request.path_params["image_id"])
    return _json(image_view(image))


async def update(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    draft = image_patch.PATCH_MEDIA_TYPES.get(media_type)
    if draft is None:
        allowed = ", ".join(sorted(image_patch.PATCH_MEDIA_TYPES))
        return errors.error_response(
            415, f"Image PATCH expects Content-Type one of: {allowed}",
            headers={"Accept-Patch": allowed}, accept=request.headers.get("accept", ""))
    body = await read_json(request)
    changes = image_patch.parse_patch(body, draft,
                                      lambda partial: validate_image(partial, partial=True))
    image = await run_in_threadpool(images.update_image, rt, ctx,
                                    request.path_params["image_id"], changes)
    return _json(image_view(image))


async def delete(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(images.delete_image, rt, ctx, request.path_params["image_id"])
    return Response(status_code=204)


async def add_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    tag = request.path_params["tag"]
    validate_image({"tags": [tag]}, partial=True)
    await run_in_threadpool(images.add_tag, rt, ctx, request.path_params["image_id"], tag)
    return Response(status_code=204)


async def delete_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(images.delete_tag, rt, ctx, request.path_params["image_id"],
                            request.path_params["tag"])
    return Response(status_code=204)


async def deactivate(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(images.deactivate, rt, ctx, request.path_params["image_id"])
    return Response(status_code=204)


async def reactivate(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(images.reactivate, rt, ctx, request.path_params["image_id"])
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/v2/images", create, methods=["POST"]),
    Route("/v2/images", index, methods=["GET"]),
    Route("/v2/images/{image_id}", show, methods=["GET"]),
    Route("/v2/images/{image_id}", update, methods=["PATCH"]),
    Route("/v2/images/{image_id}", delete, methods=["DELETE"]),
    Route("/v2/images/{image_id}/tags/{tag}", add_tag, methods=["PUT"]),
    Route("/v2/images/{image_id}/tags/{tag}", delete_tag, methods=["DELETE"]),
    Route("/v2/images/{image_id}/actions/deactivate", deactivate, methods=["POST"]),
    Route("/v2/images/{image_id}/actions/reactivate", reactivate, methods=["POST"]),
]
