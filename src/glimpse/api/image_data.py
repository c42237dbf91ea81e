"""``PUT`` / ``GET /v2/images/{image_id}/file``: image data in and out, streamed.

Upload reads the body with ``request.stream()`` (never buffered whole) and
answers 204 as Glance. Download is a custom ASGI response
(:class:`ImageDataResponse`) that counts the bytes actually handed to the
server and notices the client going away, so that the download's one
``image.send`` carries the true ``bytes_sent`` and priority.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from glimpse.api.auth import context_of
from glimpse.api.file_sender import SENDFILE, FileSendError
from glimpse.api.request_io import body_stream, content_length, require_octet_stream, runtime_of
from glimpse.auth.context import RequestContext
from glimpse.exceptions import ClientDisconnected, NotFound
from glimpse.notifications.catalogue import ERROR, INFO, WARN
from glimpse.runtime import Runtime
from glimpse.services import image_download, image_upload

LOG = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"


def _load_malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
        return libc.malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()
# Downloads shorter than this leave little free heap behind: trimming after each
# (~1 ms of CPU walking the heaps) would cost more than it returns.
TRIM_AFTER_BYTES = 16 << 20


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). A download's chunks are malloc'ed bytes; once glibc has seen one
    freed it serves the next ones from its heaps, and the ~8-12 MiB they leave
    free there after a download would otherwise stay resident in the worker.
    Blocks for about a millisecond (walks the heaps): call it in a thread."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


async def upload(request: Request) -> Response:
    require_octet_stream(request)
    length = content_length(request)
    try:
        await image_upload.upload_data(runtime_of(request), context_of(request),
                                       request.path_params["image_id"], body_stream(request),
                                       content_length=length)
    except ClientDisconnected as exc:
        LOG.info("Upload to image %s aborted: %s", request.path_params["image_id"], exc.message)
        return Response(status_code=400)  # nobody is listening any more
    return Response(status_code=204)


async def download(request: Request) -> Response:
    rt = runtime_of(request)
    ctx = context_of(request)
    prepared = await asyncio.to_thread(image_download.prepare_download, rt, ctx,
                                       request.path_params["image_id"],
                                       request.headers.get("range"),
                                       request.headers.get("content-range"))
    if prepared is None:
        return Response(status_code=204)
    return ImageDataResponse(rt, ctx, prepared)


class ImageDataResponse(Response):
    """Streams a :class:`~glimpse.services.image_download.Download` and records its image.send.

    On a server that offers ``glimpse.sendfile`` (ours, for GET) and a store
    with local files, the kernel sends the file; otherwise the data streams
    through Python in store-sized chunks.

    Bytes count as sent once handed to the server while the connection is
    still up. With uvicorn the connection state is read from the server's
    request cycle right after each ``send`` (exact); other servers fall back
    to watching ``receive()`` for ``http.disconnect``.
    """

    def __init__(self, rt: Runtime, ctx: RequestContext,
                 download: image_download.Download) -> None:
        headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(download.length)}
        if download.image.checksum:
            headers["Content-MD5"] = download.image.checksum
        if download.partial:
            end = download.start + download.length - 1
            headers["Content-Range"] = f"bytes {download.start}-{end}/{download.size}"
        super().__init__(status_code=206 if download.partial else 200, headers=headers)
        self.rt = rt
        self.ctx = ctx
        self.download = download
        self.bytes_sent = 0
        self.priority: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sendfile = scope.get("extensions", {}).get(SENDFILE) if self.download.length else None
        opened = image_download.download_file(self.rt, self.download) if sendfile else None
        if opened is None:
            await self._send_chunks(receive, send)
            return
        try:
            fd = await asyncio.to_thread(opened.__enter__)
        except NotFound:    # deleted meanwhile: nothing was sent, nothing to record
            raise
        except Exception:   # a clean error response, as when the first chunk fails
            await self._record(ERROR)
            raise
        try:
            await self._send_file(send, sendfile, fd)
        finally:
            await asyncio.to_thread(opened.__exit__, None, None, None)

    async def _send_file(self, send: Send, sendfile: Any, fd: int) -> None:
        """The bytes go from the store's file to the socket in the kernel
        (``glimpse.sendfile``, api/file_sender.py); the same events as below."""
        length = self.download.length
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            self.bytes_sent = await sendfile(fd, self.download.start, length)
            if self.bytes_sent == length:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.priority = INFO if self.bytes_sent == length else WARN
        except FileSendError as exc:
            self.bytes_sent = exc.sent
            self.priority = ERROR
            LOG.error("Reading the data of image %s failed after %d bytes: %s",
                      self.download.image.id, exc.sent, exc)
        except Exception:
            self.priority = ERROR
            LOG.exception("Sending the data of image %s failed after %d bytes",
                          self.download.image.id, self.bytes_sent)
        finally:
            await self._record(self.priority or WARN)
        # An ERROR leaves the response incomplete: the server closes the connection.

    async def _send_chunks(self, receive: Receive, send: Send) -> None:
        length = self.download.length
        chunks = image_download.read_chunks(self.rt, self.download)
        first = b""
        if length:
            # Read the first chunk before answering: a store that fails here gets a
            # clean error response (and its ERROR image.send), not a broken 200.
            try:
                first = await chunks.__anext__()
            except NotFound:    # deleted meanwhile: nothing was sent, nothing to record
                await chunks.aclose()
                raise
            except Exception:
                await chunks.aclose()
                await self._record(ERROR)
                raise
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        cycle: Any = getattr(receive, "__self__", None)
        watcher: asyncio.Task[None] | None = None
        gone = asyncio.Event()
        if not hasattr(cycle, "disconnected"):
            watcher = asyncio.create_task(self._watch(receive, gone))

        def disconnected() -> bool:
            if watcher is None:
                return bool(cycle.disconnected)
            return gone.is_set()

        try:
            if length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                body = _prepend(first, chunks)
                first = b""
                async for data in body:
                    if disconnected():
                        break
                    after = self.bytes_sent + len(data)
                    await send({"type": "http.response.body", "body": data,
                                "more_body": True})
                    if disconnected():
                        break
                    self.bytes_sent = after
                    # Hold no chunk while the server's send buffer drains (a send
                    # waits for that before writing): the chunk in the buffer and
                    # the one read ahead are all that is resident, not three; and
                    # the last one is (nearly) written out before the heap is trimmed.
                    data = b""
                    await send({"type": "http.response.body", "body": b"",
                                "more_body": True})
                if self.bytes_sent == length and not disconnected():
                    await send({"type": "http.response.body", "body": b"",
                                "more_body": False})
            self.priority = INFO if self.bytes_sent == length else WARN
        except Exception:
            self.priority = ERROR
            LOG.exception("Reading the data of image %s failed after %d bytes",
                          self.download.image.id, self.bytes_sent)
        finally:
            await chunks.aclose()
            if watcher is not None:
                watcher.cancel()
            await self._record(self.priority or WARN)
            if self.bytes_sent >= TRIM_AFTER_BYTES:
                await asyncio.to_thread(release_free_heap)
        # An ERROR leaves the response incomplete: the server closes the connection.

    async def _record(self, priority: str) -> None:
        await asyncio.shield(image_download.record_send(
            self.rt, self.ctx, self.download, self.bytes_sent, priority))

    @staticmethod
    async def _watch(receive: Receive, gone: asyncio.Event) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
        first = b""   # not kept for the whole download
    async for chunk in rest:
        yield chunk


def _file_route() -> Route:
    async def endpoint(request: Request) -> Response:
        return await (upload(request) if request.method == "PUT" else download(request))

    route = Route("/v2/images/{image_id}/file", endpoint, methods=["GET", "PUT"])
    route.methods = {"GET", "PUT"}   # as Glance: HEAD (and the rest) -> 405, Allow: GET, PUT
    return route


routes: list[BaseRoute] = [_file_route()]
