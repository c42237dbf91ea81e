"""The one place that maps Glimpse exceptions to HTTP status codes and bodies.

Bodies look like Glance's (webob) error pages in JSON form, which glanceclient
and openstacksdk show to users:
``{"code": 404, "title": "Not Found", "message": "..."}`` is Glance's shape for
JSON requests; we send that, with ``Content-Type: application/json``.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from glimpse import exceptions as exc

LOG = logging.getLogger(__name__)

STATUS: list[tuple[type[exc.GlimpseError], int]] = [
    (exc.Invalid, 400),
    (exc.NotAuthenticated, 401),
    (exc.Forbidden, 403),
    (exc.NotFound, 404),
    (exc.MethodNotAllowed, 405),
    (exc.Conflict, 409),
    (exc.Gone, 410),
    (exc.StorageFull, 413),
    (exc.TooLarge, 413),
    (exc.UnsupportedMediaType, 415),
    (exc.RangeNotSatisfiable, 416),
    (exc.StoragePermissionDenied, 503),
    (exc.StoreError, 500),
]

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 410: "Gone",
          413: "Request Entity Too Large", 415: "Unsupported Media Type",
          416: "Requested Range Not Satisfiable", 500: "Internal Server Error",
          503: "Service Unavailable"}


def status_for(error: exc.GlimpseError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"code": status, "title": TITLES.get(status, "Error"), "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


async def handle_glimpse_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, exc.GlimpseError)
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, exc.NotAuthenticated):
        headers["WWW-Authenticate"] = 'Keystone uri="", Token'
    if isinstance(error, exc.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.size}"
    if status >= 500:
        LOG.error("%s %s failed: %s", request.method, request.url.path, error.message)
        message = "The server could not complete the request (see the service log)."
        if isinstance(error, exc.StoragePermissionDenied):
            message = error.message
        return error_response(status, message, headers)
    return error_response(status, error.message, headers)


async def handle_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, error.detail or TITLES.get(error.status_code, ""),
                          dict(error.headers or {}))


async def handle_unexpected(request: Request, error: Exception) -> Response:
    LOG.exception("Unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "The server could not complete the request.")
