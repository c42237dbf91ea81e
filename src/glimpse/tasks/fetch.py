"""Streaming HTTP(S) download of import sources, with the SSRF checks applied per hop.

:func:`open_download` checks the URL (:mod:`glimpse.tasks.url_filter`), resolves
the host once, checks every resolved address, and connects to one of those
addresses (the ``Host`` header and TLS SNI/certificate check keep the original
name). Redirects are not followed by httpx: each ``Location`` is checked and
resolved again the same way, up to ``max_redirects`` hops.

Blocking: every call blocks the calling thread (run it in a worker thread). Each
network operation (connect, each read) times out after ``timeout`` seconds, so a
server that stalls fails the download instead of holding a worker forever; and
with a ``deadline`` the whole download (from the first connect) fails once it
has taken that long, so neither does a server that sends a byte now and then.
Failures raise :class:`glimpse.exceptions.ImportFailed` (or URLRefused, an
Invalid, for a refused URL) with a message fit for the task's ``message``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from glimpse.exceptions import ImportFailed
from glimpse.notifications.payloads import mask_url
from glimpse.tasks.url_filter import DEFAULT_PORTS, FilterRules, Target, check_url, resolve

if TYPE_CHECKING:   # imported where used: httpx (with click, pygments, ...) costs
    import httpx  # ~3 MiB resident in every API worker, and only web-download needs it

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Deadline:
    """When a download must be over (``time.monotonic()``; None: never)."""

    at: float | None
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds if seconds > 0 else None, seconds)

    def check(self, url: str) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise ImportFailed(f"Download from {mask_url(url)} took longer than its "
                               f"deadline of {self.seconds:g} s ([task] download_deadline)")


@dataclass
class Download:
    """An open response. ``content_length`` is the announced size, if any."""

    url: str
    content_length: int | None
    _response: httpx.Response
    _timeout: float
    _deadline: Deadline

    def abort(self) -> None:
        """From another thread: make a read blocked on this response fail at once
        (shuts the socket down; the iterator then raises ImportFailed)."""
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def iter_bytes(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the body in chunks of ``chunk_size`` (the last one shorter). Raises
        ImportFailed on a stall, a broken connection or the deadline (checked at
        every network read; a read waits at most ``timeout``, so the download
        fails at most that long after its deadline)."""
        import httpx

        buffer = bytearray()
        try:
            # httpx's own chunk_size would hold small reads back until a chunk is
            # full, and the deadline must be checked at every read
            for piece in self._response.iter_bytes():
                self._deadline.check(self.url)
                buffer += piece
                while len(buffer) >= chunk_size:
                    yield bytes(buffer[:chunk_size])
                    del buffer[:chunk_size]
            if buffer:
                yield bytes(buffer)
        except httpx.TimeoutException as exc:
            raise ImportFailed(f"Download from {mask_url(self.url)} stalled: no data for "
                               f"{self._timeout:g} seconds") from exc
        except httpx.HTTPError as exc:
            raise ImportFailed(f"Download from {mask_url(self.url)} failed: {exc}") from exc


def _address_url(target: Target, address: str) -> tuple[str, str]:
    """(URL with the host replaced by ``address``, Host header value)."""
    parts = target.parts
    host_for_url = f"[{address}]" if ":" in address else address
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    default = DEFAULT_PORTS[target.scheme]
    port_suffix = "" if target.port == default else f":{target.port}"
    name = f"[{target.host}]" if ":" in target.host else target.host
    url = parts._replace(scheme=target.scheme,
                         netloc=f"{userinfo}{host_for_url}:{target.port}").geturl()
    return url, f"{name}{port_suffix}"


def _send(client: httpx.Client, target: Target, addresses: list[str],
          timeout: float) -> httpx.Response:
    import httpx

    last: Exception | None = None
    for address in addresses:
        url, host_header = _address_url(target, address)
        request = client.build_request(
            "GET", url, headers={"Host": host_header, "Accept-Encoding": "identity"},
            extensions={"sni_hostname": target.host})
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
            continue
        except httpx.TimeoutException as exc:
            raise ImportFailed(f"Download from {mask_url(target.url)} timed out after "
                               f"{timeout:g} seconds") from exc
        except httpx.HTTPError as exc:
            raise ImportFailed(f"Download from {mask_url(target.url)} failed: {exc}") from exc
    raise ImportFailed(f"Could not connect to {mask_url(target.url)}: {last}")


@contextmanager
def open_download(url: str, rules: FilterRules, *, timeout: float, deadline: float = 0.0,
                  max_redirects: int = 5,
                  transport: httpx.BaseTransport | None = None) -> Iterator[Download]:
    """Open ``url`` for streaming; the response is closed when the block exits.
    ``deadline``: seconds the whole download may take, from now (0: no limit).

    Raises URLRefused for a URL (or redirect target, or resolved address) the
    rules refuse; ImportFailed for DNS errors, refused connections, timeouts,
    too many redirects and any status but 200.
    """
    import httpx

    ends = Deadline.after(deadline)

    client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                          trust_env=False, transport=transport)
    try:
        current = url
        for _hop in range(max_redirects + 1):
            target = check_url(current, rules, what="URI for import")
            try:
                addresses = resolve(target, rules)
            except (socket.gaierror, UnicodeError) as exc:
                raise ImportFailed(f"Could not resolve host {target.host!r}: {exc}") from exc
            response = _send(client, target, addresses, timeout)
            if response.status_code in REDIRECTS and response.headers.get("location"):
                location = response.headers["location"]
                response.close()
                current = urljoin(current, location)
                continue
            if response.status_code != 200:
                status = f"{response.status_code} {response.reason_phrase}".strip()
                response.close()
                raise ImportFailed(f"Download from {mask_url(current)} failed: "
                                   f"the server answered {status}")
            length = response.headers.get("content-length")
            try:
                yield Download(url=current, content_length=int(length) if length else None,
                               _response=response, _timeout=timeout, _deadline=ends)
            finally:
                response.close()
            return
        raise ImportFailed(f"Download from {mask_url(url)} failed: more than "
                           f"{max_redirects} redirects")
    finally:
        client.close()
