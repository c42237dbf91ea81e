"""``GET /v2/info/stores``, ``/v2/info/stores/detail`` and ``/v2/info/usage``.

Shapes are Glance's (multi-store flavour of ``/v2/info/stores``, since Glimpse
always knows its stores): ``{"stores": [{"id": "file", "description": ...,
"default": "true"}]}``; the detail view (admins only, as Glance's default
policy) adds ``type``, ``properties`` and ``weight``. ``/v2/info/usage`` is
the caller's project usage, ``{"usage": {name: {"usage": n, "limit": m}}}``
(see :mod:`glimpse.services.usage`). ``/v2/info/import`` belongs to
:mod:`glimpse.api.imports`.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from glimpse.api.auth import context_of
from glimpse.api.request_io import runtime_of
from glimpse.exceptions import Forbidden
from glimpse.runtime import Runtime
from glimpse.services import usage as usage_service
from glimpse.store import datadir_of

STORE_DESCRIPTIONS = {"file": "Filesystem store"}


def _stores(runtime: Runtime) -> list[dict[str, Any]]:
    conf = runtime.conf.glance_store
    # Only stores Glimpse can keep image data in are listed (the filesystem store).
    ids = [s for s in conf.stores if s == "file"] or ["file"]
    stores: list[dict[str, Any]] = []
    for store_id in ids:
        entry: dict[str, Any] = {"id": store_id, "description": STORE_DESCRIPTIONS[store_id]}
        if store_id == conf.default_store or len(ids) == 1:
            entry["default"] = "true"
        stores.append(entry)
    return stores


async def get_stores(request: Request) -> Response:
    context_of(request)  # identity is required, as for every /v2 call
    return JSONResponse({"stores": _stores(runtime_of(request))})


async def get_stores_detail(request: Request) -> Response:
    context = context_of(request)
    if not context.is_admin:
        raise Forbidden("You are not authorized to complete stores_info_detail action.")
    runtime = runtime_of(request)
    conf = runtime.conf.glance_store
    stores = _stores(runtime)
    for entry in stores:
        entry["type"] = entry["id"]
        entry["properties"] = {
            "data_dir": os.path.abspath(datadir_of(runtime.conf)[0]),
            "chunk_size": conf.filesystem_store_chunk_size,
            "thin_provisioning": False,
        }
        entry["weight"] = 0
    return JSONResponse({"stores": stores})


async def get_usage(request: Request) -> Response:
    context = context_of(request)
    runtime = runtime_of(request)
    usage = await run_in_threadpool(usage_service.project_usage, runtime.db,
                                    context.project_id, runtime.conf.user_storage_quota)
    return JSONResponse({"usage": {name: {"usage": u.usage, "limit": u.limit}
                                   for name, u in usage.items()}})


routes: list[BaseRoute] = [
    Route("/v2/info/stores", get_stores, methods=["GET"]),
    Route("/v2/info/stores/detail", get_stores_detail, methods=["GET"]),
    Route("/v2/info/usage", get_usage, methods=["GET"]),
]
