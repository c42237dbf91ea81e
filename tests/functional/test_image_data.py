"""Image data over a real server: upload, download, Range, limits, disconnects, image.send.

Notifications are checked in the server's outbox (``log`` driver), read straight
from its SQLite file: every event is recorded there in the transaction of the
change it describes.

The tests that need no options of their own and do not restart the server share
one (``server``): each sees only the store files and log lines it added.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, held_body, running_server
from tests.image_bytes import qcow2, random_raw

OWNER = {"X-Project-Id": "a" * 32, "X-User-Id": "alice", "X-Roles": "member,reader"}
ADMIN = {"X-Project-Id": "c" * 32, "X-User-Id": "root", "X-Roles": "admin,member,reader"}
OTHER = {"X-Project-Id": "b" * 32, "X-User-Id": "bob", "X-Roles": "member,reader"}
OCTET = {"Content-Type": "application/octet-stream"}
LOG_DRIVER = {"oslo_messaging_notifications": {"driver": ["log"]}}

Server = Callable[..., ServerProcess]


def create_image(server: ServerProcess, headers: dict[str, str] = OWNER, **body: Any) -> str:
    with server.client(**headers) as c:
        r = c.post("/v2/images", json={"name": "data", "disk_format": "raw",
                                       "container_format": "bare", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def show(server: ServerProcess, image_id: str, headers: dict[str, str] = OWNER) -> dict[str, Any]:
    with server.client(**headers) as c:
        r = c.get(f"/v2/images/{image_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def upload(server: ServerProcess, image_id: str, data: bytes,
           headers: dict[str, str] = OWNER) -> httpx.Response:
    with server.client(**headers, **OCTET) as c:
        return c.put(f"/v2/images/{image_id}/file", content=data)


# Per shared server: the store files and the log size when the current test began.
_BEFORE: dict[Path, tuple[frozenset[str], int]] = {}


def _all_store_files(server: ServerProcess) -> set[str]:
    datadir = server.state / "images"
    return {p.name for p in datadir.iterdir()} if datadir.exists() else set()


def store_files(server: ServerProcess) -> list[str]:
    """The files in the server's store that the current test added."""
    before = _BEFORE.get(server.state, (frozenset(), 0))[0]
    return sorted(_all_store_files(server) - before)


def log_text(server: ServerProcess) -> str:
    """What the server logged during the current test."""
    with server.log.open("rb") as log:
        log.seek(_BEFORE.get(server.state, (frozenset(), 0))[1])
        return log.read().decode(errors="replace")


def outbox(server: ServerProcess, event_type: str | None = None) -> list[dict[str, Any]]:
    con = sqlite3.connect(server.state / "glimpse.sqlite")
    try:
        rows = con.execute(
            "SELECT envelope FROM outbox WHERE driver = 'log' ORDER BY id").fetchall()
    finally:
        con.close()
    envelopes = [json.loads(r[0]) for r in rows]
    return [e for e in envelopes if event_type is None or e["event_type"] == event_type]


def events_of(server: ServerProcess, image_id: str) -> list[tuple[str, str, Any]]:
    """(event_type, priority, status-or-text) of the image's events, in order."""
    found = []
    for e in outbox(server):
        p = e["payload"]
        if isinstance(p, str):
            if image_id in p:
                found.append((e["event_type"], e["priority"], p))
        elif p.get("id") == image_id or p.get("image_id") == image_id:
            found.append((e["event_type"], e["priority"], p.get("status")))
    return found


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("image-data"), LOG_DRIVER) as server:
        yield server


@pytest.fixture
def server(shared_server: ServerProcess) -> Iterator[ServerProcess]:
    """The module's server (``log`` driver), for a test that does not restart it."""
    _BEFORE[shared_server.state] = (frozenset(_all_store_files(shared_server)),
                                    shared_server.log.stat().st_size)
    yield shared_server
    del _BEFORE[shared_server.state]


