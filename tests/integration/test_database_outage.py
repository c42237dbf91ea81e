"""A running Glimpse whose PostgreSQL goes away and comes back (a failover, a
restart, a network cut: here a TCP link between them is cut and restored).

While the database is away requests answer 503 with a message saying so, one
log line each, no traceback; a download already streaming finishes, and its
``image.send`` is recorded once the database is back (billing counts those
bytes); an upload whose data ends meanwhile completes once it is back; then
everything works again without a restart.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine.url import make_url

from tests.conftest import ServerProcess, held_body
from tests.tcp_link import TcpLink

pytestmark = pytest.mark.postgres

OWNER = {"X-Project-Id": "a" * 32, "X-User-Id": "alice", "X-Roles": "member,reader",
         "Accept": "application/json"}


@pytest.fixture
def linked(pg_database: str) -> Iterator[tuple[str, TcpLink]]:
    """The test database's URL through a TcpLink, and the link."""
    url = make_url(pg_database)
    link = TcpLink(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield url.set(port=link.port).render_as_string(hide_password=False), link
    finally:
        link.close()


def _sends(pg_database: str, image_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(pg_database.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute("SELECT envelope FROM outbox WHERE event_type = 'image.send' "
                            "ORDER BY id").fetchall()
    envelopes = [json.loads(row[0]) for row in rows]
    return [e for e in envelopes if e["payload"]["image_id"] == image_id]


@pytest.fixture
def server(glimpse_server: Callable[..., ServerProcess],
           linked: tuple[str, TcpLink]) -> ServerProcess:
    """A Glimpse whose database is reached through the link."""
    url, _ = linked
    server = glimpse_server({"database": {"connection": url},
                             "oslo_messaging_notifications": {"driver": ["log"]}},
                            start=False)
    subprocess.run([sys.executable, "-c", "import sys; from glimpse.manage import main; "
                    "sys.exit(main())", "--config-file", str(server.config_file),
                    "db", "sync"], check=True, capture_output=True)
    server.start()
    return server


def _download_started(server: ServerProcess, size: int) -> tuple[str, socket.socket, int]:
    """An active image of ``size`` bytes and a download of it that has begun: the
    image id, the socket (a small receive buffer holds the server back) and the
    bytes received so far."""
    with server.client(**OWNER) as c:
        image_id = c.post("/v2/images", json={"name": "big", "disk_format": "raw",
                                              "container_format": "bare"}).json()["id"]
        r = c.put(f"/v2/images/{image_id}/file", content=b"\x5a" * size,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
    request = (f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(request)
    return image_id, sock, len(sock.recv(65536))


def test_requests_answer_503_while_the_database_is_away_and_nothing_is_lost(
        server: ServerProcess, pg_database: str, linked: tuple[str, TcpLink]) -> None:
    _, link = linked
    size = 64 * 1024 * 1024
    # a download starts while the database is there ...
    image_id, sock, received = _download_started(server, size)
    link.cut()                          # ... and the database goes away
    try:
        with server.client(**OWNER) as c:
            created = c.post("/v2/images", json={"name": "during the outage"})
            listed = c.get("/v2/images")
        for response in (created, listed):
            assert response.status_code == 503, response.text
            assert response.json()["message"] == \
                "The image database is unavailable; try again later."
        while chunk := sock.recv(1 << 20):      # the download goes on to its end
            received += len(chunk)
        time.sleep(1.5)                 # its image.send is tried, and waits
        assert _sends(pg_database, image_id) == []
    finally:
        sock.close()
        link.restore()

    deadline = time.monotonic() + 20
    while not (sends := _sends(pg_database, image_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(sends) == 1
    assert sends[0]["priority"] == "INFO"
    assert sends[0]["payload"]["bytes_sent"] == size
    assert received > size              # the headers and every byte
    with server.client(**OWNER) as c:
        assert c.post("/v2/images", json={"name": "after"}).status_code == 201
        assert c.get(f"/v2/images/{image_id}").json()["status"] == "active"
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "POST /v2/images failed: " in log and "GET /v2/images failed: " in log
    assert f"Recording the image.send of image {image_id} to project {'a' * 32} " \
        f"({size} bytes, INFO): database unavailable" in log
    assert re.search(r"Recording the events of the event spool: done after \d+ failed "
                     "attempts", log)
    assert "Recorded 1 event(s) kept in the spool" in log


def test_an_image_send_kept_during_an_outage_survives_a_crash(
        server: ServerProcess, pg_database: str, linked: tuple[str, TcpLink]) -> None:
    """The download ends while the database is away; the process is killed before
    it comes back: the next start records the image.send from the event spool."""
    _, link = linked
    size = 16 * 1024 * 1024
    image_id, sock, received = _download_started(server, size)
    link.cut()
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        spool = server.state / "event-spool"
        deadline = time.monotonic() + 10
        while not any(p.stat().st_size for p in spool.glob("*.jsonl")):
            assert time.monotonic() < deadline, "the image.send never reached the spool"
            time.sleep(0.05)
        server.kill()                   # a crash while the event waits
    finally:
        sock.close()
        link.restore()
    assert received > size
    assert _sends(pg_database, image_id) == []

    server.start()                      # the start replays what the dead process kept
    sends = _sends(pg_database, image_id)
    assert len(sends) == 1
    assert (sends[0]["priority"], sends[0]["payload"]["bytes_sent"]) == ("INFO", size)
    assert not any(p.stat().st_size for p in (server.state / "event-spool").glob("*.jsonl"))


def test_an_upload_that_ends_while_the_database_is_away_completes_when_it_is_back(
        server: ServerProcess, linked: tuple[str, TcpLink]) -> None:
    _, link = linked
    with server.client(**OWNER) as c:
        image_id = c.post("/v2/images", json={"name": "held", "disk_format": "raw",
                                              "container_format": "bare"}).json()["id"]
    release = threading.Event()
    result: dict[str, Any] = {}

    def upload() -> None:
        with server.client(**OWNER) as c:
            result["response"] = c.put(f"/v2/images/{image_id}/file",
                                       content=held_body(release, b"u"),
                                       headers={"Content-Type": "application/octet-stream"})

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(1.0)                     # the first MiB is in; the image is saving
    link.cut()
    release.set()                       # the data ends while the database is away
    time.sleep(2.0)
    assert "response" not in result     # the upload waits for the database ...
    link.restore()
    uploader.join(30)
    response = result["response"]       # ... and succeeds once it is back
    assert response.status_code == 204, response.text
    with server.client(**OWNER) as c:
        image = c.get(f"/v2/images/{image_id}").json()
        data = c.get(f"/v2/images/{image_id}/file").content
    assert image["status"] == "active" and image["size"] == 2 * 1024 * 1024
    assert image["checksum"] == hashlib.md5(data).hexdigest() and data == b"u" * len(data)
    log = server.log.read_text()
    assert f"Finishing the upload of image {image_id}: database unavailable" in log
    assert "Traceback" not in log
