"""The ASGI application: routes from each api module, auth middleware, error mapping,
and the bound on the threads that run requests' blocking steps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio.to_thread
from oslo_config import cfg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from glimpse.api import (
    errors,
    image_data,
    images,
    imports,
    info,
    members,
    metadef_contents,
    metadefs,
    schemas,
    tasks,
    versions,
)
from glimpse.api.auth import AuthMiddleware
from glimpse.api.public_url import PublicUrl
from glimpse.api.request_id import RequestIdMiddleware
from glimpse.exceptions import GlimpseError
from glimpse.runtime import Runtime, build

LOG = logging.getLogger(__name__)


def create_app(conf: cfg.ConfigOpts, runtime: Runtime | None = None) -> Starlette:
    """Build the app. The runtime (db, store, relay, executor) starts with the app's
    lifespan and stops with it; ``runtime`` may be passed in by tests."""
    rt = runtime or build(conf)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bound_request_threads(conf.worker_threads)
        rt.start_background()
        try:
            yield
        finally:
            rt.stop_background()

    routes = [*versions.routes, *schemas.routes, *info.routes, *images.routes,
              *image_data.routes, *members.routes, *tasks.routes, *imports.routes,
              *metadefs.routes, *metadef_contents.routes]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        GlimpseError: errors.handle_glimpse_error,
        HTTPException: errors.handle_http_error,
        Exception: errors.handle_unexpected,
    })
    app.state.runtime = rt
    health = conf.healthcheck
    app.state.health_disable_file = (health.disable_by_file_path or None
                                     if "disable_by_file" in health.backends else None)
    for backend in set(health.backends) - {"disable_by_file"}:
        LOG.warning("[healthcheck] backends: %r is not supported; ignored", backend)
    app.state.public_url = PublicUrl(
        endpoint=conf.public_endpoint,
        parse_proxy_headers=conf.oslo_middleware.enable_proxy_headers_parsing,
        trusted_proxies=frozenset(conf.trusted_proxies))
    app.router.redirect_slashes = False       # /v2/images/ is a 404, as in Glance
    app.add_middleware(AuthMiddleware, runtime=rt)
    app.add_middleware(versions.VersionNegotiation)   # before auth, as Glance's filter
    app.add_middleware(RequestIdMiddleware)   # runs before both
    cors = conf.cors
    if cors.allowed_origin:
        # outermost, as Glance's cors filter: preflights are answered without
        # credentials, and every response (a 401 too) carries the CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=cors.allowed_origin,
                           allow_credentials=cors.allow_credentials,
                           allow_methods=cors.allow_methods, allow_headers=cors.allow_headers,
                           expose_headers=cors.expose_headers, max_age=cors.max_age)
    return app


def bound_request_threads(threads: int) -> None:
    """Run the blocking steps of requests in at most ``threads`` threads per pool
    (``[DEFAULT] worker_threads``). Call it in the serving event loop, before
    any request (the app's lifespan startup).

    A worker has two pools, each bounded here:

    * anyio's, through its default limiter (Starlette's ``run_in_threadpool``:
      the JSON API's services). It allowed 40. (Keystone token validation uses
      anyio's threads under a limiter of its own, ``[glimpse] keystone_threads``:
      see :class:`glimpse.api.auth.AuthMiddleware`.)
    * the loop's default executor (``asyncio.to_thread``/``run_in_executor(None,
      ...)``: the image-data steps, i.e. an upload's or a stage's short database
      transactions and staging-file writes, a download's sendfile calls or chunk
      reads). It allowed min(32, cpus + 4) threads.

    A request waiting for a thread waits on the event loop and holds nothing;
    both pools hand out threads in arrival order (anyio's limiter and the
    executor's queue are FIFO), so a waiting request is delayed, never starved.
    Nothing holds a thread of either pool for longer than one blocking step: a
    transaction (which may queue in the SQLite write gate), one chunk of file
    I/O. Body streaming runs on the loop, an upload's hash
    and store writes run in its own pipeline threads, and tasks (imports,
    web-download with its own event loop) run in the task executor's pool; so
    a slow client or a long import never keeps a request from a thread, and no
    thread of a pool waits for another thread of the same pool (no deadlock).

    Why it is bounded: one GIL serves all of a worker's threads, so beyond a
    few they add no throughput, but each one that ever ran keeps its stack and
    its malloc cache, and holds a pooled database connection while it works:
    with the old bounds a worker at 16 concurrent clients had 21 threads and
    ~4 MiB more resident memory than at 4. Two per pool are enough for one
    GIL: one thread runs Python while the other waits for the database or the
    disk (measured: requests/s at 4 and 16 clients the same with 2, 4 and 40,
    on SQLite and on a local PostgreSQL). Database connections in use are
    then at most ``2 * threads`` + the event loop's short reads + the
    background loops (relay, tasks).
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(threads, thread_name_prefix="glimpse-blocking"))