def test_upload_download_roundtrip_with_checksums(server: ServerProcess) -> None:
    data = random_raw(5 * 1024 * 1024 + 123)
    image_id = create_image(server)
    r = upload(server, image_id, data)
    assert r.status_code == 204, r.text
    assert r.content == b""
    upload_id = r.headers["x-openstack-request-id"]
    image = show(server, image_id)
    assert image["status"] == "active"
    assert image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    with server.client(**OWNER) as c:
        r = c.get(f"/v2/images/{image_id}/file")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-md5"] == hashlib.md5(data).hexdigest()
    # the streamed answers carry their request ids too
    assert r.headers["x-openstack-request-id"].startswith("req-")
    assert upload_id.startswith("req-") and upload_id != r.headers["x-openstack-request-id"]
    assert store_files(server) == [image_id]
    assert [(t, p, s) for t, p, s in events_of(server, image_id) if t != "image.send"] == [
        ("image.create", "INFO", "queued"),
        ("image.update", "INFO", "saving"),
        ("image.prepare", "INFO", "saving"),
        ("image.upload", "INFO", "active"),
        ("image.activate", "INFO", "active"),
        ("image.update", "INFO", "active"),
    ]
    upload_event = outbox(server, "image.upload")[-1]["payload"]
    assert upload_event["checksum"] == hashlib.md5(data).hexdigest()
    assert upload_event["os_glance_importing_to_stores"] == []
    assert upload_event["os_glance_failed_import"] == []


def test_configured_hashing_algorithm(glimpse_server: Server) -> None:
    server = glimpse_server({"DEFAULT": {"hashing_algorithm": "sha256"}})
    data = random_raw(100_000)
    image_id = create_image(server)
    assert upload(server, image_id, data).status_code == 204
    image = show(server, image_id)
    assert image["os_hash_algo"] == "sha256"
    assert image["os_hash_value"] == hashlib.sha256(data).hexdigest()


