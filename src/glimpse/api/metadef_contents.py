"""``/v2/metadefs/namespaces/{namespace}/{objects,properties,tags}[/{name}]``, as
Glance answers them.

HTTP only, like :mod:`glimpse.api.metadefs` (whose body checks and views it
uses). Create answers 201, update 200, delete 204. ``POST .../tags`` creates
several tags: they replace the namespace's tags unless the request says
``X-Openstack-Append: true``. Deleting all objects/properties/tags of a
namespace is routed in :mod:`glimpse.api.metadefs`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api import schemas
from glimpse.api.auth import context_of
from glimpse.api.images import isotime
from glimpse.api.metadefs import BASE, object_view, parse_limit, parse_sort_dir, read_body
from glimpse.api.request_io import runtime_of
from glimpse.domain.metadef import MetadefProperty, MetadefTag
from glimpse.exceptions import Invalid
from glimpse.services import metadef_contents as contents

_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})


def _names(request: Request) -> tuple[str, str]:
    return request.path_params["namespace"], request.path_params["name"]


# --- objects ------------------------------------------------------------------------------

async def list_objects(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace = request.path_params["namespace"]
    found = await run_in_threadpool(contents.list_objects, rt, ctx, namespace)
    # Glance's link has no leading slash here
    return JSONResponse({"objects": [object_view(namespace, o) for o in found],
                         "schema": "v2/schemas/metadefs/objects"})


async def create_object(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace = request.path_params["namespace"]
    body = await read_body(request, "object")
    obj = await run_in_threadpool(contents.create_object, rt, ctx, namespace, body)
    return JSONResponse(object_view(namespace, obj), status_code=201)


async def show_object(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    obj = await run_in_threadpool(contents.get_object, rt, ctx, namespace, name)
    return JSONResponse(object_view(namespace, obj))


async def update_object(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    body = await read_body(request, "object")
    obj = await run_in_threadpool(contents.update_object, rt, ctx, namespace, name, body)
    return JSONResponse(object_view(namespace, obj))


async def delete_object(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(contents.delete_object, rt, ctx, *_names(request))
    return Response(status_code=204)


# --- properties ---------------------------------------------------------------------------

def property_view(prop: MetadefProperty) -> dict[str, Any]:
    """One property: its definition, named (``name`` first, as Glance)."""
    return {"name": prop.name, **{k: v for k, v in prop.schema.items() if k != "name"}}


async def list_properties(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    found = await run_in_threadpool(contents.list_properties, rt, ctx,
                                    request.path_params["namespace"])
    return JSONResponse({"properties": found})


async def create_property(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_body(request, "property")
    prop = await run_in_threadpool(contents.create_property, rt, ctx,
                                   request.path_params["namespace"], body)
    return JSONResponse(property_view(prop), status_code=201)


async def show_property(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    prop = await run_in_threadpool(contents.get_property, rt, ctx, namespace, name,
                                   request.query_params.get("resource_type"))
    return JSONResponse(property_view(prop))


async def update_property(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    body = await read_body(request, "property")
    prop = await run_in_threadpool(contents.update_property, rt, ctx, namespace, name, body)
    return JSONResponse(property_view(prop))


async def delete_property(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(contents.delete_property, rt, ctx, *_names(request))
    return Response(status_code=204)


# --- tags ---------------------------------------------------------------------------------

def tag_view(tag: MetadefTag) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tag.name}
    for key in ("created_at", "updated_at"):
        value = isotime(getattr(tag, key))
        if value is not None:
            out[key] = value
    return out


async def list_tags(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    params = request.query_params
    visibility = params.get("visibility")
    if visibility and visibility not in ("public", "private", "shared"):
        raise Invalid(f"Invalid visibility value: {visibility}")
    limit = parse_limit(params.get("limit") or None, None, rt.conf.api_limit_max)
    found = await run_in_threadpool(
        contents.list_tags, rt, ctx, request.path_params["namespace"],
        sort_key=params.get("sort_key", "created_at"),
        sort_dir=parse_sort_dir(params.get("sort_dir", "desc")), limit=limit,
        marker=params.get("marker") or None)
    return JSONResponse({"tags": [{"name": t.name} for t in found]})


async def create_tags(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_body(request, "tags-body")
    append = request.headers.get("x-openstack-append", "").strip().lower() in _TRUE
    names = [t["name"] for t in body.get("tags") or []]
    made = await run_in_threadpool(contents.create_tags, rt, ctx,
                                   request.path_params["namespace"], names, append=append)
    return JSONResponse({"tags": [{"name": t.name} for t in made]}, status_code=201)


async def create_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    schemas.validate_metadef("tag", {"name": name})
    tag = await run_in_threadpool(contents.create_tag, rt, ctx, namespace, name)
    return JSONResponse(tag_view(tag), status_code=201)


async def show_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    tag = await run_in_threadpool(contents.get_tag, rt, ctx, *_names(request))
    return JSONResponse(tag_view(tag))


async def update_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    namespace, name = _names(request)
    body = await read_body(request, "tag")
    tag = await run_in_threadpool(contents.update_tag, rt, ctx, namespace, name, body["name"])
    return JSONResponse(tag_view(tag))


async def delete_tag(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(contents.delete_tag, rt, ctx, *_names(request))
    return Response(status_code=204)


_NS = BASE + "/{namespace}"
routes: list[BaseRoute] = [
    Route(_NS + "/objects", list_objects, methods=["GET"]),
    Route(_NS + "/objects", create_object, methods=["POST"]),
    Route(_NS + "/objects/{name}", show_object, methods=["GET"]),
    Route(_NS + "/objects/{name}", update_object, methods=["PUT"]),
    Route(_NS + "/objects/{name}", delete_object, methods=["DELETE"]),
    Route(_NS + "/properties", list_properties, methods=["GET"]),
    Route(_NS + "/properties", create_property, methods=["POST"]),
    Route(_NS + "/properties/{name}", show_property, methods=["GET"]),
    Route(_NS + "/properties/{name}", update_property, methods=["PUT"]),
    Route(_NS + "/properties/{name}", delete_property, methods=["DELETE"]),
    Route(_NS + "/tags", list_tags, methods=["GET"]),
    Route(_NS + "/tags", create_tags, methods=["POST"]),
    Route(_NS + "/tags/{name}", show_tag, methods=["GET"]),
    Route(_NS + "/tags/{name}", create_tag, methods=["POST"]),
    Route(_NS + "/tags/{name}", update_tag, methods=["PUT"]),
    Route(_NS + "/tags/{name}", delete_tag, methods=["DELETE"]),
]
