"""ASGI middleware that establishes the caller's identity for every /v2 request.

``noauth``: identity comes from trusted headers (``X-Project-Id`` or
``X-Tenant-Id``, ``X-User-Id``, ``X-Roles``) as Glance does behind a trusted
proxy; a request without them acts as the configured default identity.
The context lands in ``scope["state"]["context"]``; handlers read it with
:func:`context_of`. Version discovery (``/``, ``/versions``) needs no identity.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from glimpse.auth.context import RequestContext
from glimpse.runtime import Runtime

OPEN_PATHS = frozenset({"/", "/versions", "/v2", "/v2/", "/healthcheck"})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def client_address(scope: Scope, headers: dict[str, str], trusted_proxies: frozenset[str]) -> str:
    """The peer address, or the first X-Forwarded-For entry when the peer is trusted."""
    peer = scope.get("client")
    address = peer[0] if peer else ""
    forwarded = headers.get("x-forwarded-for")
    if forwarded and address in trusted_proxies:
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return address


def noauth_context(headers: dict[str, str], runtime: Runtime, remote: str) -> RequestContext:
    conf = runtime.conf
    project = headers.get("x-project-id") or headers.get("x-tenant-id")
    user = headers.get("x-user-id")
    roles_header = headers.get("x-roles")
    if project is None and user is None and roles_header is None:
        return RequestContext(project_id=conf.glimpse.default_project_id,
                              user_id=conf.glimpse.default_user_id,
                              roles=frozenset(conf.glimpse.default_roles),
                              request_id=_request_id(), remote_address=remote)
    roles = frozenset(r.strip().lower() for r in (roles_header or "").split(",") if r.strip())
    return RequestContext(project_id=project, user_id=user, roles=roles,
                          request_id=_request_id(), remote_address=remote)


def _request_id() -> str:
    return f"req-{uuid.uuid4()}"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.trusted_proxies = frozenset(runtime.conf.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        remote = client_address(scope, headers, self.trusted_proxies)
        context = noauth_context(headers, self.runtime, remote)
        scope.setdefault("state", {})["context"] = context
        await self.app(scope, receive, send)


def context_of(request: Request) -> RequestContext:
    """The caller's identity (set by AuthMiddleware)."""
    context: Any = request.scope.get("state", {}).get("context")
    assert isinstance(context, RequestContext)
    return context
