"""Interoperable import (web-download, glance-direct) against a real Glimpse server and a
real HTTP source on 127.0.0.1: success, every failure mode, restart, and exactly-once
execution with two processes on one PostgreSQL database.

The tests that need no options of their own and do not restart the server share
one, and one source (``shared``): each sees only the store files and events it
added, and the source's requests since it began."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, free_port, held_body, running_server
from tests.image_bytes import qcow2
from tests.import_helpers import (
    events_for,
    headers,
    import_options,
    outbox,
    task_payloads,
    wait_image,
    wait_task,
)
from tests.import_source import SourceServer, generated


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


# Per shared server: its store files and outbox length when the current test began.
_BEFORE: dict[Path, tuple[frozenset[Path], int]] = {}


@dataclass
class Shared:
    server: ServerProcess
    source: SourceServer


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with SourceServer() as source, running_server(tmp_path_factory.mktemp("import"),
                                                  import_options(source.port)) as server:
        yield Shared(server, source)


@pytest.fixture
def shared(shared_pair: Shared) -> Iterator[Shared]:
    """The module's server (``import_options`` of the module's source) and source,
    for a test that does not restart the server; it must leave no task running."""
    shared_pair.source.reset()
    state = shared_pair.server.state
    _BEFORE[state] = (frozenset(all_stored_files(state)), len(outbox(state)))
    yield shared_pair
    del _BEFORE[state]


def new_image(client: httpx.Client, **extra: Any) -> str:
    resp = client.post("/v2/images", json={"name": "imp", "disk_format": "raw",
                                           "container_format": "bare", **extra})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def web_download(client: httpx.Client, image_id: str, uri: str) -> str:
    """Start a web-download import; returns the task id (from the image's tasks)."""
    resp = client.post(f"/v2/images/{image_id}/import",
                       json={"method": {"name": "web-download", "uri": uri}})
    assert resp.status_code == 202, resp.text
    assert resp.content == b""
    tasks = client.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
    return str(tasks[0]["id"])


def all_stored_files(state: Path) -> list[Path]:
    return [p for p in (state / "images").rglob("*") if p.is_file()]


def stored_files(state: Path) -> list[Path]:
    """The store files the current test added."""
    before = _BEFORE.get(state, (frozenset(), 0))[0]
    return [p for p in all_stored_files(state) if p not in before]


def new_events(state: Path) -> list[dict[str, Any]]:
    """The envelopes recorded during the current test."""
    return outbox(state)[_BEFORE.get(state, (frozenset(), 0))[1]:]


SUCCESS_EVENTS = [
    ("task.create", "INFO", "pending"),
    ("task.run", "INFO", "pending"),
    ("task.processing", "INFO", "processing"),
    ("image.update", "INFO", "importing"),
    ("image.prepare", "INFO", "importing"),
    ("image.upload", "INFO", "active"),
    ("image.activate", "INFO", "active"),
    ("image.update", "INFO", "active"),
    ("task.success", "INFO", "success"),
]


def test_info_import_lists_enabled_methods(glimpse_server: Any) -> None:
    """Only the enabled methods Glimpse can run are offered: copy-image (a second
    store) is left out even when the configuration lists it, and refused."""
    server = glimpse_server({"DEFAULT": {"enabled_import_methods": "copy-image,web-download"}})
    with server.client(**headers()) as client:
        assert client.get("/v2/info/import").json() == {"import-methods": {
            "description": "Import methods available.", "type": "array",
            "value": ["web-download"]}}
        created = client.post("/v2/images", json={"disk_format": "raw",
                                                  "container_format": "bare"})
        assert created.headers["OpenStack-image-import-methods"] == "web-download"
        image_id = new_image(client)
        for name in ("glance-direct", "copy-image"):
            resp = client.post(f"/v2/images/{image_id}/import", json={"method": {"name": name}})
            assert resp.status_code == 400
            assert resp.json()["message"] == f"Import method {name} is not enabled."


def test_import_stores_must_name_this_services_store(shared: Shared) -> None:
    server = shared.server
    with server.client(**headers()) as client:
        image_id = new_image(client)
        for stores in (["nope"], "file", [{}], [["file"]], [1]):
            resp = client.post(f"/v2/images/{image_id}/import",
                               json={"method": {"name": "glance-direct"}, "stores": stores})
            assert resp.status_code == 400, stores
            assert resp.json()["message"].startswith("Unknown stores "), stores
        resp = client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "glance-direct"}, "stores": ["file"]})
        assert resp.status_code == 409             # not staged: the store was fine


