"""uvicorn's httptools protocol with a direct path for large request bodies.

Selected in ``cli.py`` with ``uvicorn.run(..., http="glimpse.api.http_protocol:BodyIntoProtocol")``
(uvicorn's documented way to choose the HTTP protocol class; nothing of uvicorn
is patched).

Why: uvicorn hands a body to the app as ``http.request`` messages. Each piece
the parser delivers is appended to a bytearray, ``receive()`` copies it out to
a new ``bytes``, and reading pauses once 64 KiB wait: a 1 GiB upload becomes
~16 000 messages, each one a wake-up of the app's task plus Starlette's and
our own per-chunk work, on the event loop that the hash threads need the
second core around.

What it adds: an ASGI extension, ``scope["extensions"]["glimpse.body_readinto"]``,
an async ``readinto(buffer) -> int`` that fills the caller's writable buffer
and wakes the caller only when the buffer is full, the body ends or the client
goes away (one wake-up per buffer, e.g. 8 MiB). How the bytes get there:

- *direct reads* when the body has a ``Content-Length``: for the rest of the
  body the transport reads from the socket straight into the caller's buffer
  (the transport's protocol is switched to a :class:`asyncio.BufferedProtocol`
  that never asks for more than the body's remaining bytes; uvloop supports
  this, see ``transport.set_protocol``); the kernel's copy is the only one.
  At the end of the body the connection goes back to the httptools protocol
  with a fresh parser for the next request on the connection, as if the
  parser had seen the body;
- otherwise (chunked bodies) from the parser's body callbacks: the transport
  reads into one reused 1 MiB scratch buffer that the parser reads in place
  (no ``bytes`` object per read, as uvloop makes for a plain protocol), and the
  body callbacks copy into the caller's buffer: one copy besides the parser's.

And, on GET requests, ``scope["extensions"]["glimpse.sendfile"]``
(:mod:`glimpse.api.file_sender`): a range of an open file sent as response body
bytes with ``os.sendfile``.

Connections whose request line and headers have not all arrived after
``idle_timeout`` seconds are closed (:meth:`BodyIntoProtocol.connection_made`).

Everything else is uvicorn's behaviour unchanged: an app that uses
``receive()`` sees no difference, and mixing the two is safe (bytes
``receive()`` had not yet returned are the first ones ``readinto`` copies, and
the other way round). An app that answers without reading the whole body: the
rest is read and dropped, as uvicorn does.

Contract of ``readinto``: returns how many bytes it wrote; fewer than
``len(buffer)`` only when the body has ended (0 once all was read). Raises
:class:`starlette.requests.ClientDisconnect` when the client went away (or the
response was already sent) before the end of the body, as ``request.stream()``
does, and when no body byte arrived for ``BodyIntoProtocol.idle_timeout``
seconds (the connection is then closed: a stalled client no longer keeps an
upload, and its image, waiting). Sends ``100 Continue`` first when the client
asked for it, as ``receive()``. Only one ``readinto`` per request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httptools
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from glimpse.api.file_sender import SENDFILE, FileSender, closing

LOG = logging.getLogger(__name__)

EXTENSION = "glimpse.body_readinto"
_SCRATCH_SIZE = 256 << 10
_PARSE_SCRATCH_SIZE = 1 << 20


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" for name, _ in headers)


def _body_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request, or None when the body is chunked or unknown
    (httptools already rejected malformed or conflicting values)."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length


class BodyReader:
    """The ``readinto`` of one request (one :class:`RequestResponseCycle`)."""

    def __init__(self, protocol: BodyIntoProtocol, cycle: RequestResponseCycle,
                 length: int | None, chunked: bool) -> None:
        self.protocol = protocol
        self.cycle = cycle
        self.length = length
        self.chunked = chunked
        #: body bytes the parser has delivered (on_body) or direct reads stored
        self.delivered = 0
        #: the caller's buffer while ``readinto`` waits, and how much of it is filled
        self.target: memoryview | None = None
        self.filled = 0
        self.direct: _BodyReads | None = None

    async def readinto(self, buffer: Any) -> int:
        cycle = self.cycle
        if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
            cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        target = memoryview(buffer).cast("B")
        size = len(target)
        filled = 0
        while True:
            if cycle.disconnected or cycle.response_complete:
                raise ClientDisconnect()
            if cycle.body:          # what arrived while nobody was reading
                n = min(len(cycle.body), size - filled)
                with memoryview(cycle.body) as pending:
                    target[filled:filled + n] = pending[:n]
                del cycle.body[:n]
                filled += n
            if filled == size or not cycle.more_body:
                return filled
            # Wait for the rest, written straight into the buffer.
            self.target = target
            self.filled = filled
            cycle.message_event.clear()
            if self.direct is None and self._direct_possible():
                if self.length is not None:
                    self.direct = _DirectBody(self, self.length - self.delivered)
                else:
                    self.direct = _ParsedBody(self)
                cycle.transport.set_protocol(self.direct)
            self.protocol.flow.resume_reading()
            try:
                await self._wait_for_more()
            finally:
                filled = self.filled
                self.target = None

    async def _wait_for_more(self) -> None:
        """Wait for the next wake-up of the cycle; after ``idle_timeout`` seconds in
        which no body byte arrived the connection is closed (ClientDisconnect)."""
        cycle = self.cycle
        timeout = self.protocol.idle_timeout
        while True:
            seen = self.delivered
            try:
                await asyncio.wait_for(cycle.message_event.wait(), timeout)
                return
            except TimeoutError:
                if self.delivered != seen:
                    continue                  # slow, not stalled
                LOG.warning("No request body data for %.0f s: connection from %s closed",
                            timeout, cycle.scope.get("client"))
                cycle.transport.close()
                raise ClientDisconnect() from None

    def _direct_possible(self) -> bool:
        if self.protocol.cycle is not self.cycle or closing(self.cycle):
            return False
        if self.length is not None:
            return self.delivered < self.length
        return self.chunked


class _BodyReads(asyncio.BufferedProtocol):
    """The transport's protocol while a request body is read; connection events go
    to the httptools protocol."""

    def __init__(self, reader: BodyReader) -> None:
        self.reader = reader
        self.protocol = reader.protocol

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.protocol.eof_received()  # type: ignore[func-returns-value]

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


class _ParsedBody(_BodyReads):
    """For a body without a Content-Length (chunked): reads go into one reused
    scratch buffer, which the httptools parser reads in place (its body callbacks
    fill the caller's buffer); back to the httptools protocol once the message is
    complete (the parser then already handled whatever followed it)."""

    def __init__(self, reader: BodyReader) -> None:
        super().__init__(reader)
        self._scratch = memoryview(bytearray(_PARSE_SCRATCH_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        protocol = self.protocol
        protocol.data_received(self._scratch[:nbytes])
        if not self.reader.cycle.more_body or protocol.cycle is not self.reader.cycle:
            protocol.transport.set_protocol(protocol)


class _DirectBody(_BodyReads):
    """The transport's protocol for the rest of a ``Content-Length`` body: reads go
    into the waiting caller's buffer (never past the body's end); with nobody
    waiting, into a scratch buffer appended to uvicorn's body buffer (rare: the
    reader pauses reading when a caller's buffer is full)."""

    def __init__(self, reader: BodyReader, remaining: int) -> None:
        super().__init__(reader)
        self.remaining = remaining
        self._scratch: bytearray | None = None
        self._into_target = False

    def get_buffer(self, sizehint: int) -> memoryview:
        reader = self.reader
        target = reader.target
        if target is not None and not reader.cycle.response_complete:
            self._into_target = True
            start = reader.filled
            return target[start:start + min(len(target) - start, self.remaining)]
        self._into_target = False
        if self._scratch is None:
            self._scratch = bytearray(_SCRATCH_SIZE)
        return memoryview(self._scratch)[:min(_SCRATCH_SIZE, self.remaining)]

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        cycle = reader.cycle
        self.remaining -= nbytes
        reader.delivered += nbytes
        if self._into_target:
            reader.filled += nbytes
            if reader.target is not None and reader.filled == len(reader.target):
                reader.target = None
                if self.remaining:
                    self.protocol.flow.pause_reading()   # until the next readinto
                cycle.message_event.set()
        elif not cycle.response_complete:     # else: nobody reads any more, drop
            assert self._scratch is not None
            cycle.body += memoryview(self._scratch)[:nbytes]
            if len(cycle.body) > HIGH_WATER_LIMIT:
                self.protocol.flow.pause_reading()
            cycle.message_event.set()
        if self.remaining == 0:
            self._finish()

    def _finish(self) -> None:
        # The whole body is read: back to httptools for the next request, with a
        # parser that starts at a message boundary.
        protocol = self.protocol
        protocol.on_message_complete()
        protocol.parser = protocol.new_parser()
        protocol.transport.set_protocol(protocol)
        self._scratch = None


class BodyIntoProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus the ``glimpse.body_readinto`` extension, and
    ``glimpse.sendfile`` on GET requests."""

    _reader: BodyReader | None = None
    #: Seconds a request body read or a response write may make no progress, and
    #: a request head (request line and headers) may take to arrive, before the
    #: connection is closed (``[DEFAULT] client_socket_timeout``; None: never).
    #: Set once per worker process, before it serves (``worker.create_worker_app``).
    idle_timeout: float | None = None
    #: Loop time since which the connection waits for a request head that has not
    #: all arrived (from the connection, or the request's first byte); None
    #: while none is awaited (a request is served, or a kept-alive connection
    #: is idle: uvicorn's ``timeout_keep_alive`` closes those).
    _head_since: float | None = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.idle_timeout is not None:
            # One timer per connection, re-armed at most once per timeout: a
            # connection that never sends a whole request head (a slow or idle
            # client holding a socket open) is closed, as Glance's eventlet
            # server does with the same option.
            self._head_since = self.loop.time()
            self._head_timer = self.loop.call_later(self.idle_timeout, self._check_head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _check_head(self) -> None:
        self._head_timer = None
        timeout = self.idle_timeout
        if timeout is None or self.transport.is_closing():
            return
        since = self._head_since
        delay = timeout
        if since is not None:
            waited = self.loop.time() - since
            if waited >= timeout:
                LOG.info("No complete request head for %.0f s: connection from %s closed",
                         timeout, self.client)
                self.transport.close()
                return
            delay = timeout - waited
        self._head_timer = self.loop.call_later(delay, self._check_head)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is not None:
            self._head_since = self.loop.time()

    def new_parser(self) -> httptools.HttpRequestParser:
        """A parser as uvicorn's ``__init__`` makes it."""
        parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):   # httptools < 0.6.3: no such option
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    def on_headers_complete(self) -> None:
        self._head_since = None
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not previous:
            # The request's task is created but has not run yet: it sees this.
            self._reader = BodyReader(self, cycle, _body_length(self.headers),
                                      _is_chunked(self.headers))
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            extensions = scope.setdefault("extensions", {})
            extensions[EXTENSION] = self._reader.readinto
            if scope["method"] == "GET":
                extensions[SENDFILE] = FileSender(cycle, self.idle_timeout).sendfile

    def on_body(self, body: bytes) -> None:
        reader = self._reader
        cycle = self.cycle
        if reader is None or reader.cycle is not cycle:
            super().on_body(body)
            return
        reader.delivered += len(body)
        if reader.target is None or cycle.response_complete:
            super().on_body(body)
            return
        target = reader.target
        filled = reader.filled
        n = min(len(body), len(target) - filled)
        target[filled:filled + n] = body if n == len(body) else memoryview(body)[:n]
        filled += n
        reader.filled = filled
        if n < len(body):
            # The buffer is full: the rest waits in uvicorn's own body buffer
            # (which pauses reading past its high-water mark) for the next call.
            reader.target = None
            super().on_body(body[n:])
        elif filled == len(target):
            reader.target = None
            cycle.message_event.set()
