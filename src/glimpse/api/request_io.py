"""Reading requests: the runtime behind the app, JSON bodies, streamed octet bodies.

Shared by every route module so that the same input gets the same error
(Glance's texts) wherever it is sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from glimpse.exceptions import ClientDisconnected, Invalid, UnsupportedMediaType
from glimpse.runtime import Runtime

OCTET_STREAM = "application/octet-stream"


def runtime_of(request: Request) -> Runtime:
    """The process's Runtime (database, store, notifier), set by ``create_app``."""
    rt: Runtime = request.app.state.runtime
    return rt


async def read_json(request: Request) -> Any:
    """The request body as JSON; Invalid (400) when absent or malformed (Glance's texts)."""
    raw = await request.body()
    if not raw.strip():
        raise Invalid("Body expected in request.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("Malformed JSON in request body.") from None


def content_length(request: Request) -> int | None:
    """The declared body length, None when absent; Invalid when not a whole number."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise Invalid(f"Invalid Content-Length: {value!r}") from None
    if length < 0:
        raise Invalid(f"Invalid Content-Length: {value!r}")
    return length


def require_octet_stream(request: Request) -> None:
    """UnsupportedMediaType (415) unless the body is ``application/octet-stream``."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != OCTET_STREAM:
        raise UnsupportedMediaType(f"The request media type {content_type} is not supported "
                                   f"by this server. Invalid content type {content_type}")


async def body_stream(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives, never buffered whole; ClientDisconnected when the
    client goes away before the end (with how much it had sent)."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            yield chunk
    except ClientDisconnect:
        raise ClientDisconnected(
            f"the client disconnected after sending {received} bytes") from None
