"""End to end: API requests -> outbox -> relay -> RabbitMQ -> an unmodified
oslo.messaging listener, checked against the notification contract.

Each test gives its server a topic of its own, so queues left over by other
tests never mix in; one test uses the default topic ``notifications``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.listener import NotificationListener, Received, image_events

OWNER = "11111111111111111111111111111111"
OWNER_USER = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
MEMBER = "22222222222222222222222222222222"
MEMBER_USER = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
OWNER_H = {"X-Project-Id": OWNER, "X-User-Id": OWNER_USER, "X-Roles": "admin,member,reader"}
MEMBER_H = {"X-Project-Id": MEMBER, "X-User-Id": MEMBER_USER, "X-Roles": "member,reader"}

IMAGE_KEYS = ["id", "name", "status", "created_at", "updated_at", "min_disk", "min_ram",
              "protected", "checksum", "owner", "disk_format", "container_format", "size",
              "virtual_size", "is_public", "visibility", "properties", "tags", "deleted",
              "deleted_at", "os_hash_algo", "os_hash_value"]
IMPORT_LISTS = ["os_glance_importing_to_stores", "os_glance_failed_import"]
MEMBER_KEYS = ["image_id", "member_id", "status", "created_at", "updated_at", "deleted",
               "deleted_at"]
SEND_KEYS = ["image_id", "owner_id", "receiver_tenant_id", "receiver_user_id",
             "destination_ip", "bytes_sent"]
PAYLOAD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENVELOPE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
MIB = 1024 * 1024


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def broker_restored() -> Iterator[None]:
    """Whatever a test does to the broker, it is running again afterwards."""
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def notifying_server(glimpse_server: Any, rabbit_url: str, topic: str,
                     driver: str = "messagingv2", lease_seconds: float = 15.0,
                     **default: Any) -> Any:
    """A server notifying ``topic``, retrying a broker that is down every second at most."""
    return glimpse_server({
        "DEFAULT": {"transport_url": rabbit_url, **default},
        "oslo_messaging_notifications": {"driver": [driver], "topics": topic},
        "outbox": {"poll_interval": 0.05, "initial_backoff": 0.1, "max_backoff": 1.0,
                   "lease_seconds": lease_seconds},
    })


def create_image(http: httpx.Client, **body: Any) -> dict[str, Any]:
    body = {"disk_format": "raw", "container_format": "bare", **body}
    resp = http.post("/v2/images", json=body, headers=OWNER_H)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def zeros(size: int) -> Iterator[bytes]:
    """A streamed body of ``size`` zero bytes (never held in memory whole)."""
    block = bytes(MIB)
    for _ in range(size // MIB):
        yield block


def upload(http: httpx.Client, image_id: str, data: bytes | Iterator[bytes]) -> httpx.Response:
    return http.put(f"/v2/images/{image_id}/file", content=data,
                    headers={**OWNER_H, "Content-Type": "application/octet-stream"})


def aborted_download(server: Any, image_id: str, keep: int) -> None:
    """GET the file over a raw socket, read about ``keep`` bytes, then hang up."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        headers = "".join(f"{k}: {v}\r\n" for k, v in MEMBER_H.items())
        sock.sendall(f"GET /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
                     .encode())
        got = 0
        while got < keep:
            chunk = sock.recv(65536)
            assert chunk, "server closed before sending data"
            got += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def kinds(events: list[Received]) -> list[tuple[str, str]]:
    return [(e.event_type, e.priority) for e in events]


def check_image_payload(e: Received, status: str, *, import_lists: bool = False) -> None:
    assert isinstance(e.payload, dict), e
    expected = IMAGE_KEYS + (IMPORT_LISTS if import_lists else [])
    assert list(e.payload) == expected, (e.event_type, list(e.payload))
    assert e.payload["status"] == status, (e.event_type, e.payload["status"], status)
    assert PAYLOAD_TIME.match(e.payload["created_at"])
    assert "locations" not in e.payload and "location" not in e.payload


