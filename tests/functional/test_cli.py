"""glimpse-api as operators run it: SQLite created on start, worker processes,
one log file for the service and the ``log`` notification driver, clean SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess

MEMBER = {"X-Project-Id": "3" * 32, "X-User-Id": "u3", "X-Roles": "member,reader"}


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def _serving_pid(client: socket.socket, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server end of ``client``'s TCP connection
    (/proc/net/tcp: the socket whose remote port is the client's local port)."""
    port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    return None


def test_two_workers_one_log_file_and_clean_sigterm(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server({"DEFAULT": {"workers": 2},
                             "oslo_messaging_notifications": {"driver": ["log"]}})
    db = server.state / "glimpse.sqlite"
    assert db.exists(), "the SQLite default is created on start"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()

    started = re.compile(r"Started server process \[(\d+)\]")
    _wait_for(lambda: len(set(started.findall(server.log.read_text()))) == 2,
              "both workers to log their start")
    with server.client(**MEMBER) as c:
        for _ in range(20):
            assert c.get("/v2/info/usage").status_code == 200
        created = c.post("/v2/images", json={"name": "logged"})
        assert created.status_code == 201, created.text
    image_id = created.json()["id"]
    # The `log` driver writes through Python logging into [DEFAULT] log_file.
    _wait_for(lambda: f'"id": "{image_id}"' in server.log.read_text()
              and "oslo.messaging.notification.image.create" in server.log.read_text(),
              "the image.create notification in the log file")

    # Four keep-alive connections opened together are served two by each worker.
    workers = [int(pid) for pid in set(started.findall(server.log.read_text()))]
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
             for _ in range(4)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: glimpse\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        owners = [_serving_pid(sock, workers) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert sorted(owners.count(pid) for pid in workers) == [2, 2], owners

    server.stop()
    assert server.proc is not None and server.proc.returncode == 0
    log = server.log.read_text()
    assert log.count("Application shutdown complete") == 2
    assert "Glimpse API stopped" in log


def test_single_worker_sigterm_exits_zero(glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server()
    with server.client() as c:
        assert c.get("/healthcheck").text == "OK"
    server.stop()
    assert server.proc is not None and server.proc.returncode == 0
    log = server.log.read_text()
    assert "Application shutdown complete" in log
    assert "Glimpse API stopped (signal SIGTERM)" in log
    # and a restart on the same state directory reuses the database
    server.start()
    with server.client() as c:
        assert c.get("/versions").status_code == 200


def test_access_log_writes_one_line_per_request_only_when_asked(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    quiet = glimpse_server()
    logged = glimpse_server({"DEFAULT": {"access_log": True, "workers": 2}})
    for server in (quiet, logged):
        with server.client(**MEMBER) as client:
            assert client.get("/v2/images?limit=3").status_code == 200
            assert client.get(f"/v2/images/{'0' * 8}-0000-0000-0000-{'0' * 12}"
                              ).status_code == 404
    request_line = re.compile(r'uvicorn\.access 127\.0\.0\.1:\d+ - "GET (\S+) HTTP/1\.1" (\d+)')
    assert not request_line.search(quiet.log.read_text())
    _wait_for(lambda: len(request_line.findall(logged.log.read_text())) >= 2,
              "the two request lines")
    lines = request_line.findall(logged.log.read_text())
    assert ("/v2/images?limit=3", "200") in lines
    assert (f"/v2/images/{'0' * 8}-0000-0000-0000-{'0' * 12}", "404") in lines
