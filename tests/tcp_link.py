"""A TCP forwarder that can be cut: a network outage between a client and a server.

``TcpLink(host, port)`` listens on 127.0.0.1 (``.port``) and forwards every
connection to ``host:port``. ``cut()`` resets every open connection and turns
new ones away (accepted, then closed at once, as a failed-over address does)
until ``restore()``. Setting ``delay`` (seconds) holds every chunk the server
sends back for that long: a slow server. Used to take a real PostgreSQL away
from a running Glimpse and give it back, or to slow a real Keystone down,
without touching the shared test services.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable


class TcpLink:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server-side context; clients then speak TLS to the link, which
        speaks plain TCP to the server (a TLS terminator)."""
        self.target = (host, port)
        self.tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._closed = False
        self.delay = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _reset(client)
                continue
            if self.tls is not None:
                try:
                    client = self.tls.wrap_socket(client, server_side=True)
                except (OSError, ssl.SSLError):
                    _reset(client)
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, sink, slow in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, slow),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        _pump(source, sink, (lambda: self.delay) if slow else (lambda: 0.0))


def _pump(source: socket.socket, sink: socket.socket, delay: Callable[[], float]) -> None:
    try:
        while data := source.recv(65536):
            if (wait := delay()) > 0:
                time.sleep(wait)
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a link that went away."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
