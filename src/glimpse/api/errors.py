"""The one place that maps Glimpse exceptions to HTTP status codes and bodies.

Bodies are negotiated as Glance's (webob) error pages are: an HTML page by
default -- python-glanceclient parses exactly that, and crashes on a flat JSON
body -- and, when the client's ``Accept`` prefers ``application/json`` (as
keystoneauth/openstacksdk send), Glance's JSON shape:
``{"message": "...", "code": "404 Not Found", "title": "Not Found"}``.
"""

from __future__ import annotations

import html
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from glimpse import exceptions as exc
from glimpse.api.request_id import HEADER, request_id_of

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
    (exc.InvalidImageData, 415),
    (exc.RangeNotSatisfiable, 416),
    (exc.StoragePermissionDenied, 503),
    (exc.DatabaseUnavailable, 503),
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


def wants_json(accept: str) -> bool:
    """webob's choice between its HTML and JSON error pages: JSON only when the
    client ranks application/json strictly above text/html (``*/*`` ranks both)."""
    json_q = html_q = 0.0
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
        if media in ("text/html", "text/*", "*/*"):
            html_q = max(html_q, q)
    return json_q > html_q


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   *, accept: str = "") -> Response:
    title = TITLES.get(status, "Error")
    if wants_json(accept):
        body = {"message": message, "code": f"{status} {title}", "title": title}
        return JSONResponse(body, status_code=status, headers=headers)
    page = (f"<html>\n <head>\n  <title>{status} {title}</title>\n </head>\n <body>\n"
            f"  <h1>{status} {title}</h1>\n  {html.escape(message)}<br /><br />\n\n\n\n"
            " </body>\n</html>")
    return HTMLResponse(page, status_code=status, headers=headers)


async def handle_glimpse_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, exc.GlimpseError)
    status = status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, exc.NotAuthenticated):
        headers["WWW-Authenticate"] = 'Keystone uri="", Token'
    if isinstance(error, exc.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.size}"
    if status >= 500:
        detail = error.detail if isinstance(error, exc.DatabaseUnavailable) else error.message
        LOG.error("%s %s failed: %s (%s)", request.method, request.url.path, detail,
                  request_id_of(request.scope))
        message = "The server could not complete the request (see the service log)."
        if isinstance(error, exc.StoragePermissionDenied | exc.DatabaseUnavailable):
            message = error.message
        return error_response(status, message, headers, accept=_accept(request))
    return error_response(status, error.message, headers, accept=_accept(request))


async def handle_http_error(request: Request, error: Exception) -> Response:
    """The router's own answers (no such route, method not allowed) with webob's texts,
    which Glance's clients show; any other HTTPException with its detail."""
    assert isinstance(error, HTTPException)
    detail = error.detail
    if error.status_code == 404 and detail == TITLES[404]:
        detail = "The resource could not be found."
    elif error.status_code == 405 and detail == TITLES[405]:
        detail = f"The method {request.method} is not allowed for this resource."
    return error_response(error.status_code, detail or TITLES.get(error.status_code, ""),
                          dict(error.headers or {}), accept=_accept(request))


async def handle_unexpected(request: Request, error: Exception) -> Response:
    """Starlette's last resort, answered from outside RequestIdMiddleware: the
    request id header is added here."""
    rid = request_id_of(request.scope)
    LOG.exception("Unhandled error on %s %s (%s)", request.method, request.url.path, rid)
    return error_response(500, "The server could not complete the request.",
                          {HEADER: rid}, accept=_accept(request))


def _accept(request: Request) -> str:
    return request.headers.get("accept", "")
