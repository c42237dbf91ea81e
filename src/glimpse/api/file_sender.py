"""The ``glimpse.sendfile`` ASGI extension that :class:`~glimpse.api.http_protocol.BodyIntoProtocol`
offers on GET requests: an async ``sendfile(fd, offset, count) -> int`` that sends a
range of an open file as response body bytes with ``os.sendfile`` (the kernel
copies from the page cache to the socket). A download through Python copies
every byte out of the page cache and into the socket (~0.55-0.65 CPU s per GiB
here). See :meth:`FileSender.sendfile` for its contract.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

LOG = logging.getLogger(__name__)

SENDFILE = "glimpse.sendfile"
# Bytes one sendfile call may send; the socket's send buffer usually takes less.
_SENDFILE_CALL = 8 << 20
# sendfile errors that mean the client is gone (any other comes from the file).
_CLIENT_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN,
                          errno.ECONNABORTED, errno.ETIMEDOUT})


def closing(cycle: RequestResponseCycle) -> bool:
    """The client went away, or the connection is being closed."""
    return cycle.disconnected or cycle.transport.is_closing()


class FileSendError(Exception):
    """The file could not be read (or ended early) after ``sent`` bytes of it went out."""

    def __init__(self, sent: int, cause: BaseException | str) -> None:
        super().__init__(f"sendfile failed after {sent} bytes: {cause}")
        self.sent = sent


class FileSender:
    """The ``sendfile`` of one GET request (one :class:`RequestResponseCycle`)."""

    def __init__(self, cycle: RequestResponseCycle, idle_timeout: float | None = None) -> None:
        self.cycle = cycle
        self.idle_timeout = idle_timeout

    async def _writable(self, loop: asyncio.AbstractEventLoop, fd: int) -> bool:
        """Wait until ``fd`` takes more; False (the connection closed) when the client
        took nothing for ``idle_timeout`` seconds."""
        try:
            await asyncio.wait_for(_writable(loop, fd), self.idle_timeout)
            return True
        except TimeoutError:
            LOG.warning("Client took no response data for %.0f s: connection from %s closed",
                        self.idle_timeout, self.cycle.scope.get("client"))
            self.cycle.transport.close()
            return False

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of the open file ``fd`` from ``offset`` as body bytes
        of the response: the kernel copies them from the page cache to the socket
        (``os.sendfile``), no copy passes through Python.

        Call after ``http.response.start`` of a response with a Content-Length,
        then finish with an empty last ``http.response.body``. Each sendfile call
        runs in a worker thread (reading a cold file blocks that thread, never the
        event loop); waiting for the client to take more waits on the event loop.
        Returns the bytes sent: fewer than ``count`` only when the client went
        away, or took nothing for ``idle_timeout`` seconds (the connection is then
        closed). Raises :class:`FileSendError` when the file could not be read or
        ended early, RuntimeError when the response cannot take a file.
        """
        cycle = self.cycle
        if closing(cycle):
            # gone, maybe before the response could start (uvicorn then drops
            # http.response.start): a disconnect, not a misuse
            return 0
        if (not cycle.response_started or cycle.response_complete or cycle.chunked_encoding
                or count > cycle.expected_content_length):
            raise RuntimeError("sendfile needs a started response with room for its bytes")
        sent = 0
        loop = asyncio.get_running_loop()
        sock = cycle.transport.get_extra_info("socket")
        if sock is None:
            raise RuntimeError("sendfile needs a socket transport")
        # A descriptor of our own for the transport's socket: the transport closes
        # its descriptor when the connection is lost, and the number could then be
        # reused by another connection while a sendfile call is in flight. It also
        # lets this wait for writability without taking the transport's registration.
        out = os.dup(sock.fileno())
        try:
            while cycle.transport.get_write_buffer_size() and not closing(cycle):
                if not await self._writable(loop, out):   # the headers go out first
                    break
            while sent < count and not closing(cycle):
                try:
                    n = await _to_completion(os.sendfile, out, fd, offset + sent,
                                             min(count - sent, _SENDFILE_CALL))
                except BlockingIOError:
                    if not await self._writable(loop, out):
                        break
                    continue
                except OSError as exc:
                    if exc.errno in _CLIENT_GONE:
                        break
                    raise FileSendError(sent, exc) from exc
                if n == 0:
                    raise FileSendError(sent, f"the file ended {count - sent} bytes early")
                sent += n
        finally:
            os.close(out)
            cycle.expected_content_length -= sent
        return sent


async def _to_completion(func: Any, *args: Any) -> Any:
    """``func(*args)`` in a worker thread. If the caller is cancelled meanwhile the
    call still ends before the cancellation goes on: it uses descriptors that the
    caller closes next."""
    call = asyncio.get_running_loop().run_in_executor(None, func, *args)
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.wait([call])
        raise


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` is writable (or failed: the next write then says how)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
