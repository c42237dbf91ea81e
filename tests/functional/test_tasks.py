"""The Tasks API over HTTP against a real Glimpse server: legacy ``import`` tasks
downloading from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.import_helpers import (
    OTHER,
    PROJECT,
    events_for,
    headers,
    import_options,
    task_payloads,
    wait_task,
)
from tests.import_source import SourceServer


@pytest.fixture
def source() -> Iterator[SourceServer]:
    with SourceServer() as server:
        yield server


def legacy_body(url: str, **props: Any) -> dict[str, Any]:
    return {"type": "import", "input": {
        "import_from": url, "import_from_format": "raw",
        "image_properties": {"disk_format": "raw", "container_format": "bare",
                             "name": "legacy", **props}}}


def test_legacy_import_success(glimpse_server: Any, source: SourceServer) -> None:
    data = bytes(range(256)) * 4000 + b"tail"
    source.files["img"] = data
    server = glimpse_server(import_options(source.port))
    with server.client(**headers()) as client:
        resp = client.post("/v2/tasks", json=legacy_body(source.url("/files/img"), foo="bar"))
        assert resp.status_code == 201, resp.text
        created = resp.json()
        assert list(created) == ["id", "input", "type", "status", "owner", "message", "result",
                                 "created_at", "updated_at", "self", "schema", "request_id",
                                 "user_id"]
        assert resp.headers["location"] == f"{server.url}/v2/tasks/{created['id']}"
        assert created["status"] == "pending" and created["owner"] == PROJECT
        assert created["user_id"] == "user-1" and created["result"] is None
        # the task keeps the id of the request that created it, as Glance
        assert created["request_id"] == resp.headers["x-openstack-request-id"]

        task = wait_task(client, created["id"])
        assert task["status"] == "success", task
        assert task["message"] == ""
        image_id = task["result"]["image_id"]
        assert task["expires_at"] is not None
        image = client.get(f"/v2/images/{image_id}").json()
        assert image["status"] == "active"
        assert image["owner"] == PROJECT
        assert image["size"] == len(data)
        assert image["checksum"] == hashlib.md5(data).hexdigest()
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert image["foo"] == "bar"
        assert client.get(f"/v2/images/{image_id}/file").content == data

    events = events_for(server.state, task_id=created["id"], image_id=image_id)
    assert events == [
        ("task.create", "INFO", "pending"),
        ("task.run", "INFO", "pending"),
        ("task.processing", "INFO", "processing"),
        ("image.create", "INFO", "queued"),
        ("image.update", "INFO", "importing"),
        ("image.prepare", "INFO", "importing"),
        ("image.upload", "INFO", "active"),
        ("image.activate", "INFO", "active"),
        ("image.update", "INFO", "active"),
        ("task.success", "INFO", "success"),
    ]
    payloads = task_payloads(server.state, created["id"])
    assert payloads[-1]["result"] == {"image_id": image_id}
    assert payloads[-1]["expires_at"] is not None
    assert all(p["expires_at"] is None for p in payloads[:-1])
    assert payloads[0]["task_input"]["import_from"] == source.url("/files/img")


def test_credentials_in_import_url_are_masked_in_events(glimpse_server: Any,
                                                        source: SourceServer) -> None:
    source.files["img"] = b"abc"
    url = source.url("/files/img").replace("http://", "http://alice:s3cret@")
    server = glimpse_server(import_options(source.port))
    with server.client(**headers()) as client:
        task_id = client.post("/v2/tasks", json=legacy_body(url)).json()["id"]
        assert wait_task(client, task_id)["status"] == "success"
    for payload in task_payloads(server.state, task_id):
        assert "s3cret" not in str(payload)
        assert payload["task_input"]["import_from"].startswith("http://***:***@127.0.0.1")


def test_legacy_import_without_formats_fails_and_leaves_no_image(
        glimpse_server: Any, source: SourceServer) -> None:
    """Glance fails such a task too (its domain refuses to save data into an image
    without formats); here the image it would create is rolled back with the step."""
    source.files["img"] = b"abc"
    server = glimpse_server(import_options(source.port))
    body = {"type": "import", "input": {"import_from": source.url("/files/img"),
                                        "import_from_format": "raw",
                                        "image_properties": {"name": "no-container",
                                                             "disk_format": "raw"}}}
    with server.client(**headers()) as client:
        task_id = client.post("/v2/tasks", json=body).json()["id"]
        task = wait_task(client, task_id)
        assert (task["status"], task["result"]) == ("failure", None)
        assert task["message"] == "Property container_format must be set prior to saving data."
        assert client.get("/v2/images").json()["images"] == []
    # the task's start (processing, the image and its image.create) is one
    # transaction: it rolled back whole, so nothing of it was announced
    kinds = [e[0] for e in events_for(server.state, task_id=task_id)]
    assert kinds == ["task.create", "task.run", "task.failure"]


def test_legacy_import_404_fails_task(glimpse_server: Any, source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port))
    with server.client(**headers()) as client:
        task_id = client.post("/v2/tasks", json=legacy_body(source.url("/missing"))).json()["id"]
        task = wait_task(client, task_id)
        assert task["status"] == "failure"
        assert "404" in task["message"] and task["result"] is None
    kinds = [e[0] for e in events_for(server.state, task_id=task_id)]
    assert kinds == ["task.create", "task.run", "task.processing", "task.failure"]
    assert task_payloads(server.state, task_id)[-1]["message"] == task["message"]


BAD_BODIES: list[tuple[Any, str]] = [
    ({"type": "import"}, "'input' is required"),
    ({"input": {}}, "'type' is required"),
    ({"type": "bogus", "input": {}}, "Invalid type"),
    ({"type": "api_image_import", "input": {}}, "cannot be created"),
    ({"type": "import", "input": []}, "must be a JSON object"),
    ({"type": "import", "input": {"import_from": "http://127.0.0.1/x"}}, "missing"),
    ({"type": "import", "input": {"import_from": 5, "import_from_format": "raw",
                                  "image_properties": {}}}, "import_from"),
    ({"type": "import", "input": {"import_from": "{url}", "import_from_format": "raw",
                                  "image_properties": "x"}}, "image_properties"),
    ({"type": "import", "input": {"import_from": "{url}", "import_from_format": "raw",
                                  "image_properties": {"disk_format": "nope"}}},
     "disk_format"),
    ({"type": "import", "input": {"import_from": "{url}", "import_from_format": "raw",
                                  "image_properties": {"status": "active"}}}, "status"),
    ({"type": "import", "input": {"import_from": "ftp://127.0.0.1/x",
                                  "import_from_format": "raw", "image_properties": {}}},
     "does not pass filtering"),
    ({"type": "import", "input": {"import_from": "http://10.0.0.8/x",
                                  "import_from_format": "raw", "image_properties": {}}},
     "does not pass filtering"),
    ({"type": "import", "input": {"import_from": "{url}", "import_from_format": "raw",
                                  "image_properties": {}}, "foo": 1},
     "Additional properties are not allowed ('foo' was unexpected)"),
    ({"type": "import", "input": {"import_from": "{url}", "import_from_format": "raw",
                                  "image_properties": {}}, "status": "bogus"}, "bogus"),
    ([1, 2], "JSON object"),
]


def test_bad_task_input_is_400_and_stores_nothing(glimpse_server: Any,
                                                  source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port))
    with server.client(**headers()) as client:
        for template, needle in BAD_BODIES:
            body = json.loads(json.dumps(template).replace("{url}", source.url("/files/x")))
            resp = client.post("/v2/tasks", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert needle in resp.json()["message"], body
        assert client.get("/v2/tasks").json()["tasks"] == []
        resp = client.post("/v2/tasks", content=b"{not json",
                           headers={"Content-Type": "application/json"})
        assert resp.status_code == 400
        assert resp.json()["message"] == "Malformed JSON in request body."
    assert events_for(server.state, task_id="") == []


def test_list_filters_sorting_paging_and_links(glimpse_server: Any,
                                               source: SourceServer) -> None:
    source.files["img"] = b"x" * 10
    server = glimpse_server(import_options(source.port))
    with server.client(**headers()) as client:
        ok = [client.post("/v2/tasks", json=legacy_body(source.url("/files/img"))).json()["id"]
              for _ in range(3)]
        bad = client.post("/v2/tasks", json=legacy_body(source.url("/nope"))).json()["id"]
        for task_id in [*ok, bad]:
            wait_task(client, task_id)

        listing = client.get("/v2/tasks").json()
        assert [t["id"] for t in listing["tasks"]] == [bad, *reversed(ok)]
        assert listing["first"] == "/v2/tasks" and listing["schema"] == "/v2/schemas/tasks"
        assert "next" not in listing
        entry = listing["tasks"][0]
        assert list(entry) == ["id", "type", "status", "owner", "created_at", "updated_at",
                               "self", "schema", "expires_at"]

        assert [t["id"] for t in client.get("/v2/tasks?status=failure").json()["tasks"]] == [bad]
        assert len(client.get("/v2/tasks?type=import&status=success").json()["tasks"]) == 3

        asc = client.get("/v2/tasks?sort_dir=asc").json()["tasks"]
        assert [t["id"] for t in asc] == [*ok, bad]

        # ties (one type, two statuses) break by created_at, then id, as Glance: newest
        # first by default, across pages too
        def ids(url: str) -> list[str]:
            found: list[str] = []
            while url:
                page = client.get(url).json()
                found += [t["id"] for t in page["tasks"]]
                url = page.get("next")
                assert len(found) <= 8, found       # a next link that never ends
            return found

        assert ids("/v2/tasks?sort_key=type") == [bad, *reversed(ok)]
        assert ids("/v2/tasks?sort_key=type&limit=1") == [bad, *reversed(ok)]
        assert ids("/v2/tasks?sort_key=type&sort_dir=asc&limit=2") == [*ok, bad]
        assert ids("/v2/tasks?sort_key=status&limit=3") == [*reversed(ok), bad]

        assert len(ids(f"/v2/tasks?owner={PROJECT}")) == 4
        assert ids("/v2/tasks?owner=someone-else") == []

        seen: list[str] = []
        url = "/v2/tasks?limit=2&sort_dir=asc"
        pages = 0
        while url:
            page = client.get(url).json()
            seen += [t["id"] for t in page["tasks"]]
            url = page.get("next")
            pages += 1
            assert pages < 5
        assert seen == [*ok, bad]

        for query, message in [("sort_key=name", "Sort key supplied was not valid."),
                               ("sort_dir=up", "Invalid sort direction: up"),
                               ("limit=abc", "limit param must be an integer"),
                               ("limit=-1", "limit param must be positive"),
                               ("status=bogus", "Invalid status value: bogus"),
                               ("type=bogus", "Invalid type value: bogus"),
                               ("type=api_image_import",
                                "Invalid type value: api_image_import"),
                               ("marker=00000000-0000-0000-0000-000000000000",
                                "Task with the given id 00000000-0000-0000-0000-000000000000 "
                                "was not found")]:
            resp = client.get(f"/v2/tasks?{query}")
            assert resp.status_code == 400, query
            assert resp.json()["message"] == message

        resp = client.delete(f"/v2/tasks/{ok[0]}")
        assert resp.status_code == 405 and resp.headers["allow"] == "GET"
        assert client.get(f"/v2/tasks/{ok[0]}").status_code == 200
        resp = client.get("/v2/tasks/00000000-0000-0000-0000-000000000000")
        assert resp.status_code == 404


def test_tasks_are_visible_only_to_their_project(glimpse_server: Any, source: SourceServer,
                                                 tmp_path: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"tasks_api_access": "role:member"\n')
    source.files["img"] = b"x"
    options = import_options(source.port)
    options["oslo_policy"] = {"policy_file": str(policy)}
    server = glimpse_server(options)
    with server.client(**headers(roles="member,reader")) as mine, \
            server.client(**headers(OTHER, roles="member,reader")) as theirs, \
            server.client(**headers(OTHER, roles="admin,member,reader")) as admin, \
            server.client(**headers(OTHER, roles="reader")) as reader:
        task_id = mine.post("/v2/tasks", json=legacy_body(source.url("/files/img"))).json()["id"]
        assert theirs.get(f"/v2/tasks/{task_id}").status_code == 404
        assert theirs.get("/v2/tasks").json()["tasks"] == []
        assert [t["id"] for t in admin.get("/v2/tasks").json()["tasks"]] == [task_id]
        assert admin.get(f"/v2/tasks/{task_id}").status_code == 200
        assert reader.get("/v2/tasks").status_code == 403
        image_id = wait_task(mine, task_id)["result"]["image_id"]
        assert mine.get(f"/v2/images/{image_id}").json()["owner"] == PROJECT
        assert theirs.get(f"/v2/images/{image_id}").status_code == 404


def test_tasks_api_access_alone_decides_on_an_empty_target(glimpse_server: Any,
                                                          source: SourceServer,
                                                          tmp_path: Any) -> None:
    """As in Glance: ``tasks_api_access`` alone opens the tasks API, on an empty
    target (a ``%(project_id)s`` template never matches). Glimpse then checks
    that the caller may create the task's image, before storing anything."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"tasks_api_access": "role:image_editor or '
                      '(role:auditor and project_id:%(project_id)s)"\n')
    source.files["img"] = b"x"
    options = import_options(source.port)
    options["oslo_policy"] = {"policy_file": str(policy)}
    server = glimpse_server(options)
    with server.client(**headers(roles="image_editor,member,reader")) as editor, \
            server.client(**headers(roles="image_editor,reader")) as reader, \
            server.client(**headers(roles="auditor,member,reader")) as auditor:
        created = editor.post("/v2/tasks", json=legacy_body(source.url("/files/img")))
        assert created.status_code == 201, created.text
        assert editor.get(f"/v2/tasks/{created.json()['id']}").status_code == 200
        assert auditor.get("/v2/tasks").status_code == 403
        refused = reader.post("/v2/tasks", json=legacy_body(source.url("/files/img")))
        assert refused.status_code == 400
        assert "not authorized to complete add_image" in refused.json()["message"]
        assert [t["id"] for t in reader.get("/v2/tasks").json()["tasks"]] == [
            created.json()["id"]]


def test_default_policy_keeps_tasks_api_admin_only(glimpse_server: Any,
                                                   source: SourceServer) -> None:
    server = glimpse_server(import_options(source.port))
    with server.client(**headers(roles="member,reader")) as member:
        resp = member.post("/v2/tasks", json=legacy_body(source.url("/files/img")))
        assert resp.status_code == 403
        assert member.get("/v2/tasks").status_code == 403
        # the policy answers before the query is validated, as in Glance
        assert member.get("/v2/tasks?limit=-1").status_code == 403
