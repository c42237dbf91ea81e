"""The body_readinto and sendfile extensions of BodyIntoProtocol, over a real uvicorn
and a real socket.

A small ASGI app reads the body with ``readinto`` (or ``receive()``) and answers
with what it got, or sends a range of a file with ``sendfile``; raw sockets play
the client so that pipelining, ``Expect: 100-continue``, chunked bodies, slow
readers and hang-ups are exactly what is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.requests import ClientDisconnect

from glimpse.api.file_sender import SENDFILE, FileSendError
from glimpse.api.http_protocol import EXTENSION, BodyIntoProtocol

BUFFER = 1 << 20
events: list[int] = []   # sizes read before ClientDisconnect
FILE = os.urandom(6 * BUFFER + 333)
FILE_PATH: list[str] = []  # set by the server fixture
sent: list[int | str] = []  # what each sendfile returned (or the error's class and count)


async def send_file(scope: dict[str, Any], send: Any) -> None:
    """GET /file/<offset>/<count>[/<content-length>]: that range of FILE by sendfile."""
    offset, count, *declared = (int(p) for p in scope["path"].split("/")[2:])
    length = declared[0] if declared else count
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(length).encode())]})
    fd = os.open(FILE_PATH[0], os.O_RDONLY)
    try:
        n = await scope["extensions"][SENDFILE](fd, offset, count)
    except FileSendError as exc:
        sent.append(f"FileSendError {exc.sent}")
        return               # the response stays incomplete: the server closes it
    finally:
        os.close(fd)
    sent.append(n)
    if n == count:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/extensions":
        body = json.dumps(sorted(scope["extensions"])).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"].startswith("/file/"):
        await send_file(scope, send)
        return
    readinto = scope["extensions"][EXTENSION]
    buffer = mmap.mmap(-1, BUFFER)
    digest = hashlib.md5()
    size = calls = 0
    status = 200
    try:
        if scope["path"] == "/receive-first":
            message = await receive()
            digest.update(message["body"])
            size += len(message["body"])
        if scope["path"] == "/abandon":
            size = await readinto(buffer)
            status = 413
        else:
            while True:
                n = await readinto(buffer)
                calls += 1
                if n == 0:
                    break
                digest.update(memoryview(buffer)[:n])
                size += n
    except ClientDisconnect:
        events.append(size)
        return
    body = json.dumps({"size": size, "calls": calls, "md5": digest.hexdigest()}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(protocol: type[BodyIntoProtocol]) -> Iterator[int]:
    """uvicorn with ``protocol`` serving ``app`` on a free port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=free, http=protocol,
                            log_level="warning", lifespan="off", timeout_keep_alive=60)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield free
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    path = tmp_path_factory.mktemp("sendfile") / "data"
    path.write_bytes(FILE)
    FILE_PATH[:] = [str(path)]
    with serving(BodyIntoProtocol) as free:
        yield free


def request(path: str, body: bytes, *, chunked: bool = False, expect: bool = False) -> bytes:
    head = f"PUT {path} HTTP/1.1\r\nHost: t\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    else:
        head += f"Content-Length: {len(body)}\r\n"
    if expect:
        head += "Expect: 100-continue\r\n"
    return (head + "\r\n").encode()


def read_head(reader: Any) -> tuple[int, int]:
    """Status and Content-Length of the next response on ``reader``."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, length


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, Any]]]:
    """``count`` responses (status, JSON body) read from ``sock``."""
    reader = sock.makefile("rb")
    responses = []
    for _ in range(count):
        status, length = read_head(reader)
        responses.append((status, json.loads(reader.read(length))))
    return responses


def expected(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest()}


def without_calls(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "calls"}


@pytest.mark.parametrize("size", [0, 1, BUFFER - 1, BUFFER, 3 * BUFFER + 12345])
def test_content_length_body_fills_buffers_then_next_request_on_same_connection(
        port: int, size: int) -> None:
    data = os.urandom(size)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # The next request is pipelined right behind the body: it must not end
        # up in the app's buffer, and must be parsed as a request of its own.
        sock.sendall(request("/into", data) + data + request("/into", b"hello") + b"hello")
        (status1, first), (status2, second) = read_responses(sock, 2)
    assert status1 == status2 == 200
    assert without_calls(first) == expected(data)
    # One call per full buffer, a short (or empty) one at the end, then 0.
    assert first["calls"] == size // BUFFER + (2 if size % BUFFER else 1)
    assert without_calls(second) == expected(b"hello")


def test_expect_100_continue_is_answered_before_reading(port: int) -> None:
    data = os.urandom(BUFFER + 7)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/into", data, expect=True))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(data)
        [(status, answer)] = read_responses(sock, 1)
    assert status == 200 and without_calls(answer) == expected(data)


@pytest.mark.parametrize(("size", "chunk"), [(2 * BUFFER + 3, 300_000), (50_001, 7),
                                             (3 * BUFFER, 5 * BUFFER)])
def test_chunked_body(port: int, size: int, chunk: int) -> None:
    data = os.urandom(size)
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/into", b"", chunked=True) + body + request("/into", b"ab") + b"ab")
        (status, answer), (_, second) = read_responses(sock, 2)
    assert status == 200 and without_calls(answer) == expected(data)
    assert without_calls(second) == expected(b"ab")


def test_receive_then_readinto_loses_nothing(port: int) -> None:
    data = os.urandom(2 * BUFFER + 99)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/receive-first", data) + data)
        [(status, answer)] = read_responses(sock, 1)
    assert status == 200 and without_calls(answer) == expected(data)


def test_unread_rest_of_body_is_dropped_and_connection_serves_next_request(port: int) -> None:
    data = os.urandom(5 * BUFFER)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/abandon", data) + data + request("/into", b"next") + b"next")
        (status, answer), (status2, second) = read_responses(sock, 2)
    assert status == 413 and answer["size"] == BUFFER
    assert status2 == 200 and without_calls(second) == expected(b"next")


def test_client_gone_mid_body_raises_client_disconnect(port: int) -> None:
    events.clear()
    data = os.urandom(3 * BUFFER)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request("/into", data) + data[:BUFFER + 10])
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(events) == 1 and events[0] <= BUFFER + 10   # never a complete body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()



# SO_LINGER on, 0 s: close() resets the connection.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


@contextlib.contextmanager
def whole_file_on_a_small_window(port: int) -> Iterator[socket.socket]:
    """A connection with a 16 KiB receive buffer that has asked for all of FILE."""
    sent.clear()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", port))
        sock.sendall(get(f"/file/0/{len(FILE)}"))
        yield sock


def wait_sent() -> int | str:
    """What the app's next sendfile returned (it may still be finishing)."""
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sent, "sendfile did not return"
    return sent.pop(0)


