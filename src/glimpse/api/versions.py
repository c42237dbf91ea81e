"""Version discovery and the health check, answered without authentication.

As Glance: ``GET /`` answers ``300 Multiple Choices`` and ``GET /versions``
``200 OK``, both with the same version list; links point at ``<base>/v2/``
where ``<base>`` is ``[DEFAULT] public_endpoint`` or else what the client used
to reach us (see :mod:`glimpse.api.public_url`). ``GET /v2`` and ``GET /v2/``
also return the list (200), so that clients given a versioned endpoint can
discover it. ``GET /healthcheck`` answers as Glance's healthcheck middleware
(oslo.middleware) with its ``disable_by_file`` backend: ``200`` and ``OK``, or
``503`` and ``DISABLED BY FILE`` while ``[healthcheck] disable_by_file_path``
exists (a load balancer then drains the node; the API keeps serving); ``HEAD``
answers ``204`` or ``503`` without a body.

:class:`VersionNegotiation` is Glance's version negotiation filter, run before
authentication: a path under a version the list offers (``/v2.1/images``) is
served as ``/v2/...``; a path under anything else (``/v1/images``,
``/v3``, ``/images``) answers the version list with ``300 Multiple Choices``,
whatever the method, so that a client given a wrong or old endpoint discovers
the right one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from glimpse.api.public_url import public_base_url

# Glance 33 (single store) advertises exactly these, newest first.
CURRENT = "v2.18"
SUPPORTED = ("v2.17", "v2.16", "v2.15", "v2.14", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4",
             "v2.3", "v2.2", "v2.1", "v2.0")


# First path segments served as /v2: the ids the version list offers.
_SERVED_AS_V2 = frozenset({CURRENT, *SUPPORTED})
# First path segments of the routes outside any version ("" is the root).
_UNVERSIONED = frozenset({"", "versions", "healthcheck"})


def version_list(base_url: str) -> dict[str, Any]:
    """The version document with links under ``base_url`` (no trailing slash)."""
    href = f"{base_url.rstrip('/')}/v2/"
    versions = [(CURRENT, "CURRENT"), *((v, "SUPPORTED") for v in SUPPORTED)]
    return {"versions": [{"id": vid, "status": status,
                          "links": [{"rel": "self", "href": href}]}
                         for vid, status in versions]}


def _versions_response(request: Request, status_code: int) -> Response:
    body = json.dumps(version_list(public_base_url(request))).encode("utf-8")
    return Response(body, status_code=status_code, media_type="application/json")


async def root(request: Request) -> Response:
    return _versions_response(request, 300)


async def versions(request: Request) -> Response:
    return _versions_response(request, 200)


async def healthcheck(request: Request) -> Response:
    disable_file: str | None = getattr(request.app.state, "health_disable_file", None)
    disabled = disable_file is not None and os.path.exists(disable_file)
    if request.method == "HEAD":
        return Response(status_code=503 if disabled else 204)
    if disabled:
        return PlainTextResponse("DISABLED BY FILE", status_code=503)
    return PlainTextResponse("OK")


class VersionNegotiation:
    """ASGI middleware: see the module docstring. Glance accepts exactly the
    versions it lists (``v2.0`` ... ``v2.18`` here, and ``v2``); media-type
    versioning (``Accept: application/vnd.openstack.images-v2``) is not offered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        first, slash, rest = path[1:].partition("/")
        if first in _UNVERSIONED or first == "v2":
            await self.app(scope, receive, send)
        elif first in _SERVED_AS_V2:
            scope = dict(scope, path=f"/v2{slash}{rest}")
            raw = scope.get("raw_path")
            if raw:      # still percent-encoded: only the version segment changes
                scope["raw_path"] = b"/v2" + raw[1 + len(first):]
            await self.app(scope, receive, send)
        else:
            await _versions_response(Request(scope), 300)(scope, receive, send)


routes: list[BaseRoute] = [
    Route("/", root, methods=["GET"]),
    Route("/versions", versions, methods=["GET"]),
    Route("/v2", versions, methods=["GET"]),
    Route("/v2/", versions, methods=["GET"]),
    Route("/healthcheck", healthcheck, methods=["GET", "HEAD"]),
]
