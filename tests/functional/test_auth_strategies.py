"""Authentication strategies and property protections over a real server.

- noauth refuses to start on a non-loopback bind_host (unless behind a proxy);
- token-file: ``glimpse-manage token create/list/revoke`` while the server runs;
  401 + WWW-Authenticate without a valid token; version discovery stays open;
  a revoked token is refused within a second (and at once after SIGHUP);
- property protections: protected properties are neither shown nor put in the
  notifications of callers who may not read them, and are kept on updates.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

MANAGE = "import sys; from glimpse.manage import main; sys.exit(main())"
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def manage(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MANAGE, "--config-file",
                           str(server.config_file), *args],
                          capture_output=True, text=True, timeout=60)


def create_token(server: Any, user: str, project: str, roles: str) -> dict[str, Any]:
    proc = manage(server, "token", "--json", "create", "--user", user, "--project", project,
                  "--roles", roles)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_noauth_on_a_public_address_does_not_start(glimpse_server: Callable[..., Any]) -> None:
    server = glimpse_server({"DEFAULT": {"auth_strategy": "noauth", "bind_host": "0.0.0.0"}},
                            start=False)
    proc = subprocess.run([sys.executable, "-m", "glimpse.cli", "--config-file",
                           str(server.config_file)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "behind_trusted_proxy" in proc.stderr


def test_token_file_lifecycle(glimpse_server: Callable[..., Any], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    server = glimpse_server({"DEFAULT": {"auth_strategy": "token-file"},
                             "glimpse": {"token_file": str(tokens)}})
    project_a, project_b = uuid.uuid4().hex, uuid.uuid4().hex
    alice = create_token(server, "alice", project_a, "member,reader")
    bob = create_token(server, "bob", project_b, "member,reader")
    assert alice["token"] not in tokens.read_text()

    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/versions").status_code in (200, 300)
        for headers in ({}, {"X-Auth-Token": "glt_forged"},
                        {"X-Project-Id": project_a, "X-Roles": "admin"}):
            denied = http.get("/v2/images", headers=headers)
            assert denied.status_code == 401
            assert "WWW-Authenticate" in denied.headers

        as_alice = {"X-Auth-Token": alice["token"]}
        created = http.post("/v2/images", headers=as_alice,
                            json={"name": "a", "disk_format": "raw", "container_format": "bare"})
        assert created.status_code == 201, created.text
        image = created.json()
        assert image["owner"] == project_a
        # Bearer works too; bob's project sees nothing of alice's private image.
        as_bob = {"Authorization": f"Bearer {bob['token']}"}
        assert http.get("/v2/images", headers=as_bob).json()["images"] == []
        assert http.get(f"/v2/images/{image['id']}", headers=as_bob).status_code == 404
        # Identity headers next to a token are ignored: the token decides.
        spoofed = {**as_bob, "X-Project-Id": project_a, "X-Roles": "admin"}
        assert http.get(f"/v2/images/{image['id']}", headers=spoofed).status_code == 404

        listed = manage(server, "token", "--json", "list")
        assert listed.returncode == 0
        entries = json.loads(listed.stdout)
        assert {e["id"] for e in entries} == {alice["id"], bob["id"]}
        assert "sha256" not in listed.stdout and alice["token"] not in listed.stdout

        # Revoke while the server runs: refused within a second.
        assert manage(server, "token", "revoke", alice["id"]).returncode == 0
        time.sleep(1.0)
        assert http.get("/v2/images", headers=as_alice).status_code == 401
        assert http.get("/v2/images", headers=as_bob).status_code == 200

        # A new token works at once after SIGHUP (no waiting for the mtime check).
        assert http.get("/v2/images", headers=as_bob).status_code == 200
        carol = create_token(server, "carol", project_a, "reader")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        time.sleep(0.05)  # let the signal handler run (not an assertion on speed)
        shown = http.get(f"/v2/images/{image['id']}", headers={"X-Auth-Token": carol["token"]})
        assert shown.status_code == 200
        assert server.proc.poll() is None  # SIGHUP did not stop the server

    assert manage(server, "token", "revoke", "no-such-id").returncode == 1


PROTECTIONS = """
[^x_admin_.*]
create = admin
read = admin
update = admin
delete = admin