@pytest.mark.parametrize("flag", ["all_stores_must_succeed", "all_stores"])
def test_import_store_flags_must_be_booleans(shared: Shared, flag: str) -> None:
    """As Glance: checked with the request, before the image's state."""
    server = shared.server
    with server.client(**headers()) as client:
        image_id = new_image(client)
        for value in ("yes", 1, None):
            resp = client.post(f"/v2/images/{image_id}/import",
                               json={"method": {"name": "glance-direct"}, flag: value})
            assert resp.status_code == 400, value
            assert resp.json()["message"] == f"'{flag}' must be boolean value only"
        resp = client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "glance-direct"}, flag: False})
        assert resp.status_code == 409             # not staged: the flag itself was fine


def test_web_download_success(shared: Shared) -> None:
    n = 3 * 1024 * 1024 + 5
    data = b"".join(generated(n))
    server, source = shared.server, shared.source
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url(f"/big/{n}"))
        task = wait_task(client, task_id)
        assert task["status"] == "success", task
        assert task["type"] == "api_image_import"
        assert task["result"] == {"image_id": image_id}
        assert task["input"]["image_id"] == image_id
        assert task["image_id"] == image_id       # shown as Glance shows it
        assert task["input"]["import_req"]["method"]["name"] == "web-download"
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "active"
        assert image["size"] == n
        assert image["checksum"] == hashlib.md5(data).hexdigest()
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert "os_glance_import_task" not in image
        assert image["os_glance_failed_import"] == ""
        assert client.get(f"/v2/images/{image_id}/file").content == data
        image_tasks = client.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
        assert [t["id"] for t in image_tasks] == [task_id]
    events = events_for(server.state, task_id=task_id, image_id=image_id)
    assert events == [("image.create", "INFO", "queued"), *SUCCESS_EVENTS]
    upload = next(e["payload"] for e in new_events(server.state)
                  if e["event_type"] == "image.upload")
    assert upload["size"] == n and upload["checksum"] == hashlib.md5(data).hexdigest()
    assert task_payloads(server.state, task_id)[-1]["result"] == {"image_id": image_id}


def assert_failed_import(server: Any, client: httpx.Client, image_id: str, task_id: str,
                         *, message: str, data_started: bool = True,
                         other_images: Sequence[str] = ()) -> dict[str, Any]:
    """The task failed with ``message`` and the image is back to ``queued`` with no
    data kept: the store holds the data of ``other_images`` only."""
    task = wait_task(client, task_id)
    assert task["status"] == "failure", task
    assert message in task["message"], task["message"]
    assert task["result"] is None
    image = wait_image(client, image_id, ("queued",))
    assert image["os_glance_failed_import"] == "file"
    assert image["os_glance_importing_to_stores"] == ""
    assert "os_glance_import_task" not in image
    assert image["size"] is None and image["checksum"] is None
    assert sorted(p.name for p in stored_files(server.state)) == sorted(other_images)
    events = events_for(server.state, task_id=task_id, image_id=image_id)
    kinds = [(kind, priority) for kind, priority, _ in events]
    expected = [("image.create", "INFO"), ("task.create", "INFO"), ("task.run", "INFO"),
                ("task.processing", "INFO"), ("image.update", "INFO"),
                ("image.prepare", "INFO")]
    if data_started:
        expected.append(("image.upload", "ERROR"))
    expected += [("image.update", "INFO"), ("task.failure", "INFO")]
    assert kinds == expected
    assert events[-2][2] == "queued"
    if data_started:
        assert image_id in events[-3][2]
    assert task_payloads(server.state, task_id)[-1]["message"] == task["message"]
    # The image can be imported again once the failure is recorded.
    return task


def test_web_download_404(shared: Shared) -> None:
    server, source = shared.server, shared.source
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/nothere"))
        assert_failed_import(server, client, image_id, task_id, message="404")
        # Retrying with a good URL works: the failed import left the image consistent.
        source.files["ok"] = b"fine"
        task_id = web_download(client, image_id, source.url("/files/ok"))
        assert wait_task(client, task_id)["status"] == "success"
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "active" and image["os_glance_failed_import"] == ""


