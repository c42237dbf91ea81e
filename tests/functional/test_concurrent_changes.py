"""Many clients changing the same few images at once, through two worker processes,
on SQLite and on PostgreSQL: uploads of several sizes, downloads, property
patches, deactivate/reactivate, tags, members, deletes, lists.

Whatever the interleaving, no answer is a 5xx, and afterwards the store, the
database and the events agree: an active or deactivated image has its data, of
its size and checksum; a queued or deleted image has none; no image is left
``saving``; the store holds no file of an unknown image and no partial file; and
the last ``image.upload`` INFO event of each image with data carries that data's
checksum. Each client runs a fixed sequence (its own seed): the operations are
the same from run to run, their interleaving is not; a failure names the client,
the step and the operation.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, server_per_database

CLIENTS, OPERATIONS, IMAGES = 6, 60, 5
PROJECT = "c" * 32
MEMBER = {"X-Project-Id": PROJECT, "X-User-Id": "racer", "X-Roles": "member,reader"}
ADMIN = {**MEMBER, "X-Roles": "admin,member,reader"}
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from server_per_database(request, tmp_path_factory, "concurrent", {
        "DEFAULT": {"workers": 2},
        "oslo_messaging_notifications": {"driver": ["log"]},
    })


def rows(server: ServerProcess, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` (no parameters) on the server's database, SQLite or PostgreSQL."""
    url = server.options.get("database", {}).get("connection")
    if url is None:
        with sqlite3.connect(server.state / "glimpse.sqlite") as conn:
            return list(conn.execute(sql))
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def new_image(client: httpx.Client) -> str:
    resp = client.post("/v2/images", json={"name": "race", "disk_format": "raw",
                                           "container_format": "bare"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def client_run(server: ServerProcess, seed: int, ids: list[str], lock: threading.Lock,
               failures: list[str]) -> None:
    """One client's fixed sequence of operations on images drawn from ``ids`` (an
    image it deletes is replaced there by a new one)."""
    rnd = random.Random(seed)
    with server.client(**MEMBER) as member, server.client(**ADMIN) as admin:
        for step in range(OPERATIONS):
            with lock:
                image_id = rnd.choice(ids)
            kind = rnd.choice(["upload", "upload", "download", "download", "patch",
                               "deactivate", "reactivate", "tag", "member", "delete", "list"])
            try:
                if kind == "upload":
                    body = rnd.randbytes(rnd.choice([1, 4096, 300_000, 2_000_000]))
                    resp = member.put(f"/v2/images/{image_id}/file", content=body,
                                      headers=OCTET)
                elif kind == "download":
                    resp = member.get(f"/v2/images/{image_id}/file")
                elif kind == "patch":
                    resp = member.patch(f"/v2/images/{image_id}", headers=PATCH, json=[
                        {"op": "add", "path": f"/p{rnd.randint(0, 3)}", "value": str(step)}])
                elif kind in ("deactivate", "reactivate"):
                    resp = admin.post(f"/v2/images/{image_id}/actions/{kind}")
                elif kind == "tag":
                    resp = member.put(f"/v2/images/{image_id}/tags/t{rnd.randint(0, 3)}")
                elif kind == "member":
                    resp = member.post(f"/v2/images/{image_id}/members",
                                       json={"member": "d" * 32})
                elif kind == "delete":
                    resp = member.delete(f"/v2/images/{image_id}")
                    if resp.status_code == 204:
                        replacement = new_image(member)
                        with lock:
                            ids[ids.index(image_id)] = replacement
                else:
                    resp = member.get("/v2/images?limit=3")
            except httpx.HTTPError as error:
                failures.append(f"client {seed} step {step} {kind} {image_id}: {error!r}")
                continue
            if resp.status_code >= 500:
                failures.append(f"client {seed} step {step} {kind} {image_id}: "
                                f"{resp.status_code} {resp.text[:300]}")


def test_concurrent_changes_leave_store_database_and_events_in_agreement(
        server: ServerProcess) -> None:
    with server.client(**MEMBER) as member:
        ids = [new_image(member) for _ in range(IMAGES)]
    lock, failures = threading.Lock(), []
    clients = [threading.Thread(target=client_run, args=(server, seed, ids, lock, failures))
               for seed in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(300)
    assert not any(thread.is_alive() for thread in clients), "a client never finished"
    assert failures == []

    images = rows(server, "SELECT id, status, size, checksum FROM images "
                          f"WHERE owner = '{PROJECT}'")
    datadir = server.state / "images"
    files = {path.name for path in datadir.iterdir()} if datadir.exists() else set()
    uploads: dict[str, dict[str, Any]] = {}
    for (text,) in rows(server, "SELECT envelope FROM outbox WHERE driver = 'log' "
                                "AND event_type = 'image.upload' AND priority = 'INFO' "
                                "ORDER BY id"):
        payload = json.loads(text)["payload"]
        uploads[payload["id"]] = payload
    problems = []
    with_data = 0
    for image_id, status, size, checksum in images:
        path = datadir / image_id
        if status in ("active", "deactivated"):
            with_data += 1
            if image_id not in files or os.path.getsize(path) != size:
                problems.append(f"{image_id} {status} without its {size} bytes")
            elif hashlib.md5(path.read_bytes()).hexdigest() != checksum:
                problems.append(f"{image_id} {status}: stored data does not match checksum")
            if uploads.get(image_id, {}).get("checksum") != checksum:
                problems.append(f"{image_id}: last image.upload INFO has not its checksum")
        elif status in ("queued", "deleted"):
            if image_id in files:
                problems.append(f"{image_id} {status} but its data is stored")
        else:
            problems.append(f"{image_id} left {status}")
    known = {image_id for image_id, *_ in images}
    problems += [f"store file {name} of no image, or partial"
                 for name in files if name not in known]
    assert problems == []
    # the run exercised what it is about: some images got data, some were deleted
    assert with_data >= 1 and len(images) > IMAGES, (with_data, len(images))

