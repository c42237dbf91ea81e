"""glimpse-api as operators run it: SQLite created on start, worker processes,
one log file for the service and the ``log`` notification driver, clean SIGTERM;
and ``glimpse-manage outbox status`` on a running service."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from glimpse import liveness
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
    # a worker joins the rotation when its startup is complete, some time after
    # "Started server process" (a slow machine let one worker take every connection)
    _wait_for(lambda: len(set(started.findall(server.log.read_text()))) == 2
              and server.log.read_text().count("Application startup complete") == 2,
              "both workers to complete their startup")
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

    workers = [int(pid) for pid in set(started.findall(server.log.read_text()))]

    # logrotate (without copytruncate) moves the file away: every process writes
    # to a new file at log_file from its next line on, notifications included
    server.log.rename(server.log.with_name("glimpse.log.1"))
    with server.client(**MEMBER) as c:
        rotated = c.post("/v2/images", json={"name": "after logrotate"}).json()["id"]
    _wait_for(lambda: server.log.exists() and f'"id": "{rotated}"' in server.log.read_text(),
              "the image.create notification in the new log file")

    # Four keep-alive connections opened together are served two by each worker.
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
    log = server.log.read_text()        # the new file: each process reopened it
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


def test_log_dir_alone_logs_to_glimpse_api_log_in_it(
        glimpse_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """A glance-api.conf that names only log_dir (oslo.log: <log_dir>/<binary>.log)."""
    log_dir = tmp_path / "logs"
    server = glimpse_server({"DEFAULT": {"log_dir": str(log_dir), "log_file": ""},
                             "oslo_messaging_notifications": {"driver": ["log"]}})
    with server.client(**MEMBER) as c:
        image_id = c.post("/v2/images", json={"name": "in log_dir"}).json()["id"]
    log = log_dir / "glimpse-api.log"
    _wait_for(lambda: log.exists() and f'"id": "{image_id}"' in log.read_text(),
              "the image.create notification in <log_dir>/glimpse-api.log")
    assert "Application startup complete" in log.read_text()
    assert not server.log.exists()


def test_access_log_writes_one_line_per_request_only_when_asked(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    quiet = glimpse_server()
    logged = glimpse_server({"DEFAULT": {"access_log": True, "workers": 2}})
    answered: list[tuple[str, str, str]] = []
    for server in (quiet, logged):
        with server.client(**MEMBER) as client:
            for path in ("/v2/images?limit=3", f"/v2/images/{'0' * 8}-0000-0000-0000-{'0' * 12}"):
                r = client.get(path)
                answered.append((path, str(r.status_code), r.headers["x-openstack-request-id"]))
    assert [a[1] for a in answered] == ["200", "404"] * 2
    request_line = re.compile(
        r'uvicorn\.access 127\.0\.0\.1:\d+ - "GET (\S+) HTTP/1\.1" (\d+) (req-[0-9a-f-]{36})$',
        re.M)
    assert not request_line.search(quiet.log.read_text())
    _wait_for(lambda: len(request_line.findall(logged.log.read_text())) >= 2,
              "the two request lines")
    # each line ends with the id its response carried (the start-up's probes aside)
    lines = [line for line in request_line.findall(logged.log.read_text())
             if line[0].startswith("/v2/")]
    assert sorted(lines) == sorted(answered[2:])


MANAGE = "import sys; from glimpse.manage import main; sys.exit(main())"


def _manage(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MANAGE, "--config-file",
                           str(server.config_file), *args],
                          capture_output=True, text=True, timeout=60)


def test_outbox_status_shows_what_a_broken_broker_holds_back(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    # Port 1 refuses connections: messagingv2 keeps its events, log delivers them.
    # (No drain at stop: it would retry the broker for drain_timeout.)
    server = glimpse_server({"oslo_messaging_notifications": {
        "driver": ["log", "messagingv2"], "transport_url": "rabbit://guest:guest@127.0.0.1:1/"},
        "outbox": {"drain_timeout": 0}})
    with server.client(**MEMBER) as c:
        for n in range(3):
            assert c.post("/v2/images", json={"name": f"s{n}"}).status_code == 201

    def status() -> dict[str, Any]:
        proc = _manage(server, "outbox", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    _wait_for(lambda: {d["driver"]: d for d in status()["drivers"]}["messagingv2"][
        "head_attempts"] >= 1, "a failed delivery attempt")
    found = status()
    drivers = {d["driver"]: d for d in found["drivers"]}
    assert sorted(drivers) == ["log", "messagingv2"]
    assert drivers["messagingv2"]["pending"] == 3
    # for monitoring: status 3 while an event is older than --max-age
    assert _manage(server, "outbox", "status", "--max-age", "0").returncode == 3
    assert _manage(server, "outbox", "status", "--max-age", "3600").returncode == 0
    assert drivers["messagingv2"]["oldest_pending_seconds"] >= 0
    assert drivers["messagingv2"]["head_error"]
    assert drivers["log"]["pending"] == 0 and drivers["log"]["head_error"] is None
    # the server's single process holds both leases (it keeps retrying the broker)
    holder = drivers["messagingv2"]["delivered_by"]
    assert holder and drivers["log"]["delivered_by"] == holder
    assert (server.state / "processes" / liveness.mark_name(holder)).exists()
    assert found["delivered_last_hour"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", found["last_delivered_at"])

    table = _manage(server, "outbox", "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["driver", "pending", "oldest", "attempts"]
    row = next(line for line in lines if line.startswith("messagingv2"))
    assert row.split()[1] == "3"
    assert lines[-1].startswith("delivered in the last hour: 3; last delivery: ")
    assert f"messagingv2: delivered by {holder}" in lines
    server.stop()
    table = _manage(server, "outbox", "status")
    assert "messagingv2: no running process delivers it (no relay holds its lease)" in \
        table.stdout.splitlines(), table.stdout


def test_db_purge_removes_what_deleted_images_left_then_their_rows(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    """``db purge`` keeps a deleted image's id taken; ``db purge_images_table``
    frees it (as glance-manage's commands); a live image is never touched."""
    server = glimpse_server()
    image_id = "3f1c1d8e-8a4e-4d61-9d2a-0b9d2c6f1a10"
    with server.client(**MEMBER) as c:
        body = {"id": image_id, "name": "old", "tags": ["t"], "k": "v"}
        assert c.post("/v2/images", json=body).status_code == 201
        live = c.post("/v2/images", json={"name": "live", "k": "v"}).json()["id"]
        assert c.post(f"/v2/images/{image_id}/members",
                      json={"member": "another-project"}).status_code == 200
        assert c.delete(f"/v2/images/{image_id}").status_code == 204

    assert _manage(server, "db", "purge", "--max_rows", "-2").returncode == 2
    assert _manage(server, "db", "purge", "--age_in_days", "-1").returncode == 2
    kept = _manage(server, "db", "purge")          # default: deleted 30 days ago
    assert kept.returncode == 0, kept.stderr
    assert [line.split(" row")[0] for line in kept.stdout.splitlines()] == [
        "image_properties: 0", "image_tags: 0", "image_members: 0"]

    purged = _manage(server, "db", "purge", "--age_in_days", "0", "--max_rows", "-1")
    assert purged.returncode == 0, purged.stderr
    assert [line.split(" row")[0] for line in purged.stdout.splitlines()] == [
        "image_properties: 1", "image_tags: 1", "image_members: 1"]
    with server.client(**MEMBER) as c:
        assert c.get(f"/v2/images/{image_id}").status_code == 404
        assert c.post("/v2/images", json={"id": image_id}).status_code == 409  # still taken
        assert c.get(f"/v2/images/{live}").json()["k"] == "v"

    rows = _manage(server, "db", "purge_images_table", "--age_in_days", "0")
    assert rows.returncode == 0, rows.stderr
    assert rows.stdout.startswith("images: 1 row(s) deleted (images deleted before ")
    with server.client(**MEMBER) as c:
        assert c.post("/v2/images", json={"id": image_id}).status_code == 201
        assert c.get(f"/v2/images/{live}").status_code == 200


GLANCE_FORMAT_NAMESPACE = {       # as Glance's etc/metadefs/*.json files are written
    "namespace": "OS::Test::Pinning", "display_name": "Pinning", "description": "d",
    "visibility": "public", "protected": True,
    "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"},
                                   {"name": "OS::Nova::Flavor", "prefix": "hw:"}],
    "properties": {"cpu_policy": {"title": "CPU Pinning policy", "type": "string",
                                  "enum": ["shared", "dedicated"]}},
    "objects": [{"name": "Threads", "required": ["cpu_threads"],
                 "properties": {"cpu_threads": {"type": "integer", "title": "T"}}}],
    "tags": [{"name": "pinning"}],
}