def test_imported_data_is_inspected_as_uploads_are(shared: Shared) -> None:
    """A qcow2 with a backing file fails the import and keeps nothing; a good one
    gives the image its virtual size."""
    server, source = shared.server, shared.source
    source.files["backed.qcow2"] = qcow2(1 << 30, backing_file=True)
    source.files["good.qcow2"] = qcow2(8 << 30)
    with server.client(**headers()) as client:
        image_id = new_image(client, disk_format="qcow2")
        task_id = web_download(client, image_id, source.url("/files/backed.qcow2"))
        assert_failed_import(server, client, image_id, task_id,
                             message="Image failed safety checks")
        task_id = web_download(client, image_id, source.url("/files/good.qcow2"))
        assert wait_task(client, task_id)["status"] == "success"
        image = client.get(f"/v2/images/{image_id}").json()
        assert (image["status"], image["virtual_size"]) == ("active", 8 << 30)


def test_web_download_connection_refused(glimpse_server: Any) -> None:
    port = free_port()   # nothing listens there
    server = glimpse_server(import_options(port))
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, f"http://127.0.0.1:{port}/x")
        assert_failed_import(server, client, image_id, task_id, message="Could not connect")


@pytest.mark.parametrize("query", ["", "?nolength"])
def test_web_download_larger_than_size_cap(glimpse_server: Any, source: SourceServer,
                                           query: str) -> None:
    options = import_options(source.port)
    options["DEFAULT"] = {"image_size_cap": 1_000_000}
    server = glimpse_server(options)
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url(f"/big/5000000{query}"))
        assert_failed_import(server, client, image_id, task_id, message="size cap")


def test_web_download_over_quota(glimpse_server: Any, source: SourceServer) -> None:
    options = import_options(source.port)
    options["DEFAULT"] = {"user_storage_quota": "2MB"}
    server = glimpse_server(options)
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/big/3000000?nolength"))
        assert_failed_import(server, client, image_id, task_id, message="quota")


def test_web_download_finishing_after_an_upload_used_the_quota(glimpse_server: Any,
                                                              source: SourceServer) -> None:
    # The import's stream passes the quota read when it began; where its size
    # commits it must see the upload that finished meanwhile.
    options = import_options(source.port, download_timeout=30)
    options["DEFAULT"] = {"user_storage_quota": "3MB"}
    server = glimpse_server(options)
    with server.client(**headers()) as client:
        imported, uploaded = new_image(client), new_image(client)
        task_id = web_download(client, imported, source.url(f"/stall/{2 * 1024 * 1024}"))
        assert source.stalled.wait(30)
        resp = client.put(f"/v2/images/{uploaded}/file", content=b"u" * (2 * 1024 * 1024),
                          headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 204, resp.text
        source.release()
        assert_failed_import(server, client, imported, task_id, message="quota",
                             other_images=[uploaded])
        assert client.get(f"/v2/images/{uploaded}").json()["size"] == 2 * 1024 * 1024


def test_web_download_stalled_server(glimpse_server: Any, source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port, download_timeout=1))
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/stall/5000000"))
        assert_failed_import(server, client, image_id, task_id, message="stalled")


def test_web_download_past_its_deadline(glimpse_server: Any, source: SourceServer) -> None:
    # A source that sends a byte every 50 ms never trips download_timeout.
    server = glimpse_server(import_options(source.port, download_deadline=1))
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/drip/100000"))
        assert_failed_import(server, client, image_id, task_id,
                             message="deadline of 1 s ([task] download_deadline)")