def test_sendfile_is_offered_on_get_only(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(get("/extensions") + request("/extensions", b""))
        reader = sock.makefile("rb")
        answers = []
        for _ in range(2):
            _, length = read_head(reader)
            answers.append(json.loads(reader.read(length)))
    assert answers == [sorted([EXTENSION, SENDFILE]), [EXTENSION]]


@pytest.mark.parametrize(("offset", "count"), [(0, len(FILE)), (12345, 3 * BUFFER + 7),
                                               (len(FILE) - 1, 1)])
def test_sendfile_sends_the_range_then_the_connection_serves_the_next_request(
        port: int, offset: int, count: int) -> None:
    sent.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(get(f"/file/{offset}/{count}") + get("/file/5/10"))
        reader = sock.makefile("rb")
        first = read_head(reader), reader.read(count)
        second = read_head(reader), reader.read(10)
    assert first == ((200, count), FILE[offset:offset + count])
    assert second == ((200, 10), FILE[5:15])
    assert [wait_sent(), wait_sent()] == [count, 10]


def test_sendfile_to_a_slow_reader_waits_and_loses_nothing(port: int) -> None:
    with whole_file_on_a_small_window(port) as sock:
        reader = sock.makefile("rb", buffering=0)
        head = reader.readline()
        while reader.readline() not in (b"\r\n", b""):
            pass
        received = bytearray()
        while len(received) < len(FILE):
            piece = sock.recv(65536)
            assert piece, "connection closed early"
            received += piece
            if len(received) < BUFFER:
                time.sleep(0.002)   # the server's socket buffer fills: EAGAIN, then wait
    assert head.startswith(b"HTTP/1.1 200") and bytes(received) == FILE
    assert wait_sent() == len(FILE)


def test_sendfile_returns_short_when_the_client_goes_away(port: int) -> None:
    with whole_file_on_a_small_window(port) as sock:
        received = 0
        while received < 300_000:
            received += len(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    result = wait_sent()            # the close above resets the connection
    assert isinstance(result, int) and received - 1000 <= result < len(FILE)


def test_sendfile_raises_when_the_file_ends_early(port: int) -> None:
    sent.clear()
    start = len(FILE) - 1000
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(get(f"/file/{start}/5000"))
        reader = sock.makefile("rb")
        status, length = read_head(reader)
        body = reader.read(length)    # ends where the server closes the connection
    assert (status, length) == (200, 5000)
    assert body == FILE[start:]
    assert wait_sent() == "FileSendError 1000"


@pytest.mark.parametrize("reset", [True, False])
def test_sendfile_waiting_for_a_stalled_client_ends_when_it_goes_away(
        port: int, reset: bool) -> None:
    with whole_file_on_a_small_window(port) as sock:
        time.sleep(0.3)             # reads nothing: the server waits to write
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    result = wait_sent()
    assert isinstance(result, int) and 0 < result < len(FILE)


class HeadTimeoutProtocol(BodyIntoProtocol):
    idle_timeout = 1.0


@pytest.fixture(scope="module")
def head_timeout_port() -> Iterator[int]:
    with serving(HeadTimeoutProtocol) as free:
        yield free


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (fails if it stays open longer)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""
    return time.monotonic() - start


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
        head_timeout_port: int) -> None:
    with socket.create_connection(("127.0.0.1", head_timeout_port)) as sock:
        assert 0.8 < closed_within(sock, 6) < 5


def test_a_request_head_trickling_in_is_closed_after_the_timeout(
        head_timeout_port: int) -> None:
    with socket.create_connection(("127.0.0.1", head_timeout_port)) as sock:
        sock.sendall(b"GET /extensions HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        with pytest.raises(OSError):         # closed under the writer: EPIPE or reset
            for i in range(80):              # a header every 0.1 s, never the end
                sock.sendall(f"X-Slow-{i}: 1\r\n".encode())
                time.sleep(0.1)
        assert time.monotonic() - start < 6


def test_kept_alive_connections_and_slow_heads_within_the_timeout_are_served(
        head_timeout_port: int) -> None:
    ask = b"GET /extensions HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", head_timeout_port)) as sock:
        reader = sock.makefile("rb")
        for pause in (2.2, 0.0):              # idle past the timeout between requests
            sock.sendall(ask[:20])
            time.sleep(0.2)                   # a head in two pieces, within the timeout
            sock.sendall(ask[20:])
            status, length = read_head(reader)
            assert status == 200 and EXTENSION in json.loads(reader.read(length))
            time.sleep(pause)
