"""``/v2/metadefs/namespaces[/{namespace}]`` and ``/v2/metadefs/.../resource_types``:
metadata definition namespaces and resource types, as Glance answers them.

HTTP only: read and check the body (read-only attributes are 403, Glance's
JSON Schema decides the rest: 400), parse the query, call
``glimpse.services.metadefs`` in a thread pool, shape the answer as Glance's
WSME models do (attributes that are null are left out). Create answers 201,
delete 204. The routes of what a namespace holds (objects, properties, tags)
are in :mod:`glimpse.api.metadef_contents`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api import schemas
from glimpse.api.auth import context_of
from glimpse.api.images import isotime
from glimpse.api.request_io import read_json, runtime_of
from glimpse.domain.metadef import (
    VISIBILITIES,
    MetadefObject,
    Namespace,
    ResourceType,
    ResourceTypeAssociation,
)
from glimpse.exceptions import Invalid, ReservedAttribute
from glimpse.services import metadef_resource_types, metadefs
from glimpse.services.metadefs import NamespaceDetail

BASE = "/v2/metadefs/namespaces"
_READ_ONLY = {"namespace": ("self", "schema", "created_at", "updated_at"),
              "object": ("self", "schema", "created_at", "updated_at"),
              "property": ("created_at", "updated_at"),
              "resource_type": ("created_at", "updated_at"),
              "tag": ("created_at", "updated_at"),
              "tags-body": ("created_at", "updated_at")}

_LABELS = {"resource_type": "resource_type_association", "tags-body": "tags"}


async def read_body(request: Request, kind: str) -> dict[str, Any]:
    """The JSON body, checked as Glance checks a metadef ``kind`` body: an object,
    no read-only attribute (ReservedAttribute, 403), valid against the schema
    (Invalid, 400)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise Invalid(f"Provided object does not match schema '{_LABELS.get(kind, kind)}': "
                      f"{body!r} is not of type 'object'")
    for key in _READ_ONLY[kind]:
        if key in body:
            raise ReservedAttribute(f"Attribute '{key}' is read-only.")
    # in a thread: a body of thousands of tags takes a second to validate, which
    # on the event loop would hold every other request of this worker
    await run_in_threadpool(schemas.validate_metadef, kind, body)
    return body


def _present(out: dict[str, Any], **values: Any) -> dict[str, Any]:
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def _times(out: dict[str, Any], entity: Any) -> dict[str, Any]:
    return _present(out, created_at=isotime(entity.created_at),
                    updated_at=isotime(entity.updated_at))


def association_view(association: ResourceTypeAssociation, *,
                     timestamps: bool = True) -> dict[str, Any]:
    out = _present({"name": association.name}, prefix=association.prefix,
                   properties_target=association.properties_target)
    return _times(out, association) if timestamps else out


def object_view(namespace: str, obj: MetadefObject, *, full: bool = True) -> dict[str, Any]:
    """An object as Glance shows it; ``full=False``: as a namespace create echoes it."""
    out = _present({"name": obj.name}, required=obj.required, description=obj.description,
                   properties=obj.properties)
    if full:
        _times(out, obj)
        out["self"] = f"{BASE}/{namespace}/objects/{obj.name}"
        out["schema"] = "/v2/schemas/metadefs/object"
    return out


def namespace_view(ns: Namespace, detail: NamespaceDetail | None = None, *,
                   echo: bool = False) -> dict[str, Any]:
    """A namespace (and what ``detail`` holds, the non-empty parts). ``echo``:
    the nested parts as a create echoes them (without their timestamps)."""
    out = _present({"namespace": ns.namespace}, display_name=ns.display_name,
                   description=ns.description)
    _times(_present(out, visibility=ns.visibility, protected=ns.protected, owner=ns.owner), ns)
    if detail is not None:
        if detail.associations:
            out["resource_type_associations"] = [
                association_view(a, timestamps=not echo) for a in detail.associations]
        if detail.properties:
            out["properties"] = detail.properties
        if detail.objects:
            out["objects"] = [object_view(ns.namespace, o, full=not echo)
                              for o in detail.objects]
        if detail.tags:
            out["tags"] = [{"name": t.name} for t in detail.tags]
    out["self"] = f"{BASE}/{ns.namespace}"
    out["schema"] = "/v2/schemas/metadefs/namespace"
    return out


def resource_type_view(rt: ResourceType) -> dict[str, Any]:
    return _times({"name": rt.name}, rt)


# --- query parsing ------------------------------------------------------------------------

def parse_limit(value: str | None, default: int | None, maximum: int) -> int | None:
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError:
        raise Invalid("limit param must be an integer") from None
    if limit < 0:
        raise Invalid("limit param must be positive")
    return min(limit, maximum)