def test_disallowed_host_is_refused_before_any_task(shared: Shared) -> None:
    server, source = shared.server, shared.source
    with server.client(**headers()) as client:
        image_id = new_image(client)
        for uri in ("http://10.0.0.1/x", "http://169.254.169.254/latest/meta-data/",
                    f"http://127.0.0.1:{source.port + 1 if source.port < 65535 else 1}/x",
                    f"ftp://127.0.0.1:{source.port}/x", None):
            method: dict[str, Any] = {"name": "web-download"}
            if uri is not None:
                method["uri"] = uri
            resp = client.post(f"/v2/images/{image_id}/import", json={"method": method})
            assert resp.status_code == 400, uri
            assert "URI for web-download does not pass filtering" in resp.json()["message"]
        for body, message in [({}, "Import request requires a 'method' field."),
                              ({"method": {"name": "bogus"}},
                               "Unknown import method name 'bogus'.")]:
            resp = client.post(f"/v2/images/{image_id}/import", json=body)
            assert (resp.status_code, resp.json()["message"]) == (400, message)
        assert client.get(f"/v2/images/{image_id}/tasks").json()["tasks"] == []
        assert client.get(f"/v2/images/{image_id}").json()["status"] == "queued"
    assert source.requests == []
    assert not any(e["event_type"].startswith("task.") for e in new_events(server.state))


def test_redirect_to_disallowed_host_fails_the_task(shared: Shared) -> None:
    server, source = shared.server, shared.source
    with server.client(**headers()) as client:
        image_id = new_image(client)
        uri = source.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
        task_id = web_download(client, image_id, uri)
        assert_failed_import(server, client, image_id, task_id,
                             message="does not pass filtering", data_started=True)
    assert source.requests == ["/redirect?to=http://169.254.169.254/latest/meta-data/"]


def test_import_conflicts(shared: Shared) -> None:
    server, source = shared.server, shared.source
    with server.client(**headers()) as client:
        bare = client.post("/v2/images", json={"name": "x"}).json()["id"]
        resp = client.post(f"/v2/images/{bare}/import",
                           json={"method": {"name": "web-download",
                                            "uri": source.url("/files/a")}})
        assert (resp.status_code, resp.json()["message"]) == (
            409, "'container_format' needs to be set before import")
        image_id = new_image(client)
        resp = client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "glance-direct"}})
        assert resp.status_code == 409
        assert "needs to be staged" in resp.json()["message"]
        # A second import while one is running is refused.
        running = web_download(client, image_id, source.url("/stall/100000"))
        resp = client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "web-download",
                                            "uri": source.url("/files/a")}})
        assert resp.status_code == 409
        source.release()
        assert wait_task(client, running)["status"] == "success"
        missing = "00000000-0000-0000-0000-000000000000"
        resp = client.post(f"/v2/images/{missing}/import",
                           json={"method": {"name": "web-download",
                                            "uri": source.url("/files/a")}})
        assert resp.status_code == 404


def test_glance_direct_stage_and_import(glimpse_server: Any) -> None:
    data = b"staged-bytes" * 100000
    server = glimpse_server({"oslo_messaging_notifications": {"driver": "log"}})
    staging = server.state / "staging"
    with server.client(**headers()) as client:
        image_id = new_image(client)
        resp = client.put(f"/v2/images/{image_id}/stage", content=data,
                          headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 204, resp.text
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "uploading" and image["size"] == len(data)
        assert (staging / image_id).read_bytes() == data
        resp = client.put(f"/v2/images/{image_id}/stage", content=b"again",
                          headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 409
        resp = client.put(f"/v2/images/{image_id}/stage", content=b"x",
                          headers={"Content-Type": "application/json"})
        assert resp.status_code == 415

        resp = client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "glance-direct"}})
        assert resp.status_code == 202
        task_id = client.get(f"/v2/images/{image_id}/tasks").json()["tasks"][0]["id"]
        assert wait_task(client, task_id)["status"] == "success"
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "active"
        assert image["checksum"] == hashlib.md5(data).hexdigest()
        assert client.get(f"/v2/images/{image_id}/file").content == data
        assert not (staging / image_id).exists()
    events = events_for(server.state, task_id=task_id, image_id=image_id)
    assert events == [("image.create", "INFO", "queued"),
                      ("image.update", "INFO", "uploading"),
                      ("image.update", "INFO", "uploading"),
                      *SUCCESS_EVENTS]


