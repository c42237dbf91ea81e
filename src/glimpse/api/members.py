"""``/v2/images/{image_id}/members[/{member_id}]``: image sharing, as Glance answers it.

HTTP only: parse the body, call ``glimpse.services.members`` in a thread pool,
shape the member as Glance does (``member_id, image_id, status, created_at,
updated_at, schema``). Create answers 200 (not 201), delete 204, as Glance.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api.auth import context_of
from glimpse.api.images import isotime
from glimpse.api.request_io import read_json, runtime_of
from glimpse.domain.member import Member
from glimpse.services import members


def member_view(member: Member) -> dict[str, Any]:
    return {
        "member_id": member.member_id,
        "image_id": member.image_id,
        "status": member.status,
        "created_at": isotime(member.created_at),
        "updated_at": isotime(member.updated_at),
        "schema": "/v2/schemas/member",
    }


async def create(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    member_id = members.member_id_from_body(await read_json(request))
    member = await run_in_threadpool(members.create_member, rt, ctx,
                                     request.path_params["image_id"], member_id)
    return JSONResponse(member_view(member))


async def index(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    found = await run_in_threadpool(members.list_members, rt, ctx,
                                    request.path_params["image_id"])
    return JSONResponse({"members": [member_view(m) for m in found],
                         "schema": "/v2/schemas/members"})


async def show(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    member = await run_in_threadpool(members.get_member, rt, ctx,
                                     request.path_params["image_id"],
                                     request.path_params["member_id"])
    return JSONResponse(member_view(member))


async def update(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    status = members.status_from_body(await read_json(request))
    member = await run_in_threadpool(members.update_member, rt, ctx,
                                     request.path_params["image_id"],
                                     request.path_params["member_id"], status)
    return JSONResponse(member_view(member))


async def delete(request: Request) -> Response:
    rt, ctx = runtime_of(request), context_of(request)
    await run_in_threadpool(members.delete_member, rt, ctx, request.path_params["image_id"],
                            request.path_params["member_id"])
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/v2/images/{image_id}/members", create, methods=["POST"]),
    Route("/v2/images/{image_id}/members", index, methods=["GET"]),
    Route("/v2/images/{image_id}/members/{member_id}", show, methods=["GET"]),
    Route("/v2/images/{image_id}/members/{member_id}", update, methods=["PUT"]),
    Route("/v2/images/{image_id}/members/{member_id}", delete, methods=["DELETE"]),
]
