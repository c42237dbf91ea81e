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
straight from the parser's body callbacks and wakes the caller only when the
buffer is full, the body ends or the client goes away (a 4 MiB buffer: one
wake-up and one copy of each byte per 4 MiB). Everything else is uvicorn's
behaviour unchanged: an app that uses ``receive()`` sees no difference, and
mixing the two is safe (bytes ``receive()`` had not yet returned are the first
ones ``readinto`` copies, and the other way round).

Contract of ``readinto``: returns how many bytes it wrote; fewer than
``len(buffer)`` only when the body has ended (0 once all was read). Raises
:class:`starlette.requests.ClientDisconnect` when the client went away (or the
response was already sent) before the end of the body, as ``request.stream()``
does. Sends ``100 Continue`` first when the client asked for it, as ``receive()``.
Only one ``readinto`` per request at a time.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

EXTENSION = "glimpse.body_readinto"


class BodyReader:
    """The ``readinto`` of one request (one :class:`RequestResponseCycle`)."""

    def __init__(self, protocol: BodyIntoProtocol, cycle: RequestResponseCycle) -> None:
        self.protocol = protocol
        self.cycle = cycle
        #: the caller's buffer while ``readinto`` waits, and how much of it is filled
        self.target: memoryview | None = None
        self.filled = 0

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
            # Wait for the rest, written straight into the buffer by on_body.
            self.target = target
            self.filled = filled
            cycle.message_event.clear()
            self.protocol.flow.resume_reading()
            try:
                await cycle.message_event.wait()
            finally:
                filled = self.filled
                self.target = None


class BodyIntoProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus the ``glimpse.body_readinto`` extension."""

    _reader: BodyReader | None = None

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not previous:
            # The request's task is created but has not run yet: it sees this.
            self._reader = BodyReader(self, cycle)
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            scope.setdefault("extensions", {})[EXTENSION] = self._reader.readinto

    def on_body(self, body: bytes) -> None:
        reader = self._reader
        cycle = self.cycle
        if (reader is None or reader.target is None or reader.cycle is not cycle
                or cycle.response_complete):
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