def test_concurrent_staging_cannot_exceed_the_quota_together(glimpse_server: Any) -> None:
    # Staged bytes count against user_storage_quota; a stage that began before
    # another one finished must see that one's bytes when its own size commits.
    server = glimpse_server({"DEFAULT": {"user_storage_quota": "3MB"},
                             "oslo_messaging_notifications": {"driver": "log"}})
    octet = {"Content-Type": "application/octet-stream"}
    release = threading.Event()
    answer: list[httpx.Response] = []

    with server.client(**headers()) as client:
        slow, fast = new_image(client), new_image(client)

        def stage_slow() -> None:
            with server.client(**headers()) as other:
                answer.append(other.put(f"/v2/images/{slow}/stage",
                                        content=held_body(release, b"h"), headers=octet))

        thread = threading.Thread(target=stage_slow)
        thread.start()
        try:
            wait_image(client, slow, ("uploading",))
            resp = client.put(f"/v2/images/{fast}/stage", content=b"f" * (2 * 1024 * 1024),
                              headers=octet)
            assert resp.status_code == 204, resp.text
        finally:
            release.set()
            thread.join(30)
        assert answer[0].status_code == 413, answer[0].text
        assert "quota" in answer[0].json()["message"]
        image = client.get(f"/v2/images/{slow}").json()
        assert image["status"] == "queued" and image["size"] is None
        assert sorted(p.name for p in (server.state / "staging").iterdir()) == [fast]


