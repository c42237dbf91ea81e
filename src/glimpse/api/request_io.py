"""Reading requests: the runtime behind the app, JSON bodies, streamed octet bodies.

Shared by every route module so that the same input gets the same error
(Glance's texts) wherever it is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from glimpse.api.http_protocol import EXTENSION as READINTO_EXTENSION
from glimpse.exceptions import ClientDisconnected, Invalid, TooLarge, UnsupportedMediaType
from glimpse.runtime import Runtime

OCTET_STREAM = "application/octet-stream"


def runtime_of(request: Request) -> Runtime:
    """The process's Runtime (database, store, notifier), set by ``create_app``."""
    rt: Runtime = request.app.state.runtime
    return rt


async def read_json(request: Request, *, empty: str = "Body expected in request.") -> Any:
    """The request body as JSON; Invalid (400) with ``empty`` when there is none,
    or with Glance's text when it is malformed; TooLarge (413) as soon as it is
    known to exceed ``[DEFAULT] max_json_body_size`` (from Content-Length, or
    while reading), so that no metadata request holds more than that in memory."""
    limit = runtime_of(request).conf.max_json_body_size
    declared = content_length(request)
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise Invalid(empty)
    return parse_json(raw)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"The request body is larger than the {limit} bytes accepted "
                    "for JSON requests.")


_BOM = b"\xef\xbb\xbf"


# Deeper than any body of the API needs (a JSON patch value is ~4 levels); deeper
# bodies would only reach recursive code (validation, error texts) to overflow it.
MAX_JSON_DEPTH = 32


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, strictly: Invalid (400) unless it is well-formed UTF-8 JSON
    (a leading byte order mark is allowed) nested at most ``MAX_JSON_DEPTH`` levels.
    Strings with lone surrogates (as bytes or as ``\\ud800`` escapes) or NUL, and
    NaN/Infinity, are refused: they are not text every database and consumer can
    store, and Python's ``json`` lets them through to fail later as a 500."""
    try:
        value = orjson.loads(raw[3:] if raw.startswith(_BOM) else raw)
    except orjson.JSONDecodeError:
        raise Invalid("Malformed JSON in request body.") from None
    _check_structure(value, look_for_nul=b"\\u0000" in raw)
    return value


def _check_structure(value: Any, *, look_for_nul: bool) -> None:
    """Invalid when ``value`` nests deeper than ``MAX_JSON_DEPTH`` or (when asked)
    holds NUL in a string, keys included: NUL is text no database stores
    (PostgreSQL refuses it). Iterative, so that no depth overflows the stack."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if look_for_nul and "\x00" in item:
                raise Invalid("The request body contains a NUL character.")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise Invalid(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
        children = list(item.values()) if isinstance(item, dict) else item
        if look_for_nul and isinstance(item, dict):
            children = [*item, *children]
        pending.extend((child, depth + 1) for child in children
                       if look_for_nul or isinstance(child, dict | list))


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


class RequestBody:
    """The request body as it arrives, never buffered whole.

    Two ways to read it, not to be mixed: ``async for chunk in body`` (the
    server's pieces, as ``request.stream()``), or ``await body.readinto(buffer)``
    (fills ``buffer``; fewer bytes only at the end of the body, 0 after it).
    ``readinto`` uses the server's ``glimpse.body_readinto`` extension when it
    has one (:mod:`glimpse.api.http_protocol`: one copy per byte, one wake-up
    per buffer) and copies from ``request.stream()`` otherwise. Both raise
    ClientDisconnected when the client goes away before the end (with how much
    it had sent).
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        extensions = request.scope.get("extensions") or {}
        self._server_readinto: Callable[[Any], Awaitable[int]] | None = (
            extensions.get(READINTO_EXTENSION))
        self._chunks: AsyncIterator[bytes] | None = None
        self._pending = memoryview(b"")
        self.received = 0

    def _disconnected(self) -> ClientDisconnected:
        return ClientDisconnected(
            f"the client disconnected after sending {self.received} bytes")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._request.stream():
                self.received += len(chunk)
                yield chunk
        except ClientDisconnect:
            raise self._disconnected() from None

    async def readinto(self, buffer: Any) -> int:
        if self._server_readinto is not None:
            try:
                n = await self._server_readinto(buffer)
            except ClientDisconnect:
                raise self._disconnected() from None
            self.received += n
            return n
        return await self._readinto_from_stream(memoryview(buffer).cast("B"))

    async def _readinto_from_stream(self, target: memoryview) -> int:
        if self._chunks is None:
            self._chunks = self.__aiter__()
        filled = 0
        while filled < len(target):
            if not self._pending:
                try:
                    self._pending = memoryview(await self._chunks.__anext__())
                except StopAsyncIteration:
                    break
            n = min(len(self._pending), len(target) - filled)
            target[filled:filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled


def body_stream(request: Request) -> RequestBody:
    """The request body, streamed (see :class:`RequestBody`)."""
    return RequestBody(request)