def parse_sort_dir(value: str) -> str:
    if value not in ("asc", "desc"):
        raise Invalid(f"Invalid sort direction: {value}")
    return value


# --- namespaces ---------------------------------------------------------------------------

async def index(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    params = dict(request.query_params)
    limit = parse_limit(params.get("limit"), rt.conf.limit_param_default,
                        rt.conf.api_limit_max)
    sort_dir = parse_sort_dir(params.get("sort_dir", "desc"))
    visibility = params.get("visibility") or None
    if visibility is not None and visibility not in VISIBILITIES:
        raise Invalid(f"Invalid visibility value: {visibility}")
    # as Glance: a ``resource_types`` parameter, even empty, filters the list
    types = params["resource_types"].split(",") if "resource_types" in params else None
    page = await run_in_threadpool(
        metadefs.list_namespaces, rt, ctx, limit=limit or 0, marker=params.get("marker"),
        sort_key=params.get("sort_key", "created_at"), sort_dir=sort_dir,
        visibility=visibility, resource_types=types)
    params.pop("marker", None)
    body: dict[str, Any] = {"namespaces": [namespace_view(d.namespace, d)
                                           for d in page.namespaces]}
    if page.next_marker is not None:
        body["next"] = f"{BASE}?{urlencode({**params, 'marker': page.next_marker})}"
    body["schema"] = "/v2/schemas/metadefs/namespaces"
    body["first"] = f"{BASE}?{urlencode(params)}" if params else BASE
    return JSONResponse(body)


async def create(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_body(request, "namespace")
    detail = await run_in_threadpool(metadefs.create_namespace, rt, ctx, body)
    view = namespace_view(detail.namespace, detail, echo=True)
    # percent-encoded: any name makes a valid header (it is sent after the commit)
    location = f"{BASE}/{quote(detail.namespace.namespace, safe='')}"
    return JSONResponse(view, status_code=201, headers={"Location": location})


async def show(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    detail = await run_in_threadpool(metadefs.get_namespace, rt, ctx,
                                     request.path_params["namespace"],
                                     request.query_params.get("resource_type"))
    return JSONResponse(namespace_view(detail.namespace, detail))


async def update(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_body(request, "namespace")
    ns = await run_in_threadpool(metadefs.update_namespace, rt, ctx,
                                 request.path_params["namespace"], body)
    return JSONResponse(namespace_view(ns))


async def delete(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(metadefs.delete_namespace, rt, ctx,
                            request.path_params["namespace"])
    return Response(status_code=204)


def _delete_content(kind: str) -> Any:
    async def handler(request: Request) -> Response:
        rt, ctx = runtime_of(request), context_of(request)
        await run_in_threadpool(metadefs.delete_namespace_content, rt, ctx,
                                request.path_params["namespace"], kind)
        return Response(status_code=204)
    return handler


# --- resource types -----------------------------------------------------------------------

async def resource_types(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    found = await run_in_threadpool(metadef_resource_types.list_resource_types, rt, ctx)
    return JSONResponse({"resource_types": [resource_type_view(t) for t in found]})


async def associations(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    found = await run_in_threadpool(metadef_resource_types.list_associations, rt, ctx,
                                    request.path_params["namespace"])
    return JSONResponse({"resource_type_associations": [association_view(a) for a in found]})


async def associate(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    body = await read_body(request, "resource_type")
    made = await run_in_threadpool(metadef_resource_types.create_association, rt, ctx,
                                   request.path_params["namespace"], body)
    return JSONResponse(association_view(made), status_code=201)


async def dissociate(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(metadef_resource_types.delete_association, rt, ctx,
                            request.path_params["namespace"],
                            request.path_params["resource_type"])
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/v2/metadefs/resource_types", resource_types, methods=["GET"]),
    Route(BASE, index, methods=["GET"]),
    Route(BASE, create, methods=["POST"]),
    Route(BASE + "/{namespace}", show, methods=["GET"]),
    Route(BASE + "/{namespace}", update, methods=["PUT"]),
    Route(BASE + "/{namespace}", delete, methods=["DELETE"]),
    Route(BASE + "/{namespace}/resource_types", associations, methods=["GET"]),
    Route(BASE + "/{namespace}/resource_types", associate, methods=["POST"]),
    Route(BASE + "/{namespace}/resource_types/{resource_type}", dissociate,
          methods=["DELETE"]),
    Route(BASE + "/{namespace}/objects", _delete_content("objects"), methods=["DELETE"]),
    Route(BASE + "/{namespace}/properties", _delete_content("properties"), methods=["DELETE"]),
    Route(BASE + "/{namespace}/tags", _delete_content("tags"), methods=["DELETE"]),
]