def test_staging_over_size_cap_keeps_nothing(glimpse_server: Any) -> None:
    server = glimpse_server({"DEFAULT": {"image_size_cap": 1000},
                             "oslo_messaging_notifications": {"driver": "log"}})
    with server.client(**headers()) as client:
        image_id = new_image(client)
        resp = client.put(f"/v2/images/{image_id}/stage", content=b"x" * 5000,
                          headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 413
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "queued" and image["size"] is None
        staging = server.state / "staging"
        assert not staging.exists() or list(staging.iterdir()) == []
    statuses = [s for _, _, s in events_for(server.state, image_id=image_id)]
    assert statuses == ["queued", "uploading", "queued"]


def test_restart_while_importing_fails_task_and_restores_image(
        glimpse_server: Any, source: SourceServer) -> None:
    """The claim would last 10 minutes: the restarted process recovers the task at
    once, because the killed one's liveness mark is unlocked (glimpse.liveness)."""
    server = glimpse_server(import_options(source.port, claim_timeout=600,
                                           download_timeout=60))
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/stall/5000000"))
        assert source.stalled.wait(30)
        assert client.get(f"/v2/tasks/{task_id}").json()["status"] == "processing"
    server.kill()
    server.start()
    with server.client(**headers()) as client:
        task = assert_failed_import(server, client, image_id, task_id,
                                    message="interrupted", data_started=False)
        assert "start the import again" in task["message"]
    source.release()


def test_graceful_stop_during_a_stalled_download_fails_the_task_cleanly(
        glimpse_server: Any, source: SourceServer) -> None:
    """SIGTERM while a download is blocked on a stalled server: the process exits
    (no kill needed), the task ends as failure saying why, the image is queued.
    The running task gets ``[outbox] drain_timeout`` (here 1 s) to end by itself."""
    options = import_options(source.port, download_timeout=120)
    options["outbox"] = {"drain_timeout": 1}
    server = glimpse_server(options)
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/stall/5000000"))
        assert source.stalled.wait(30)
    server.stop(timeout=15)
    assert server.proc is not None and server.proc.returncode == 0
    server.start()
    with server.client(**headers()) as client:
        task = assert_failed_import(server, client, image_id, task_id,
                                    message="shut down during the import")
        assert task["message"] == "Glimpse was shut down during the import; start the " \
                                  "import again."


def test_pending_task_of_a_dead_process_is_run_after_restart(
        glimpse_server: Any, source: SourceServer) -> None:
    """A task claimed but never started (its process died) runs again: safe to resume."""
    source.files["ok"] = b"resumed"
    server = glimpse_server(import_options(source.port, claim_timeout=2))
    with server.client(**headers()) as client:
        image_id = new_image(client)
        task_id = web_download(client, image_id, source.url("/files/ok"))
        assert wait_task(client, task_id)["status"] == "success"
    server.stop()
    # Simulate a crash right after a claim: a pending task with an expired claim.
    import sqlite3

    with sqlite3.connect(server.state / "glimpse.sqlite") as db:
        db.execute("UPDATE tasks SET status='pending', expires_at=NULL, "
                   "claimed_by='dead-node', claimed_until='2000-01-01 00:00:00' "
                   "WHERE id=?", (task_id,))
        db.execute("UPDATE images SET status='queued', size=NULL, checksum=NULL, "
                   "location=NULL WHERE id=?", (image_id,))
    server.start()
    with server.client(**headers()) as client:
        assert wait_task(client, task_id)["status"] == "success"
        assert client.get(f"/v2/images/{image_id}/file").content == b"resumed"


@pytest.mark.postgres
def test_each_task_runs_once_with_two_processes_on_postgresql(
        glimpse_server: Any, source: SourceServer, pg_database: str) -> None:
    source.files["one"] = b"1" * 70000
    options = import_options(source.port)
    options["database"] = {"connection": pg_database}
    first = glimpse_server(options, start=False)
    subprocess.run([sys.executable, "-c", "import sys; from glimpse.manage import main; "
                    "sys.exit(main())", "--config-file", str(first.config_file),
                    "db", "sync"], check=True, capture_output=True)
    second = glimpse_server(options, start=False)
    first.start()
    second.start()
    count = 12
    with first.client(**headers()) as a, second.client(**headers()) as b:
        task_ids = []
        for i in range(count):
            client = a if i % 2 == 0 else b
            task_ids.append(web_download(client, new_image(client),
                                         source.url("/files/one")))
        for task_id in task_ids:
            assert wait_task(a, task_id)["status"] == "success"
    assert source.requests.count("/files/one") == count
    import psycopg

    with psycopg.connect(pg_database.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute("SELECT event_type, envelope FROM outbox WHERE driver = 'log' "
                            "AND event_type LIKE 'task.%'").fetchall()
    import json

    runs: dict[str, int] = {}
    for event_type, envelope in rows:
        if event_type == "task.run":
            task_id = json.loads(envelope)["payload"]["id"]
            runs[task_id] = runs.get(task_id, 0) + 1
    assert runs == {task_id: 1 for task_id in task_ids}


def test_import_events_leave_out_protected_properties(glimpse_server: Any,
                                                      tmp_path: Path) -> None:
    """The executor does not know the requester's roles: its events leave out
    every property not readable by everyone (here the admin-only x_admin_*)."""
    rules = tmp_path / "protections.conf"
    rules.write_text("[^x_admin_.*]\ncreate = admin\nread = admin\nupdate = admin\n"
                     "delete = admin\n\n[.*]\ncreate = @\nread = @\nupdate = @\ndelete = @\n")
    server = glimpse_server({"DEFAULT": {"property_protection_file": str(rules)},
                             "oslo_messaging_notifications": {"driver": "log"}})
    with server.client(**headers()) as client:
        image_id = new_image(client)
        patch = client.patch(f"/v2/images/{image_id}", content=json.dumps(
            [{"op": "add", "path": "/x_admin_secret", "value": "s3cret"},
             {"op": "add", "path": "/x_public", "value": "open"}]),
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
        assert patch.status_code == 200, patch.text
        assert client.put(f"/v2/images/{image_id}/stage", content=b"data",
                          headers={"Content-Type": "application/octet-stream"}
                          ).status_code == 204
        assert client.post(f"/v2/images/{image_id}/import",
                           json={"method": {"name": "glance-direct"}}).status_code == 202
        task_id = client.get(f"/v2/images/{image_id}/tasks").json()["tasks"][0]["id"]
        assert wait_task(client, task_id)["status"] == "success"
        assert client.get(f"/v2/images/{image_id}").json()["x_admin_secret"] == "s3cret"
    image_payloads = [e["payload"] for e in outbox(server.state)
                      if e["event_type"].startswith("image.") and isinstance(e["payload"], dict)
                      and e["payload"].get("id") == image_id]
    assert {"image.update", "image.prepare", "image.upload", "image.activate"} <= {
        e["event_type"] for e in outbox(server.state)}
    assert image_payloads
    # The PATCH's own image.update was made by an admin, who may read it; the
    # executor's events (importing, active) may not carry it.
    imported = [p for p in image_payloads if p["status"] in ("importing", "active")]
    assert len(imported) >= 4
    for payload in imported:
        assert "x_admin_secret" not in payload["properties"], imported
        assert payload["properties"].get("x_public") == "open"
