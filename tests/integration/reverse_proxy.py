"""A reverse proxy that mounts an upstream API under a path, as deployments do.

``ReverseProxy(upstream, prefix)`` serves ``<url><prefix>/...`` by forwarding to
``<upstream>/...`` as HAProxy does by default (or nginx with ``proxy_set_header
Host $host``): the upstream sees the client's ``Host`` but not the path prefix,
and the proxy adds ``X-Forwarded-Proto``, ``X-Forwarded-Host``,
``X-Forwarded-Prefix`` and ``X-Forwarded-For``. Every request it forwarded is
kept in ``seen`` (method, path as the client sent it). Bodies are relayed whole (test-sized data).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "host", "content-length"}


class ReverseProxy:
    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.seen: list[tuple[str, str]] = []
        self._client = httpx.Client(timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _forward(self) -> None:
                if self.path != proxy.prefix and not self.path.startswith(proxy.prefix + "/"):
                    self.send_error(404, "not under the proxy's prefix")
                    return
                proxy.seen.append((self.command, self.path))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP}
                headers.update({"Host": self.headers.get("host", ""),
                                "X-Forwarded-Proto": "http",
                                "X-Forwarded-Host": self.headers.get("host", ""),
                                "X-Forwarded-Prefix": proxy.prefix,
                                "X-Forwarded-For": self.client_address[0]})
                target = proxy.upstream + (self.path[len(proxy.prefix):] or "/")
                request = proxy._client.build_request(self.command, target, headers=headers,
                                                      content=self._body())
                response = proxy._client.send(request, stream=True)
                try:
                    body = b"" if self.command == "HEAD" else response.read()
                    self.send_response(response.status_code)
                    for name, value in response.headers.multi_items():
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    length = response.headers.get("content-length", str(len(body)))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    response.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
