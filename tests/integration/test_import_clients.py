"""Tasks and interoperable import through real clients: python-glanceclient's CLI
(``task-create``, ``task-show``, ``task-list``, ``image-create-via-import``,
``image-stage`` + ``image-import``) and openstacksdk (``create_image`` with
``import_method`` web-download and glance-direct), against a real Glimpse server
downloading from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image_bytes import random_raw
from tests.import_helpers import events_for, import_options
from tests.import_source import SourceServer
from tests.integration.glance_cli import glance, table


def wait_status(server: Any, path: str, done: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    with server.client() as http:
        while True:
            body: dict[str, Any] = http.get(path).json()
            if body["status"] in done:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.1)


def wait_imported(server: Any, image_id: str) -> dict[str, Any]:
    """The image once its import ended: ``active``, or failed (a store listed in
    ``os_glance_failed_import``). Its status alone does not say so: after the
    import call's 202 the image keeps its status (``queued``, ``uploading``)
    until the task starts and sets ``importing``, as Glance does."""
    deadline = time.monotonic() + 60
    with server.client() as http:
        while True:
            body: dict[str, Any] = http.get(f"/v2/images/{image_id}").json()
            if body["status"] == "active" or body.get("os_glance_failed_import"):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.1)


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        server.files["disk.raw"] = random_raw(2 * 1024 * 1024 + 3)
        yield server


def test_glance_cli_task_create_show_list(glimpse_server: Any, source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port))
    data = source.files["disk.raw"]
    task_input = {"import_from": source.url("/files/disk.raw"), "import_from_format": "raw",
                  "image_properties": {"name": "via-task", "disk_format": "raw",
                                       "container_format": "bare"}}
    created = table(glance(server, "task-create", "--type", "import",
                           "--input", json.dumps(task_input)))
    task_id = created["id"]
    assert created["type"] == "import" and created["status"] == "pending"

    final = wait_status(server, f"/v2/tasks/{task_id}", ("success", "failure"))
    assert final["status"] == "success", final
    shown = table(glance(server, "task-show", task_id))
    assert shown["status"] == "success"
    image_id = json.loads(shown["result"].replace("'", '"'))["image_id"]
    assert task_id in glance(server, "task-list")
    assert task_id in glance(server, "task-list", "--status", "success")
    assert task_id not in glance(server, "task-list", "--status", "failure")

    image = table(glance(server, "image-show", image_id))
    assert image["status"] == "active" and image["name"] == "via-task"
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    out = Path(server.state) / "download.raw"
    glance(server, "image-download", "--file", str(out), image_id)
    assert out.read_bytes() == data

    kinds = [e[0] for e in events_for(server.state, task_id=task_id, image_id=image_id)]
    assert kinds == ["task.create", "task.run", "task.processing", "image.create",
                     "image.update", "image.prepare", "image.upload", "image.activate",
                     "image.update", "task.success"]


def test_glance_cli_image_create_via_import_web_download(glimpse_server: Any,
                                                         source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port))
    data = source.files["disk.raw"]
    created = table(glance(server, "image-create-via-import", "--name", "wd-cli",
                           "--disk-format", "raw", "--container-format", "bare",
                           "--import-method", "web-download",
                           "--uri", source.url("/files/disk.raw")))
    image_id = created["id"]
    image = wait_imported(server, image_id)
    assert image["status"] == "active", image
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    statuses = [s for kind, _, s in events_for(server.state, image_id=image_id)]
    assert statuses == ["queued", "importing", "importing", "active", "active", "active"]


def test_glance_cli_stage_then_import_glance_direct(glimpse_server: Any,
                                                    tmp_path: Path) -> None:
    server = glimpse_server({"oslo_messaging_notifications": {"driver": "log"}})
    data = random_raw(1024 * 1024 + 9)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    image_id = table(glance(server, "image-create", "--name", "gd-cli", "--disk-format", "raw",
                            "--container-format", "bare"))["id"]
    glance(server, "image-stage", "--file", str(path), image_id)
    assert table(glance(server, "image-show", image_id))["status"] == "uploading"
    glance(server, "image-import", "--import-method", "glance-direct", image_id)
    image = wait_imported(server, image_id)
    assert image["status"] == "active", image
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert not (Path(server.state) / "staging" / image_id).exists()


def test_glance_cli_image_create_via_import_glance_direct(glimpse_server: Any,
                                                          tmp_path: Path) -> None:
    server = glimpse_server({"oslo_messaging_notifications": {"driver": "log"}})
    data = random_raw(512 * 1024)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    created = table(glance(server, "image-create-via-import", "--name", "gd-cli2",
                           "--disk-format", "raw", "--container-format", "bare",
                           "--import-method", "glance-direct", "--file", str(path)))
    image = wait_imported(server, created["id"])
    assert image["status"] == "active"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()


def _sdk(server: Any) -> Any:
    import openstack

    return openstack.connect(auth_type="none", endpoint=server.url + "/v2",
                             image_endpoint_override=server.url + "/v2")


def test_openstacksdk_create_image_with_import_methods(glimpse_server: Any,
                                                       source: SourceServer,
                                                       tmp_path: Path) -> None:
    server = glimpse_server(import_options(source.port))
    conn = _sdk(server)
    data = source.files["disk.raw"]

    # openstacksdk needs use_import=True as well: with import_method alone it
    # PUTs an empty body to /file instead of importing (an SDK quirk).
    web = conn.image.create_image("sdk-web", disk_format="raw", container_format="bare",
                                  use_import=True, import_method="web-download",
                                  uri=source.url("/files/disk.raw"))
    image = wait_imported(server, web.id)
    assert image["status"] == "active"
    assert image["checksum"] == hashlib.md5(data).hexdigest()

    local = tmp_path / "local.raw"
    local.write_bytes(b"sdk-direct" * 50000)
    direct = conn.image.create_image("sdk-direct", filename=str(local), disk_format="raw",
                                     container_format="bare", use_import=True,
                                     validate_checksum=False)
    image = wait_imported(server, direct.id)
    assert image["status"] == "active"
    assert image["checksum"] == hashlib.md5(local.read_bytes()).hexdigest()
    fetched = conn.image.get_image(direct.id)
    assert fetched.status == "active" and fetched.size == local.stat().st_size

    info = conn.image.get_import_info()
    assert set(info.import_methods["value"]) == {"glance-direct", "web-download"}


@pytest.mark.rabbitmq
def test_import_events_reach_an_oslo_messaging_listener(glimpse_server: Any,
                                                        source: SourceServer,
                                                        rabbit_url: str) -> None:
    """A successful and a failed web-download, as an unmodified oslo.messaging
    notification listener on RabbitMQ sees them."""
    import uuid

    from tests.integration.listener import NotificationListener

    topic = f"imports_{uuid.uuid4().hex[:8]}"
    listener = NotificationListener(rabbit_url, topic).start()
    try:
        options = import_options(source.port)
        options["DEFAULT"] = {"transport_url": rabbit_url}
        options["oslo_messaging_notifications"] = {"driver": ["messagingv2"], "topics": topic}
        server = glimpse_server(options)
        with server.client() as http:
            ids = []
            for path in ("/files/disk.raw", "/nothere"):
                image_id = http.post("/v2/images", json={
                    "name": "mq", "disk_format": "raw", "container_format": "bare"}).json()["id"]
                resp = http.post(f"/v2/images/{image_id}/import", json={
                    "method": {"name": "web-download", "uri": source.url(path)}})
                assert resp.status_code == 202
                ids.append(image_id)

        def ended(events: list[Any]) -> bool:
            return sum(e.event_type in ("task.success", "task.failure") for e in events) == 2

        events = listener.wait_for(ended, timeout=60, what="both task ends")
    finally:
        listener.stop()

    def sequence(image_id: str) -> list[tuple[str, str, Any]]:
        task_ids = {e.payload["id"] for e in events if e.event_type == "task.create"
                    and e.payload["task_input"]["image_id"] == image_id}
        out = []
        # INFO and ERROR events arrive on different queues (notifications.info,
        # notifications.error), so their arrival order says nothing: order by the
        # envelope's timestamp (taken when each event was recorded).
        for e in sorted(events, key=lambda e: str(e.metadata["timestamp"])):
            p = e.payload
            if e.event_type.startswith("task.") and p["id"] in task_ids:
                out.append((e.event_type, e.priority, p["status"]))
            elif e.event_type.startswith("image.") and (
                    (isinstance(p, dict) and p.get("id") == image_id)
                    or (isinstance(p, str) and image_id in p)):
                out.append((e.event_type, e.priority,
                            p["status"] if isinstance(p, dict) else "text"))
        return out

    good, bad = ids
    assert sequence(good) == [
        ("image.create", "INFO", "queued"), ("task.create", "INFO", "pending"),
        ("task.run", "INFO", "pending"), ("task.processing", "INFO", "processing"),
        ("image.update", "INFO", "importing"), ("image.prepare", "INFO", "importing"),
        ("image.upload", "INFO", "active"), ("image.activate", "INFO", "active"),
        ("image.update", "INFO", "active"), ("task.success", "INFO", "success")]
    assert sequence(bad) == [
        ("image.create", "INFO", "queued"), ("task.create", "INFO", "pending"),
        ("task.run", "INFO", "pending"), ("task.processing", "INFO", "processing"),
        ("image.update", "INFO", "importing"), ("image.prepare", "INFO", "importing"),
        ("image.upload", "ERROR", "text"), ("image.update", "INFO", "queued"),
        ("task.failure", "INFO", "failure")]
    success = next(e for e in events if e.event_type == "task.success")
    assert success.payload["result"] == {"image_id": good}
    assert success.payload["task_type"] == "api_image_import"
    failure = next(e for e in events if e.event_type == "task.failure")
    assert "404" in failure.payload["message"] and failure.payload["expires_at"]