[.*]
create = @
read = @
update = @
delete = @
"""


def outbox_payloads(server: Any, event_type: str) -> list[dict[str, Any]]:
    with sqlite3.connect(server.state / "glimpse.sqlite") as db:
        rows = db.execute("SELECT envelope FROM outbox WHERE event_type = ? ORDER BY id",
                          (event_type,)).fetchall()
    return [json.loads(envelope)["payload"] for (envelope,) in rows]


def test_property_protections(glimpse_server: Callable[..., Any], tmp_path: Path) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text(PROTECTIONS)
    server = glimpse_server({"DEFAULT": {"property_protection_file": str(rules)},
                             "oslo_messaging_notifications": {"driver": ["log"]}})
    project = uuid.uuid4().hex
    admin = {"X-Project-Id": project, "X-User-Id": "adm", "X-Roles": "admin,member,reader"}
    member = {"X-Project-Id": project, "X-User-Id": "mem", "X-Roles": "member,reader"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        refused = http.post("/v2/images", headers=member,
                            json={"name": "m", "x_admin_flag": "1"})
        assert refused.status_code == 403, refused.text
        created = http.post("/v2/images", headers=admin,
                            json={"name": "a", "x_admin_flag": "secret", "plain": "1",
                                  "disk_format": "raw", "container_format": "bare"})
        assert created.status_code == 201, created.text
        image_id = created.json()["id"]
        assert created.json()["x_admin_flag"] == "secret"

        seen = http.get(f"/v2/images/{image_id}", headers=member).json()
        assert "x_admin_flag" not in seen and seen["plain"] == "1"
        listed = http.get("/v2/images", headers=member).json()["images"]
        assert next(i for i in listed if i["id"] == image_id).get("x_admin_flag") is None

        patched = http.patch(f"/v2/images/{image_id}", headers={**member, **PATCH},
                             content=json.dumps([{"op": "replace", "path": "/plain",
                                                  "value": "2"}]))
        assert patched.status_code == 200, patched.text
        assert "x_admin_flag" not in patched.json()
        overwrite = http.patch(f"/v2/images/{image_id}", headers={**member, **PATCH},
                               content=json.dumps([{"op": "add", "path": "/x_admin_flag",
                                                    "value": "mine"}]))
        assert overwrite.status_code == 403, overwrite.text
        # what a member cannot read does not exist for it, as in Glance: the same
        # answer as for a property nobody set (no hint that it is there)
        for op in ("replace", "remove"):
            answers = [http.patch(f"/v2/images/{image_id}", headers={**member, **PATCH},
                                  content=json.dumps([{"op": op, "path": f"/{name}",
                                                       **({"value": "v"} if op == "replace"
                                                          else {})}]))
                       for name in ("x_admin_flag", "x_admin_never_set")]
            assert [a.status_code for a in answers] == [409, 409], answers[0].text
            assert answers[0].text == answers[1].text.replace("x_admin_never_set",
                                                              "x_admin_flag")
        # The hidden property survived the member's update.
        assert http.get(f"/v2/images/{image_id}", headers=admin).json()["x_admin_flag"] \
            == "secret"
        uploaded = http.put(f"/v2/images/{image_id}/file", content=b"data",
                            headers={**member, "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 204, uploaded.text

    created_events = outbox_payloads(server, "image.create")
    # The admin may read the property: it is in the admin's image.create ...
    assert [p["properties"].get("x_admin_flag") for p in created_events] == ["secret"]
    # ... but not in the image.update caused by the member.
    updates = outbox_payloads(server, "image.update")
    assert updates[0]["properties"] == {"plain": "2"}
    # The member's upload: image.update (saving, active), prepare, upload, activate.
    data_events = [*updates[1:], *outbox_payloads(server, "image.prepare"),
                   *outbox_payloads(server, "image.upload"),
                   *outbox_payloads(server, "image.activate")]
    assert len(data_events) == 5
    assert all(p["properties"] == {"plain": "2"} for p in data_events)