def test_load_metadefs_loads_glance_format_files_once(
        glimpse_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """Each file through the API's checks, in one transaction; a bad file is
    reported and leaves nothing, the others load; a second run skips them."""
    files = tmp_path / "metadefs"
    files.mkdir()
    (files / "a-good.json").write_text(json.dumps(GLANCE_FORMAT_NAMESPACE))
    (files / "b-bad-property.json").write_text(json.dumps(
        {"namespace": "OS::Test::Bad", "properties": {"p": {"type": "string", "bogus": 1}}}))
    (files / "c-not-json.json").write_text("{")
    (files / "d-ignored.txt").write_text("not a definition")
    server = glimpse_server()
    loaded = _manage(server, "db", "load_metadefs", "--path", str(files))
    assert loaded.returncode == 3
    assert loaded.stdout == "loaded OS::Test::Pinning\n"
    assert [line.split(":")[0] for line in loaded.stderr.splitlines()] == [
        "failed b-bad-property.json", "failed c-not-json.json"]
    with server.client(**MEMBER) as client:
        shown = client.get("/v2/metadefs/namespaces/OS::Test::Pinning",
                           params={"resource_type": "OS::Glance::Image"}).json()
        assert (shown["owner"], shown["visibility"], shown["protected"]) == (
            "admin", "public", True)
        assert list(shown["properties"]) == ["hw_cpu_policy"]
        assert shown["objects"][0]["required"] == ["hw_cpu_threads"]
        assert shown["tags"] == [{"name": "pinning"}]
        assert client.get("/v2/metadefs/namespaces/OS::Test::Bad").status_code == 404
    again = _manage(server, "db", "load_metadefs", "--path", str(files))
    assert again.stdout == "skipped OS::Test::Pinning (it exists)\n"
    missing = _manage(server, "db", "load_metadefs", "--path", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_outbox_status_of_an_unreachable_database_is_status_1(tmp_path: Path) -> None:
    conf = tmp_path / "glimpse-api.conf"
    conf.write_text("[database]\nconnection = postgresql+psycopg://u:p@127.0.0.1:1/none\n")
    proc = subprocess.run([sys.executable, "-c", MANAGE, "--config-file", str(conf),
                           "outbox", "status"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("glimpse-manage: cannot use the database")
    assert "u:p@" not in proc.stderr     # the password is not printed


@pytest.mark.parametrize("command", [("db", "version"), ("outbox", "status")])
def test_reading_a_missing_sqlite_database_fails_without_creating_it(
        tmp_path: Path, command: tuple[str, str]) -> None:
    path = tmp_path / "mistyped" / "glimpse.sqlite"
    conf = tmp_path / "glimpse-api.conf"
    conf.write_text(f"[database]\nconnection = sqlite:///{path}\n")
    proc = subprocess.run([sys.executable, "-c", MANAGE, "--config-file", str(conf), *command],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (f"glimpse-manage: the database file {path} does not exist "
                           "([database] connection); 'glimpse-manage db sync' creates it\n")
    assert not path.exists() and not path.parent.exists()
    # db sync creates it; then both read it
    sync = subprocess.run([sys.executable, "-c", MANAGE, "--config-file", str(conf), "db", "sync"],
                          capture_output=True, text=True, timeout=60)
    assert sync.returncode == 0, sync.stderr
    again = subprocess.run([sys.executable, "-c", MANAGE, "--config-file", str(conf), *command],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr


def test_store_check_finds_what_parted_and_removes_only_orphans(
        glimpse_server: Callable[..., ServerProcess]) -> None:
    server = glimpse_server()
    datadir = server.state / "images"
    ids = {}
    with server.client(**MEMBER) as c:
        for name in ("intact", "lost", "cut", "deleted", "queued"):
            ids[name] = c.post("/v2/images", json={"name": name, "disk_format": "raw",
                                                   "container_format": "bare"}).json()["id"]
            if name != "queued":
                put = c.put(f"/v2/images/{ids[name]}/file", content=name.encode() * 1000,
                            headers={"Content-Type": "application/octet-stream"})
                assert put.status_code == 204
        assert c.delete(f"/v2/images/{ids['deleted']}").status_code == 204
    clean = _manage(server, "store", "check", "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["consistent"] is True

    stranger = "0f0f0f0f-0000-4000-8000-000000000000"
    # an upload whose process died after its file got its final name, before
    # the image became active: still saving, the file two hours old
    with server.client(**MEMBER) as c:
        ids["stalled"] = c.post("/v2/images", json={"name": "stalled"}).json()["id"]
    with sqlite3.connect(server.state / "glimpse.sqlite") as conn:
        conn.execute("UPDATE images SET status = 'saving' WHERE id = ?", (ids["stalled"],))
    (datadir / ids["stalled"]).write_bytes(b"complete, never activated")
    two_hours_ago = time.time() - 7200
    os.utime(datadir / ids["stalled"], (two_hours_ago, two_hours_ago))
    (datadir / ids["deleted"]).write_bytes(b"left behind by a failed removal")
    (datadir / stranger).write_bytes(b"no record at all")
    (datadir / ids["queued"]).write_bytes(b"named after a live image without data")
    (datadir / ids["lost"]).unlink()
    os.truncate(datadir / ids["cut"], 10)
    found = _manage(server, "store", "check", "--json")
    assert found.returncode == 3, found.stderr
    report = json.loads(found.stdout)
    assert report["orphaned"] == sorted([ids["deleted"], stranger])
    assert report["unreferenced"] == [ids["queued"]]
    assert report["missing"] == [ids["lost"]]
    assert report["size_mismatch"] == [ids["cut"]]
    assert report["stalled"] == [ids["stalled"]]
    assert (report["files"], report["removed"], report["consistent"]) == (6, [], False)

    fixed = _manage(server, "store", "check", "--remove-orphans")
    assert fixed.returncode == 3                        # the rest is still reported
    assert "removed: 2" in fixed.stdout and "NOT consistent" in fixed.stdout
    assert sorted(p.name for p in datadir.iterdir()) == sorted(
        [ids["intact"], ids["cut"], ids["queued"], ids["stalled"]])
    with server.client(**MEMBER) as c:                  # the service did not notice
        assert c.get(f"/v2/images/{ids['intact']}/file").content == b"intact" * 1000