def test_full_scenario_reaches_an_oslo_messaging_listener(glimpse_server: Any,
                                                          rabbit_url: str) -> None:
    topic = f"scenario_{uuid.uuid4().hex[:8]}"
    listener = NotificationListener(rabbit_url, topic).start()
    server = notifying_server(glimpse_server, rabbit_url, topic,
                              image_size_cap=72 * MIB)
    data = bytes(range(256)) * 4096 + b"tail"          # 1 MiB + 4 bytes
    try:
        with server.client() as http:
            img = create_image(http, name="golden", visibility="shared", tags=["t1"],
                               custom_prop="custom-value", min_ram=64)
            iid = img["id"]
            assert upload(http, iid, data).status_code == 204
            patch = http.patch(f"/v2/images/{iid}", headers={
                **OWNER_H, "Content-Type": "application/openstack-images-v2.1-json-patch"},
                content=json.dumps([{"op": "replace", "path": "/name", "value": "golden-b"}]))
            assert patch.status_code == 200, patch.text
            assert http.put(f"/v2/images/{iid}/tags/t2", headers=OWNER_H).status_code == 204
            assert http.delete(f"/v2/images/{iid}/tags/t1", headers=OWNER_H).status_code == 204
            r = http.post(f"/v2/images/{iid}/members", json={"member": MEMBER}, headers=OWNER_H)
            assert r.status_code == 200, r.text
            r = http.put(f"/v2/images/{iid}/members/{MEMBER}", json={"status": "accepted"},
                         headers=MEMBER_H)
            assert r.status_code == 200, r.text
            assert http.post(f"/v2/images/{iid}/actions/deactivate",
                             headers=OWNER_H).status_code == 204
            assert http.post(f"/v2/images/{iid}/actions/reactivate",
                             headers=OWNER_H).status_code == 204
            full = http.get(f"/v2/images/{iid}/file", headers=MEMBER_H)
            assert full.status_code == 200 and full.content == data
            part = http.get(f"/v2/images/{iid}/file",
                            headers={**MEMBER_H, "Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]

            # A second image, much larger than what socket buffers and one read
            # chunk hold, so that a hang-up leaves most of it unsent.
            big = create_image(http, name="big", visibility="public")
            big_data = b"\x5a" * (64 * MIB)
            assert upload(http, big["id"], big_data).status_code == 204
            aborted_download(server, big["id"], keep=256 * 1024)

            # A third image whose upload fails: over the 72 MiB size cap.
            bad = create_image(http, name="too-big")
            assert upload(http, bad["id"], zeros(73 * MIB)).status_code == 413
            assert http.get(f"/v2/images/{bad['id']}", headers=OWNER_H).json()["status"] \
                == "queued"

            assert http.delete(f"/v2/images/{iid}/members/{MEMBER}",
                               headers=OWNER_H).status_code == 204
            assert http.delete(f"/v2/images/{iid}", headers=OWNER_H).status_code == 204

        events = listener.wait_for(
            lambda evs: any(e.event_type == "image.delete" for e in evs)
            and any(e.event_type == "image.send" and e.priority == "WARN" for e in evs)
            and any(e.event_type == "image.upload" and e.priority == "ERROR" for e in evs),
            what="the whole scenario")
    finally:
        listener.stop()

    mine = image_events(events, iid)
    assert kinds(mine) == [
        ("image.create", "INFO"),
        ("image.update", "INFO"), ("image.prepare", "INFO"), ("image.upload", "INFO"),
        ("image.activate", "INFO"), ("image.update", "INFO"),
        ("image.update", "INFO"),                       # rename
        ("image.update", "INFO"), ("image.update", "INFO"),   # tag add, tag remove
        ("image.member.create", "INFO"), ("image.member.update", "INFO"),
        ("image.update", "INFO"), ("image.update", "INFO"),   # deactivate, reactivate
        ("image.send", "INFO"), ("image.send", "INFO"),       # full, range
        ("image.member.delete", "INFO"),
        ("image.delete", "INFO"),
    ]
    (create, up_saving, prepare, uploaded, activate, up_active, renamed, tag_add, tag_del,
     m_create, m_update, deact, react, send_full, send_range, m_delete, delete) = mine

    check_image_payload(create, "queued")
    assert create.payload["tags"] == ["t1"] and create.payload["properties"] == {
        "custom_prop": "custom-value"}
    assert create.payload["owner"] == OWNER and create.payload["is_public"] is False
    assert create.payload["checksum"] is None and create.payload["size"] is None
    check_image_payload(up_saving, "saving")
    check_image_payload(prepare, "saving", import_lists=True)
    assert prepare.payload["os_glance_importing_to_stores"] == []
    check_image_payload(uploaded, "active", import_lists=True)
    assert uploaded.payload["size"] == len(data)
    assert uploaded.payload["checksum"] == hashlib.md5(data).hexdigest()
    assert uploaded.payload["os_hash_algo"] == "sha512"
    assert uploaded.payload["os_hash_value"] == hashlib.sha512(data).hexdigest()
    check_image_payload(activate, "active")
    check_image_payload(up_active, "active")
    assert renamed.payload["name"] == "golden-b"
    assert tag_add.payload["tags"] == ["t1", "t2"] and tag_del.payload["tags"] == ["t2"]
    check_image_payload(deact, "deactivated")
    check_image_payload(react, "active")

    for member_event, status in ((m_create, "pending"), (m_update, "accepted"),
                                 (m_delete, "accepted")):
        assert list(member_event.payload) == MEMBER_KEYS
        assert member_event.payload["member_id"] == MEMBER
        assert member_event.payload["status"] == status
    assert m_create.payload["deleted"] is False and m_delete.payload["deleted"] is True
    assert PAYLOAD_TIME.match(m_delete.payload["deleted_at"])

    for send, size in ((send_full, len(data)), (send_range, 100)):
        assert list(send.payload) == SEND_KEYS
        assert send.payload == {"image_id": iid, "owner_id": OWNER,
                                "receiver_tenant_id": MEMBER, "receiver_user_id": MEMBER_USER,
                                "destination_ip": "127.0.0.1", "bytes_sent": size}

    check_image_payload(delete, "deleted")
    assert delete.payload["deleted"] is True and PAYLOAD_TIME.match(
        delete.payload["deleted_at"])

    (warn,) = [e for e in image_events(events, big["id"]) if e.event_type == "image.send"]
    assert warn.priority == "WARN"
    assert 256 * 1024 <= warn.payload["bytes_sent"] < len(big_data)
    assert warn.payload["receiver_tenant_id"] == MEMBER

    # Priorities travel on different queues (notifications.info / .error), so a
    # listener may take them in either order; the envelope times keep the order.
    failed = image_events(events, bad["id"])
    info = [e for e in failed if e.priority == "INFO"]
    assert kinds(info) == [("image.create", "INFO"), ("image.update", "INFO"),
                           ("image.prepare", "INFO"), ("image.update", "INFO")]
    (error,) = [e for e in failed if e.priority == "ERROR"]
    assert error.event_type == "image.upload"
    assert isinstance(error.payload, str) and bad["id"] in error.payload
    assert info[2].metadata["timestamp"] <= error.metadata["timestamp"] \
        <= info[3].metadata["timestamp"]
    assert info[3].payload["status"] == "queued"

    for e in events:
        assert re.fullmatch(r"image\.[\w-]+", e.publisher_id)
        assert ENVELOPE_TIME.match(e.metadata["timestamp"])
        uuid.UUID(e.message_id, version=4)
    assert len({e.message_id for e in events}) == len(events)


def test_default_topic_and_messaging_v1_body(glimpse_server: Any, rabbit_url: str) -> None:
    """driver=messaging: the body is the bare envelope (+ _unique_id), read with kombu."""
    import kombu

    topic = f"v1_{uuid.uuid4().hex[:8]}"
    server = notifying_server(glimpse_server, rabbit_url, topic, driver="messaging")
    with server.client() as http:
        iid = create_image(http, name="v1")["id"]
    body = None
    with kombu.Connection(rabbit_url.replace("rabbit://", "amqp://")) as conn:
        channel = conn.channel()
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            try:
                message = channel.basic_get(f"{topic}.info", no_ack=True)
            except Exception:  # queue not declared yet: the relay has not published
                channel = conn.channel()
                message = None
            if message is None:
                time.sleep(0.1)
                continue
            body = json.loads(message.body)
            assert message.properties.get("delivery_mode") == 2
    assert body is not None, "no message on the v1 queue"
    assert "oslo.version" not in body
    assert list(body) == ["message_id", "publisher_id", "event_type", "priority", "payload",
                          "timestamp", "_unique_id"]
    assert body["event_type"] == "image.create" and body["payload"]["id"] == iid
    assert re.fullmatch(r"[0-9a-f]{32}", body["_unique_id"])


def purge(rabbit_url: str, queue: str) -> None:
    """Drop what earlier runs left on a shared queue (if it exists)."""
    import kombu

    with kombu.Connection(rabbit_url.replace("rabbit://", "amqp://")) as conn, \
            contextlib.suppress(Exception):   # no such queue yet: nothing to drop
        conn.channel().queue_purge(queue)


def test_default_topic_notifications(glimpse_server: Any, rabbit_url: str) -> None:
    purge(rabbit_url, "notifications.info")
    listener = NotificationListener(rabbit_url, "notifications").start()
    try:
        server = notifying_server(glimpse_server, rabbit_url, "notifications")
        with server.client() as http:
            iid = create_image(http, name="default-topic")["id"]
        listener.wait_for(lambda evs: bool(image_events(evs, iid)), what="image.create")
    finally:
        listener.stop()


def test_broker_outage_loses_nothing_and_blocks_nobody(glimpse_server: Any, rabbit_url: str,
                                                       broker_restored: None) -> None:
    topic = f"outage_{uuid.uuid4().hex[:8]}"
    server = notifying_server(glimpse_server, rabbit_url, topic)
    with server.client() as http:
        iid = create_image(http, name="before")["id"]
        rabbitmqctl("stop_app")
        slowest = 0.0
        for i in range(50):
            started = time.monotonic()
            r = http.patch(f"/v2/images/{iid}", headers={
                **OWNER_H, "Content-Type": "application/openstack-images-v2.1-json-patch"},
                content=json.dumps([{"op": "replace", "path": "/name", "value": f"n{i}"}]))
            slowest = max(slowest, time.monotonic() - started)
            assert r.status_code == 200, r.text
        # A request that waited for the broker would hang for its connect timeout.
        assert slowest < 2.0, f"a request waited {slowest:.2f}s with the broker down"
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    listener = NotificationListener(rabbit_url, topic).start()
    try:
        events = listener.wait_for(
            lambda evs: sum(e.event_type == "image.update" for e in evs) >= 50,
            timeout=60, what="50 updates after the outage")
    finally:
        listener.stop()
    names = [e.payload["name"] for e in image_events(events, iid)
             if e.event_type == "image.update"]
    assert names == [f"n{i}" for i in range(50)]


def test_crash_with_pending_events_redelivers_after_restart(
        glimpse_server: Any, rabbit_url: str, broker_restored: None) -> None:
    """The killed process's relay lease would last 10 minutes: the restarted
    process takes it over at once because the dead one's liveness mark is
    unlocked (glimpse.liveness), and delivers within the test's 60 s."""
    topic = f"crash_{uuid.uuid4().hex[:8]}"
    server = notifying_server(glimpse_server, rabbit_url, topic, lease_seconds=600.0)
    rabbitmqctl("stop_app")
    with server.client() as http:
        ids = [create_image(http, name=f"c{i}")["id"] for i in range(10)]
    server.kill()                                   # SIGKILL: no drain, no goodbye
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    listener = NotificationListener(rabbit_url, topic).start()
    try:
        server.start()
        events = listener.wait_for(
            lambda evs: {e.payload.get("id") for e in evs if isinstance(e.payload, dict)}
            >= set(ids), timeout=60, what="the 10 image.create events")
    finally:
        listener.stop()
    by_image: dict[str, set[str]] = {}
    for e in events:
        by_image.setdefault(e.payload["id"], set()).add(e.message_id)
    # At-least-once: any duplicate carries the same message_id.
    assert all(len(by_image[i]) == 1 for i in ids)


def outbox_state(state: Path) -> tuple[set[str], int]:
    """(event types ever recorded, rows not yet delivered) of a server's outbox."""
    with sqlite3.connect(state / "glimpse.sqlite") as db:
        types = {row[0] for row in db.execute("SELECT DISTINCT event_type FROM outbox")}
        pending = db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
        return types, int(pending.fetchone()[0])


def log_envelopes(log: Path) -> list[dict[str, Any]]:
    pattern = re.compile(r" oslo\.messaging\.notification\.[\w.]+ (\{.*\})$")
    found = []
    for line in log.read_text().splitlines():
        m = pattern.search(line)
        if m:
            found.append(json.loads(m.group(1)))
    return found


ALL_SCENARIO_EVENTS = {"image.create", "image.update", "image.prepare", "image.upload",
                       "image.activate", "image.member.create", "image.send"}


@pytest.mark.parametrize(("disabled", "suppressed"), [
    ("image.update", {"image.update"}),
    ("image", ALL_SCENARIO_EVENTS),
    ("image.member", {"image.member.create"}),
    ("image.send", {"image.send"}),
    ("task", set()),
    ("image.member,image.send", {"image.member.create", "image.send"}),
])
def test_disabled_notifications_through_the_log_driver(glimpse_server: Any, disabled: str,
                                                       suppressed: set[str]) -> None:
    server = glimpse_server({
        "DEFAULT": {"disabled_notifications": disabled},
        "oslo_messaging_notifications": {"driver": ["log"]},
        "outbox": {"poll_interval": 0.05},
    })
    with server.client() as http:
        iid = create_image(http, name="d", visibility="shared")["id"]
        assert upload(http, iid, b"abc").status_code == 204
        assert http.post(f"/v2/images/{iid}/members", json={"member": MEMBER},
                         headers=OWNER_H).status_code == 200
        assert http.get(f"/v2/images/{iid}/file", headers=OWNER_H).content == b"abc"
    expected = ALL_SCENARIO_EVENTS - suppressed
    # image.send is recorded once the body has gone out, which may be just after
    # the client has it: wait for the expected events, then for their delivery.
    deadline = time.monotonic() + 20
    recorded, pending = outbox_state(server.state)
    while (not recorded >= expected or pending) and time.monotonic() < deadline:
        time.sleep(0.05)
        recorded, pending = outbox_state(server.state)
    assert recorded == expected and pending == 0      # disabled events never recorded
    envelopes = log_envelopes(server.log)
    assert {e["event_type"] for e in envelopes} == expected
    for e in envelopes:     # the log line is the whole envelope, in the contract's order
        assert list(e) == ["message_id", "publisher_id", "event_type", "priority", "payload",
                           "timestamp"]
