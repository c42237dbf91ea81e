"""The body_readinto extension of BodyIntoProtocol, over a real uvicorn and a real socket.

A small ASGI app reads the body with ``readinto`` (or ``receive()``) and answers
with what it got; raw sockets play the client so that pipelining, ``Expect:
100-continue``, chunked bodies and hang-ups are exactly what is sent.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.requests import ClientDisconnect

from glimpse.api.http_protocol import EXTENSION, BodyIntoProtocol

BUFFER = 1 << 20
events: list[int] = []   # sizes read before ClientDisconnect


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
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


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=free, http=BodyIntoProtocol,
                            log_level="warning", lifespan="off")
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


def request(path: str, body: bytes, *, chunked: bool = False, expect: bool = False) -> bytes:
    head = f"PUT {path} HTTP/1.1\r\nHost: t\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    else:
        head += f"Content-Length: {len(body)}\r\n"
    if expect:
        head += "Expect: 100-continue\r\n"
    return (head + "\r\n").encode()


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, Any]]]:
    """``count`` responses (status, JSON body) read from ``sock``."""
    reader = sock.makefile("rb")
    responses = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
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
