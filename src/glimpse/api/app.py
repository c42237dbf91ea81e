"""The ASGI application: routes from each api module, auth middleware, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from oslo_config import cfg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from glimpse.api import errors, image_data, images, imports, info, members, schemas, tasks, versions
from glimpse.api.auth import AuthMiddleware
from glimpse.exceptions import GlimpseError
from glimpse.runtime import Runtime, build


def create_app(conf: cfg.ConfigOpts, runtime: Runtime | None = None) -> Starlette:
    """Build the app. The runtime (db, store, relay, executor) starts with the app's
    lifespan and stops with it; ``runtime`` may be passed in by tests."""
    rt = runtime or build(conf)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from glimpse.worker import bound_request_threads

        bound_request_threads(conf.worker_threads)
        rt.start_background()
        try:
            yield
        finally:
            rt.stop_background()

    routes = [*versions.routes, *schemas.routes, *info.routes, *images.routes,
              *image_data.routes, *members.routes, *tasks.routes, *imports.routes]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        GlimpseError: errors.handle_glimpse_error,
        HTTPException: errors.handle_http_error,
        Exception: errors.handle_unexpected,
    })
    app.state.runtime = rt
    app.add_middleware(AuthMiddleware, runtime=rt)
    return app
