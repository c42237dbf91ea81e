"""ASGI middleware that establishes the caller's identity for every /v2 request.

``[DEFAULT] auth_strategy`` selects how:

- ``noauth``: identity comes from trusted headers (``X-Project-Id`` or
  ``X-Tenant-Id``, ``X-User-Id``, ``X-Roles``) as Glance does behind a trusted
  proxy; a request without them acts as the configured default identity.
  Start-up refuses it on a non-loopback ``bind_host`` unless
  ``behind_trusted_proxy = true`` (see :mod:`glimpse.auth.startup`).
- ``keystone``: keystonemiddleware ``auth_token`` validates ``X-Auth-Token``
  (headers only, in a worker thread: :mod:`glimpse.api.keystone_auth`).
- ``token-file``: ``X-Auth-Token`` (or ``Authorization: Bearer``) is looked up
  by hash in ``[glimpse] token_file`` (:mod:`glimpse.auth.token_file`);
  SIGHUP forces a re-read.

Missing or invalid credentials answer 401 with ``WWW-Authenticate``. The
context lands in ``scope["state"]["context"]``; handlers read it with
:func:`context_of`. Version discovery (``/``, ``/versions``) needs no identity.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from glimpse.api.request_id import request_id_of
from glimpse.auth.context import RequestContext
from glimpse.runtime import Runtime

LOG = logging.getLogger(__name__)

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


def noauth_context(headers: dict[str, str], runtime: Runtime, remote: str,
                   request_id: str) -> RequestContext:
    conf = runtime.conf
    project = headers.get("x-project-id") or headers.get("x-tenant-id")
    user = headers.get("x-user-id")
    roles_header = headers.get("x-roles")
    if project is None and user is None and roles_header is None:
        return RequestContext(project_id=conf.glimpse.default_project_id,
                              user_id=conf.glimpse.default_user_id,
                              roles=frozenset(conf.glimpse.default_roles),
                              request_id=request_id, remote_address=remote)
    roles = frozenset(r.strip().lower() for r in (roles_header or "").split(",") if r.strip())
    return RequestContext(project_id=project, user_id=user, roles=roles,
                          request_id=request_id, remote_address=remote)


def presented_token(headers: dict[str, str]) -> str | None:
    """``X-Auth-Token``, else an ``Authorization: Bearer`` token."""
    token = headers.get("x-auth-token")
    if token:
        return token.strip()
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def _send_error(send: Send, status: int, message: str,
                      headers: list[tuple[str, str]], accept: str) -> None:
    from glimpse.api.errors import error_response

    response = error_response(status, message, dict(headers), accept=accept)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Any:  # pragma: no cover - responses never read the body
    return {"type": "http.disconnect"}


class AuthMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        conf = runtime.conf
        self.trusted_proxies = frozenset(conf.trusted_proxies)
        self.strategy = conf.auth_strategy
        self.keystone: Any = None
        self.keystone_threads: anyio.CapacityLimiter | None = None
        self.tokens: Any = None
        if self.strategy == "keystone":
            from glimpse.api.keystone_auth import KeystoneAuthenticator

            self.keystone = KeystoneAuthenticator(conf)
            # a pool of its own: validations waiting on Keystone never hold the
            # threads that run requests' database and store steps
            self.keystone_threads = anyio.CapacityLimiter(conf.glimpse.keystone_threads)
        elif self.strategy == "token-file":
            from glimpse.auth.token_file import TokenFile

            self.tokens = TokenFile(conf.glimpse.token_file)
            _reload_on_sighup(self.tokens)
        from glimpse.auth import policy, property_protection

        self.policy = policy.install(conf)
        property_protection.install(conf)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # for every route, before anything looks the values up: no database
            # stores NUL in text (PostgreSQL refuses it, which would be a 500)
            await _send_error(send, 400, "The request URL contains a NUL character.", [],
                              headers.get("accept", ""))
            return
        remote = client_address(scope, headers, self.trusted_proxies)
        rid = request_id_of(scope)
        if self.strategy == "noauth":
            context = noauth_context(headers, self.runtime, remote, rid)
        elif scope["path"] in OPEN_PATHS:
            context = RequestContext(project_id=None, user_id=None, roles=frozenset(),
                                     request_id=rid, remote_address=remote)
        elif self.strategy == "token-file":
            entry = self.tokens.lookup(presented_token(headers))
            if entry is None:
                await _send_error(send, 401, "The request you have made requires "
                                  "authentication.",
                                  [("WWW-Authenticate", 'Token realm="glimpse"')],
                                  headers.get("accept", ""))
                return
            context = RequestContext(project_id=entry.project, user_id=entry.user,
                                     roles=frozenset(entry.roles), request_id=rid,
                                     remote_address=remote)
        else:
            from glimpse.api.keystone_auth import Identity

            result = await anyio.to_thread.run_sync(
                self.keystone.authenticate, scope["method"], scope["path"],
                scope.get("query_string", b"").decode("latin-1"), headers,
                limiter=self.keystone_threads)
            if not isinstance(result, Identity):
                await _send_error(send, result.status, result.message, list(result.headers),
                                  headers.get("accept", ""))
                return
            context = RequestContext(project_id=result.project_id, user_id=result.user_id,
                                     roles=result.roles, request_id=rid,
                                     remote_address=remote)
        # admin as the policy's context_is_admin rule says (an operator may give
        # it to another role), as Glance's context does
        context = replace(context, admin=self.policy.is_admin(context))
        scope.setdefault("state", {})["context"] = context
        await self.app(scope, receive, send)


def _reload_on_sighup(tokens: Any) -> None:
    """SIGHUP makes the token file be re-read at the next request (main thread only)."""
    try:
        previous = signal.getsignal(signal.SIGHUP)

        def handler(signum: int, frame: Any) -> None:
            tokens.request_reload()
            if callable(previous) and previous not in (signal.SIG_DFL, signal.SIG_IGN):
                previous(signum, frame)

        signal.signal(signal.SIGHUP, handler)
    except ValueError:  # not the main thread: the mtime check still reloads
        LOG.debug("SIGHUP handler not installed (not in the main thread)")


def context_of(request: Request) -> RequestContext:
    """The caller's identity (set by AuthMiddleware)."""
    context: Any = request.scope.get("state", {}).get("context")
    assert isinstance(context, RequestContext)
    return context