def test_ranges(server: ServerProcess) -> None:
    data = random_raw(1000)
    image_id = create_image(server)
    assert upload(server, image_id, data).status_code == 204
    url = f"/v2/images/{image_id}/file"
    with server.client(**OWNER) as c:
        for header, start, end in [("bytes=0-9", 0, 9), ("bytes=990-", 990, 999),
                                   ("bytes=-5", 995, 999), ("bytes=995-2000", 995, 999)]:
            r = c.get(url, headers={"Range": header})
            assert r.status_code == 206, header
            assert r.content == data[start:end + 1]
            assert r.headers["content-range"] == f"bytes {start}-{end}/1000"
            assert r.headers["content-length"] == str(end - start + 1)
            assert r.headers["content-md5"] == hashlib.md5(data).hexdigest()
        for header in ("bytes=1000-", "bytes=5-2", "junk"):
            r = c.get(url, headers={"Range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == "bytes */1000"
        r = c.get(url, headers={"Range": "bytes=0-1,5-6"})
        assert r.status_code == 400
        assert "multiple ranges" in r.json()["message"]
        # legacy clients ask with Content-Range, which Glance still honours
        for header, start, end in [("bytes 0-0/1000", 0, 0), ("bytes 2-5/*", 2, 5)]:
            r = c.get(url, headers={"Content-Range": header})
            assert r.status_code == 206, header
            assert r.content == data[start:end + 1]
            assert r.headers["content-range"] == f"bytes {start}-{end}/1000"
        assert c.get(url, headers={"Content-Range": "bytes 0-2000/*"}).status_code == 416
        r = c.get(url, headers={"Range": "bytes=7-8", "Content-Range": "bytes 0-0/1000"})
        assert r.content == data[7:9]                       # Range wins


def test_status_rules(server: ServerProcess) -> None:
    image_id = create_image(server)
    with server.client(**OWNER) as c:
        assert c.get(f"/v2/images/{image_id}/file").status_code == 204   # no data yet
        for method in ("HEAD", "POST", "DELETE"):                         # as Glance
            r = c.request(method, f"/v2/images/{image_id}/file")
            assert r.status_code == 405, method
            assert sorted(r.headers["allow"].split(", ")) == ["GET", "PUT"]
            if method != "HEAD":
                assert r.json()["message"] == (
                    f"The method {method} is not allowed for this resource.")
        r = c.get(f"/v2/images/{image_id}/files")
        assert (r.status_code, r.json()["message"]) == (404, "The resource could not be found.")
        r = c.put(f"/v2/images/{image_id}/file", content=b"x",
                  headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.put(f"/v2/images/{image_id}/file", content=b"x")
        assert r.status_code == 415
    # Another project's private image does not exist for it: 404 both ways.
    with server.client(**OTHER, **OCTET) as c:
        assert c.get(f"/v2/images/{image_id}/file").status_code == 404
        assert c.put(f"/v2/images/{image_id}/file", content=b"x").status_code == 404
    assert upload(server, image_id, b"first").status_code == 204
    r = upload(server, image_id, b"second")
    assert r.status_code == 409
    assert "active to saving" in r.json()["message"]
    with server.client(**OWNER) as c:
        assert c.get(f"/v2/images/{image_id}/file").content == b"first"
        assert c.get(f"/v2/images/{'0' * 8}-0000-0000-0000-{'0' * 12}/file").status_code == 404


def test_upload_needs_both_formats_first_and_changes_nothing_without_them(
        server: ServerProcess) -> None:
    """As Glance: 400 before any data is read; the image stays queued, with no
    image.prepare or image.upload, and uploads once the formats are set."""
    bare = create_image(server, disk_format=None, container_format=None)
    raw = create_image(server, container_format=None)
    for image_id, message in [
            (bare, "Properties disk_format, container_format must be set prior to saving data."),
            (raw, "Property container_format must be set prior to saving data.")]:
        r = upload(server, image_id, b"data")
        assert (r.status_code, r.json()["message"]) == (400, message)
        assert show(server, image_id)["status"] == "queued"
        assert [e[0] for e in events_of(server, image_id)] == ["image.create"]
    assert store_files(server) == []
    with server.client(**OWNER, **{"Content-Type": "application/openstack-images-v2.1-json-patch"}
                       ) as c:
        r = c.patch(f"/v2/images/{raw}",
                    json=[{"op": "replace", "path": "/container_format", "value": "bare"}])
    assert r.status_code == 200, r.text
    assert upload(server, raw, b"data").status_code == 204
    assert show(server, raw)["status"] == "active"


def test_deactivated_images_only_admins_download(server: ServerProcess) -> None:
    image_id = create_image(server)
    assert upload(server, image_id, b"payload").status_code == 204
    with server.client(**ADMIN) as c:
        assert c.post(f"/v2/images/{image_id}/actions/deactivate").status_code == 204
        r = c.get(f"/v2/images/{image_id}/file")
        assert r.status_code == 200
        assert r.content == b"payload"
    with server.client(**OWNER) as c:
        r = c.get(f"/v2/images/{image_id}/file")
    assert r.status_code == 403
    assert "deactivated" in r.json()["message"]


def assert_failed_upload(server: ServerProcess, image_id: str, cause: str) -> None:
    image = show(server, image_id)
    assert image["status"] == "queued"
    assert image["size"] is None and image["checksum"] is None
    assert not [f for f in store_files(server) if image_id in f]
    events = events_of(server, image_id)
    assert events[-4:-2] == [("image.update", "INFO", "saving"),
                             ("image.prepare", "INFO", "saving")]
    kind, priority, text = events[-2]
    assert (kind, priority) == ("image.upload", "ERROR")
    assert text.startswith(f"Failed to upload image data for image {image_id}: ")
    assert cause in text
    assert events[-1] == ("image.update", "INFO", "queued")


def test_uploads_are_inspected_as_glance_does(server: ServerProcess) -> None:
    """The data must be its disk_format (415 and nothing kept otherwise, as in
    Glance); a match gives the image its virtual_size."""
    raw = random_raw(70_000)
    raw_id = create_image(server)
    assert upload(server, raw_id, raw).status_code == 204
    assert show(server, raw_id)["virtual_size"] == len(raw)

    disk_id = create_image(server, disk_format="qcow2")
    assert upload(server, disk_id, qcow2(10 << 30)).status_code == 204
    image = show(server, disk_id)
    assert (image["status"], image["virtual_size"]) == ("active", 10 << 30)
    upload_event = [e for e in outbox(server, "image.upload")
                    if e["payload"]["id"] == disk_id][-1]
    assert upload_event["payload"]["virtual_size"] == 10 << 30

    wrong_id = create_image(server, disk_format="qcow2")
    r = upload(server, wrong_id, raw)
    assert r.status_code == 415
    assert r.json()["message"] == "Image disk_format qcow2 does not match stream data raw"
    assert_failed_upload(server, wrong_id, "does not match stream data raw")
    assert show(server, wrong_id)["virtual_size"] is None

    backed_id = create_image(server, disk_format="qcow2")
    r = upload(server, backed_id, qcow2(1 << 30, backing_file=True))
    assert r.status_code == 415
    assert r.json()["message"] == "Image failed safety checks"
    assert_failed_upload(server, backed_id, "Image failed safety checks")
    # the same image takes good data afterwards
    assert upload(server, backed_id, qcow2(1 << 30)).status_code == 204


def test_a_mismatch_passes_when_no_match_is_required(glimpse_server: Server) -> None:
    server = glimpse_server({**LOG_DRIVER,
                             "image_format": {"require_image_format_match": False}})
    image_id = create_image(server, disk_format="vmdk")
    assert upload(server, image_id, random_raw(5000)).status_code == 204
    assert show(server, image_id)["virtual_size"] is None
    unsafe = create_image(server, disk_format="qcow2")     # safety checks still apply
    assert upload(server, unsafe, qcow2(1 << 30, data_file=True)).status_code == 415


def test_upload_then_more_requests_on_the_same_connection(server: ServerProcess) -> None:
    # A Content-Length body is read from the socket straight into the ingest
    # buffers (glimpse.api.http_protocol); the connection must then carry on with
    # the next requests as if the HTTP parser had seen the body.
    data = random_raw(9 * 1024 * 1024 + 5)
    image_id = create_image(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("PUT", f"/v2/images/{image_id}/file", body=data,
                     headers={**OWNER, **OCTET, "Content-Length": str(len(data))})
        r = conn.getresponse()
        assert (r.status, r.read()) == (204, b"")
        sock = conn.sock
        conn.request("GET", f"/v2/images/{image_id}", headers=OWNER)
        r = conn.getresponse()
        image = json.loads(r.read())
        conn.request("GET", f"/v2/images/{image_id}/file", headers=OWNER)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, data)
        assert conn.sock is sock            # one connection throughout
    finally:
        conn.close()
    assert image["status"] == "active" and image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()


def test_size_cap_is_413_and_keeps_nothing(glimpse_server: Server) -> None:
    server = glimpse_server({**LOG_DRIVER, "DEFAULT": {"image_size_cap": 1_000_000}})
    image_id = create_image(server)

    def stream() -> Any:           # no Content-Length: the cap is enforced while streaming
        for _ in range(40):
            yield b"x" * 65_536

    with server.client(**OWNER, **OCTET) as c:
        r = c.put(f"/v2/images/{image_id}/file", content=stream())
    assert r.status_code == 413
    assert "too large" in r.json()["message"]
    assert_failed_upload(server, image_id, "too large")
    # Declared too large up front: refused before reading the body.
    r = upload(server, image_id, b"y" * 1_000_001)
    assert r.status_code == 413
    assert_failed_upload(server, image_id, "too large")
    # The image is usable again.
    assert upload(server, image_id, b"z" * 1_000_000).status_code == 204
    assert show(server, image_id)["size"] == 1_000_000


def test_quota_is_413_keeps_nothing_and_is_freed(glimpse_server: Server) -> None:
    server = glimpse_server({**LOG_DRIVER, "DEFAULT": {"user_storage_quota": "3MB"}})
    first, second = create_image(server), create_image(server)
    two_mib = random_raw(2 * 1024 * 1024)
    assert upload(server, first, two_mib).status_code == 204
    r = upload(server, second, two_mib)
    assert r.status_code == 413
    assert "quota" in r.json()["message"]
    assert_failed_upload(server, second, "quota")
    # Another project has its own quota.
    other = create_image(server, OTHER)
    assert upload(server, other, two_mib, OTHER).status_code == 204
    # Deleting the first image frees its bytes.
    with server.client(**OWNER) as c:
        assert c.delete(f"/v2/images/{first}").status_code == 204
    assert upload(server, second, two_mib).status_code == 204
    assert sorted(store_files(server)) == sorted([second, other])


def test_concurrent_uploads_cannot_exceed_the_quota_together(glimpse_server: Server) -> None:
    # Each upload's stream is checked against the usage when it began; the one that
    # finishes second must see the first's bytes when it commits.
    server = glimpse_server({**LOG_DRIVER, "DEFAULT": {"user_storage_quota": "3MB"}})
    slow, fast = create_image(server), create_image(server)
    release = threading.Event()
    answer: list[httpx.Response] = []

    def upload_slow() -> None:
        with server.client(**OWNER, **OCTET) as c:
            answer.append(c.put(f"/v2/images/{slow}/file", content=held_body(release, b"s")))

    thread = threading.Thread(target=upload_slow)
    thread.start()
    try:
        wait_for(lambda: show(server, slow)["status"] == "saving")
        assert upload(server, fast, random_raw(2 * 1024 * 1024)).status_code == 204
    finally:
        release.set()
        thread.join(30)
    assert answer[0].status_code == 413, answer[0].text
    assert "quota" in answer[0].json()["message"]
    assert_failed_upload(server, slow, "quota")
    assert show(server, fast)["size"] == 2 * 1024 * 1024
    assert store_files(server) == [fast]


def test_an_upload_stalled_after_its_data_was_complete_is_queued_again_at_start(
        glimpse_server: Server) -> None:
    """The gap between an upload's file getting its final name and the commit that
    activates the image: a process that dies there leaves the image saving with
    its data complete. The next start puts it back to queued and removes the data
    (an hour after the file was complete; a younger one is left alone)."""
    server = glimpse_server(LOG_DRIVER)
    stalled, recent = create_image(server), create_image(server)
    datadir = server.state / "images"
    with sqlite3.connect(server.state / "glimpse.sqlite") as conn:
        conn.execute("UPDATE images SET status = 'saving' WHERE id IN (?, ?)",
                     (stalled, recent))
    for image_id in (stalled, recent):
        (datadir / image_id).write_bytes(b"complete, never activated")
    two_hours_ago = time.time() - 7200
    os.utime(datadir / stalled, (two_hours_ago, two_hours_ago))
    server.restart()
    assert show(server, stalled)["status"] == "queued"
    assert show(server, recent)["status"] == "saving"
    assert store_files(server) == [recent]
    texts = [s for t, p, s in events_of(server, stalled) if t == "image.upload"]
    assert texts == [f"Failed to upload image data for image {stalled}: the upload's data "
                     "was complete but the image was never activated"]
    assert upload(server, stalled, b"again").status_code == 204   # the user can retry


def test_client_disconnect_mid_upload_leaves_image_queued(server: ServerProcess) -> None:
    image_id = create_image(server)
    head = (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        sock.sendall(random_raw(6_000_000))
        wait_for(lambda: show(server, image_id)["status"] == "saving")
    wait_for(lambda: show(server, image_id)["status"] == "queued")
    assert_failed_upload(server, image_id, "disconnected")
    assert not [f for f in store_files(server) if f.endswith(".part")]
    assert upload(server, image_id, b"again").status_code == 204


def test_a_stalled_upload_is_closed_after_client_socket_timeout(glimpse_server: Server) -> None:
    """A client that stops sending no longer keeps its image saving (and every
    other upload of it refused) for as long as it holds the socket; one that is
    slow but keeps sending is not cut off."""
    server = glimpse_server({**LOG_DRIVER, "DEFAULT": {"client_socket_timeout": 2}})
    stalled, slow = create_image(server), create_image(server)

    def head(image_id: str, length: int) -> bytes:
        return (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(stalled, 5_000_000) + b"s" * 1_000_000)
        wait_for(lambda: show(server, stalled)["status"] == "saving")
        sock.settimeout(30)
        answer = sock.recv(65536)             # the server hangs up (no answer to send)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer
    wait_for(lambda: show(server, stalled)["status"] == "queued")
    assert_failed_upload(server, stalled, "disconnected")
    assert "No request body data for 2 s" in server.log.read_text()

    piece = 50_000
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(slow, 8 * piece))
        for _ in range(8):                    # 3.2 s in all, never 2 s without data
            sock.sendall(b"w" * piece)
            time.sleep(0.4)
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 204")
    assert show(server, slow)["size"] == 8 * piece


def test_upload_to_image_deleted_meanwhile_is_410_and_keeps_nothing(
        server: ServerProcess) -> None:
    image_id = create_image(server)
    head = (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 3000000\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        sock.sendall(b"q" * 1_000_000)
        wait_for(lambda: show(server, image_id)["status"] == "saving")
        with server.client(**OWNER) as c:
            assert c.delete(f"/v2/images/{image_id}").status_code == 204
        sock.sendall(b"q" * 2_000_000)
        response = sock.makefile("rb").readline()
    assert response.startswith(b"HTTP/1.1 410"), response
    assert store_files(server) == []
    texts = [s for t, p, s in events_of(server, image_id) if p == "ERROR"]
    assert texts and texts[-1].startswith(f"Image {image_id} could not be found after upload")


def sends(server: ServerProcess, image_id: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        events = [e for e in outbox(server, "image.send")
                  if e["payload"]["image_id"] == image_id]
        return events if len(events) >= count else []
    events: list[dict[str, Any]] = wait_for(found)
    return events


def test_image_send_for_full_range_and_aborted_downloads(server: ServerProcess) -> None:
    size = 64 * 1024 * 1024           # larger than the socket buffers: aborts are real
    data = random_raw(1024 * 1024) * 64
    image_id = create_image(server)
    assert upload(server, image_id, data).status_code == 204
    with server.client(**OTHER) as c:   # not visible to others: no event
        assert c.get(f"/v2/images/{image_id}/file").status_code == 404
    with server.client(**OWNER) as c:
        assert len(c.get(f"/v2/images/{image_id}/file").content) == size
        r = c.get(f"/v2/images/{image_id}/file", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206
        assert c.get(f"/v2/images/{image_id}/file",
                     headers={"Range": "bytes=999999999-"}).status_code == 416
    # A client that reads 1 MiB and goes away.
    request = (f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    received = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request)
        while received < 1024 * 1024:
            received += len(sock.recv(65536))
    events = sends(server, image_id, 3)
    assert len(events) == 3                       # exactly one per download that streamed
    full, ranged, aborted = events
    expected = {"image_id": image_id, "owner_id": OWNER["X-Project-Id"],
                "receiver_tenant_id": OWNER["X-Project-Id"],
                "receiver_user_id": OWNER["X-User-Id"], "destination_ip": "127.0.0.1"}
    assert full["priority"] == "INFO"
    assert full["payload"] == {**expected, "bytes_sent": size}
    assert ranged["priority"] == "INFO"
    assert ranged["payload"] == {**expected, "bytes_sent": 100}
    assert aborted["priority"] == "WARN"
    assert received - 1024 < aborted["payload"]["bytes_sent"] < size
    time.sleep(0.5)
    assert len(sends(server, image_id, 3)) == 3   # and no late duplicate


def test_a_download_abandoned_before_its_answer_is_a_disconnect(server: ServerProcess) -> None:
    """A client that asks and hangs up at once: whether or not the answer had
    started, that is a disconnect (WARN with what was sent), never a server ERROR."""
    image_id = create_image(server)
    assert upload(server, image_id, b"x" * 1_000_000).status_code == 204
    request = (f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
    events = sends(server, image_id, 10)
    outcomes = {(e["priority"], e["payload"]["bytes_sent"] == 1_000_000) for e in events}
    assert outcomes <= {("WARN", False), ("INFO", True)}     # never ERROR
    assert "Traceback" not in log_text(server)


def test_a_download_nobody_reads_is_closed_after_client_socket_timeout(
        glimpse_server: Server) -> None:
    server = glimpse_server({**LOG_DRIVER, "DEFAULT": {"client_socket_timeout": 1}})
    size = 32 * 1024 * 1024                   # far more than the socket buffers hold
    image_id = create_image(server)
    assert upload(server, image_id, random_raw(1024 * 1024) * 32).status_code == 204
    request = (f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request)
        [event] = sends(server, image_id, 1)  # recorded once the server gave up
    assert event["priority"] == "WARN"
    assert 0 < event["payload"]["bytes_sent"] < size
    assert "Client took no response data for 1 s" in server.log.read_text()


@pytest.mark.parametrize(("trusted", "destination"), [
    (None, "127.0.0.1"), ("127.0.0.1", "203.0.113.9"), ("192.0.2.10", "127.0.0.1")])
def test_destination_ip_believes_x_forwarded_for_only_from_trusted_proxies(
        glimpse_server: Server, trusted: str | None, destination: str) -> None:
    options: dict[str, Any] = {**LOG_DRIVER, "DEFAULT": {}}
    if trusted:
        options["DEFAULT"]["trusted_proxies"] = trusted
    server = glimpse_server(options)
    image_id = create_image(server)
    assert upload(server, image_id, b"x" * 1000).status_code == 204
    with server.client(**OWNER, **{"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}) as c:
        assert c.get(f"/v2/images/{image_id}/file").content == b"x" * 1000
    [event] = sends(server, image_id, 1)
    assert event["payload"]["destination_ip"] == destination


def test_store_read_failures_are_error_image_sends(server: ServerProcess) -> None:
    mib = 1024 * 1024
    data = random_raw(12 * mib)
    truncated, missing = create_image(server), create_image(server)
    for image_id in (truncated, missing):
        assert upload(server, image_id, data).status_code == 204
    datadir = server.state / "images"
    os.truncate(datadir / truncated, 5 * mib)     # data lost after 5 MiB
    (datadir / missing).unlink()                  # data lost entirely
    with server.client(**OWNER) as c:
        r = c.get(f"/v2/images/{missing}/file")
        assert r.status_code == 500                # a clean error, no broken 200
        assert "file://" not in r.text             # store locations never leak
        with pytest.raises(httpx.HTTPError):       # headers were sent: the body breaks off
            c.get(f"/v2/images/{truncated}/file")
    (gone,) = sends(server, missing, 1)
    assert gone["priority"] == "ERROR"
    assert gone["payload"]["bytes_sent"] == 0
    (cut,) = sends(server, truncated, 1)
    assert cut["priority"] == "ERROR"
    assert cut["payload"]["bytes_sent"] == 5 * mib


def test_upload_interrupted_by_a_crash_is_queued_again_after_restart(
        glimpse_server: Server) -> None:
    server = glimpse_server(LOG_DRIVER)
    image_id = create_image(server)
    head = (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in OWNER.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        sock.sendall(random_raw(9_000_000))
        wait_for(lambda: show(server, image_id)["status"] == "saving")
        wait_for(lambda: [f for f in store_files(server) if f.endswith(".part")])
        server.kill()                                  # SIGKILL: no clean-up ran
    assert [f for f in store_files(server) if f.endswith(".part")]
    server.start()
    assert store_files(server) == []                   # partial data removed on start
    assert show(server, image_id)["status"] == "queued"
    kind, priority, text = events_of(server, image_id)[-2]
    assert (kind, priority) == ("image.upload", "ERROR")
    assert "stopped while the data was being written" in text
    assert events_of(server, image_id)[-1] == ("image.update", "INFO", "queued")
    assert upload(server, image_id, b"after the crash").status_code == 204
