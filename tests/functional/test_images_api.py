"""The image metadata API over a real server: bodies, status codes and errors as Glance's."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, server_per_database

P1, P2, P3 = "1" * 32, "2" * 32, "3" * 32
MEMBER, ADMIN, READER = "member,reader", "admin,member,reader", "reader"
PATCH = "application/openstack-images-v2.1-json-patch"
IMAGE_KEYS = ["name", "disk_format", "container_format", "visibility", "size", "virtual_size",
              "status", "checksum", "protected", "min_ram", "min_disk", "owner", "os_hidden",
              "os_hash_algo", "os_hash_value", "id", "created_at", "updated_at", "tags",
              "self", "file", "schema"]


JSON_LIMIT = 65536


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per database for the module, with the `log` notification driver
    (events become outbox rows)."""
    yield from server_per_database(request, tmp_path_factory, "images-api", {
        "oslo_messaging_notifications": {"driver": ["log"]},
        "DEFAULT": {"image_tag_quota": 5, "image_property_quota": 4, "image_member_quota": 2,
                    "max_json_body_size": JSON_LIMIT},
    })


def as_(server: ServerProcess, project: str = P1, roles: str = MEMBER) -> httpx.Client:
    return server.client(**{"X-Identity-Status": "Confirmed", "X-Project-Id": project,
                            "X-User-Id": "user-" + project[:4], "X-Roles": roles})


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/v2/images", json=body)
    assert r.status_code == 201, r.text
    image: dict[str, Any] = r.json()
    return image


def patch(client: httpx.Client, image_id: str, ops: Any,
          content_type: str = PATCH) -> httpx.Response:
    return client.patch(f"/v2/images/{image_id}", content=json.dumps(ops),
                        headers={"Content-Type": content_type})


def message(r: httpx.Response) -> str:
    body: dict[str, Any] = r.json()
    assert body["code"].startswith(f"{r.status_code} ")    # Glance: "404 Not Found"
    return str(body["message"])


def test_create_returns_glance_body_and_headers(server: ServerProcess) -> None:
    with as_(server) as c:
        r = c.post("/v2/images", json={"name": "cirros", "disk_format": "qcow2",
                                       "container_format": "bare", "hw_arch": "x86_64",
                                       "tags": ["b", "a"], "min_ram": 64})
        assert r.status_code == 201
        body = r.json()
        image_id = body["id"]
        assert list(body) == ["hw_arch", *IMAGE_KEYS]
        assert body["status"] == "queued" and body["visibility"] == "shared"
        assert body["owner"] == P1 and body["min_ram"] == 64 and body["size"] is None
        assert sorted(body["tags"]) == ["a", "b"]
        assert body["self"] == f"/v2/images/{image_id}"
        assert body["file"] == f"/v2/images/{image_id}/file"
        assert body["schema"] == "/v2/schemas/image"
        assert len(body["created_at"]) == 20 and body["created_at"].endswith("Z")
        assert "locations" not in body and "direct_url" not in body
        assert r.headers["Location"] == f"{server.url}/v2/images/{image_id}"
        assert r.headers["OpenStack-image-import-methods"]
        shown = c.get(f"/v2/images/{image_id}")
        assert shown.status_code == 200 and shown.json() == body


def test_create_with_id_and_duplicate(server: ServerProcess) -> None:
    image_id = str(uuid.uuid4())
    with as_(server) as c:
        assert create(c, id=image_id)["id"] == image_id
        r = c.post("/v2/images", json={"id": image_id})
        assert r.status_code == 409
        assert message(r) == f"Image ID {image_id} already exists!"


def test_kernel_and_ramdisk_ids_may_be_null(server: ServerProcess) -> None:
    """The schema allows null for kernel_id/ramdisk_id and Glance stores and shows
    it: a create gets 201 (was 409, "Image ID ... already exists!"), a patch 200
    (was 500), and the event carries the null."""
    kernel = str(uuid.uuid4())
    with as_(server) as c:
        before = len(outbox(server))
        image = create(c, name="kr", kernel_id=None, ramdisk_id=None)
        assert (image["kernel_id"], image["ramdisk_id"]) == (None, None)
        shown = c.get(f"/v2/images/{image['id']}").json()
        assert "kernel_id" in shown and shown["kernel_id"] is None

        r = patch(c, image["id"], [{"op": "replace", "path": "/kernel_id", "value": kernel},
                                   {"op": "remove", "path": "/ramdisk_id"}])
        assert r.status_code == 200, r.text
        assert r.json()["kernel_id"] == kernel and "ramdisk_id" not in r.json()
        r = patch(c, image["id"], [{"op": "replace", "path": "/kernel_id", "value": None},
                                   {"op": "add", "path": "/ramdisk_id", "value": None}])
        assert r.status_code == 200, r.text
        again = c.get(f"/v2/images/{image['id']}").json()
        assert (again["kernel_id"], again["ramdisk_id"], again["tags"]) == (None, None, [])
        listed = c.get("/v2/images", params={"name": "kr"}).json()["images"]
        assert [(i["kernel_id"], i["ramdisk_id"]) for i in listed] == [(None, None)]
        events = [e for e in outbox(server)[before:]
                  if e["payload"].get("id") == image["id"]]
        assert [e["payload"]["properties"] for e in events] == [
            {"kernel_id": None, "ramdisk_id": None}, {"kernel_id": kernel},
            {"kernel_id": None, "ramdisk_id": None}]
        # other properties stay strings
        r = c.post("/v2/images", json={"name": "kr", "hw_arch": None})
        assert r.status_code == 400


def test_concurrent_creates_with_one_id(server: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    image_id = str(uuid.uuid4())

    def post(_: int) -> int:
        with as_(server) as c:
            return c.post("/v2/images", json={"id": image_id}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(post, range(8)))
    assert codes == [201] + [409] * 7


@pytest.mark.parametrize(("body", "status", "text"), [
    ({"self": "x"}, 403, "Attribute 'self' is read-only."),
    ({"status": "active"}, 403, "Attribute 'status' is read-only."),
    ({"size": 5}, 403, "Attribute 'size' is read-only."),
    ({"location": "x"}, 403, "Attribute 'location' is reserved."),
    ({"os_glance_x": "x"}, 403, "Attribute 'os_glance_x' is reserved."),
    ({"deleted": "x"}, 403, "Attribute 'deleted' is reserved."),
    ({"disk_format": "nope"}, 400, "Provided object does not match schema 'image'"),
    ({"foo": 5}, 400, "Provided object does not match schema 'image'"),
    ({"k" * 256: "v"}, 400, "Custom property should not be greater than 255 characters."),
    ({"visibility": "public"}, 403, "You are not authorized to complete publicize_image action."),
    ({"owner": P2}, 403, f"You are not permitted to create images owned by '{P2}'"),
    ({"owner": None}, 403, "You are not permitted to create images owned by 'None'."),
    ({"owner": ""}, 403, "You are not permitted to create images owned by ''."),
    ({"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}, 413,
     "The limit has been exceeded on the number of allowed image properties. Attempted: 5, "
     "Maximum: 4"),
    ({"tags": ["1", "2", "3", "4", "5", "6"]}, 413,
     "The limit has been exceeded on the number of allowed image tags. Attempted: 6, "
     "Maximum: 5"),
    ({"min_ram": -1}, 400, "Invalid value '-1' for parameter 'min_ram': Cannot be a negative"),
    ({"min_ram": 2**31}, 400, "'min_ram' value out of range, must not exceed 2147483647."),
    ({"min_disk": 2**63}, 400, "'min_disk' value out of range, must not exceed 2147483647."),
    ({"min_disk": 2**70}, 400, "'min_disk' value out of range, must not exceed 2147483647."),
])
def test_create_errors(server: ServerProcess, body: dict[str, Any], status: int,
                       text: str) -> None:
    with as_(server) as c:
        before = len(c.get("/v2/images", params={"limit": 1000}).json()["images"])
        r = c.post("/v2/images", json=body)
        assert r.status_code == status, r.text
        assert message(r).startswith(text)
        assert len(c.get("/v2/images", params={"limit": 1000}).json()["images"]) == before


def test_bad_json_and_readers(server: ServerProcess) -> None:
    with as_(server) as c:
        r = c.post("/v2/images", content=b"{nope")
        assert (r.status_code, message(r)) == (400, "Malformed JSON in request body.")
        r = c.post("/v2/images", content=b"")
        assert (r.status_code, message(r)) == (400, "Body expected in request.")
        r = c.post("/v2/images", content=b"[1]")
        assert r.status_code == 400
        # not text a database or a consumer can store: 400, never a 500 (Glance: 500
        # for the escape); and nothing is created
        image_id = create(c, name="p")["id"]
        before = len(c.get("/v2/images", params={"limit": 1000}).json()["images"])
        for value in (b'"\\ud800"', '"\ud800"'.encode("utf-8", "surrogatepass"), b"NaN"):
            r = c.post("/v2/images", content=b'{"name": ' + value + b"}")
            assert (r.status_code, message(r)) == (400, "Malformed JSON in request body."), value
            r = c.patch(f"/v2/images/{image_id}", headers={"Content-Type": PATCH},
                        content=b'[{"op": "add", "path": "/k", "value": ' + value + b"}]")
            assert (r.status_code, message(r)) == (400, "Malformed JSON in request body."), value
        assert len(c.get("/v2/images", params={"limit": 1000}).json()["images"]) == before
        image = create(c, name="whole", min_ram=5.0, min_disk=2**31 - 1)
        assert (image["min_ram"], image["min_disk"]) == (5, 2**31 - 1)
        assert type(image["min_ram"]) is int
        r = patch(c, image["id"], [{"op": "replace", "path": "/min_disk", "value": 2**31}])
        assert (r.status_code, message(r)) == (
            400, "'min_disk' value out of range, must not exceed 2147483647.")
        r = c.post("/v2/images", content=b'\xef\xbb\xbf{"name": "bom"}')
        assert r.status_code == 201, "a UTF-8 byte order mark is allowed, as Python's json does"
    with as_(server, roles=READER) as c:
        r = c.post("/v2/images", json={"name": "r"})
        assert (r.status_code, message(r)) == (
            403, "You are not authorized to complete add_image action.")


def test_json_bodies_over_the_limit_are_413_and_change_nothing(server: ServerProcess) -> None:
    too_large = (413, f"The request body is larger than the {JSON_LIMIT} bytes accepted "
                      "for JSON requests.")

    def sized(size: int) -> bytes:   # a create body of exactly ``size`` bytes
        head = b'{"name": "big", "p": "'
        return head + b"v" * (size - len(head) - 2) + b'"}'

    def chunked(body: bytes) -> Iterator[bytes]:   # no Content-Length: counted as read
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    with as_(server) as c:
        image_id = create(c, name="small")["id"]
        before = c.get("/v2/images", params={"limit": 1000}).json()["images"]
        r = c.post("/v2/images", content=sized(JSON_LIMIT + 1))
        assert (r.status_code, message(r)) == too_large
        r = c.post("/v2/images", content=chunked(sized(JSON_LIMIT * 4)))
        assert (r.status_code, message(r)) == too_large
        ops = json.dumps([{"op": "add", "path": "/p", "value": "v" * JSON_LIMIT}]).encode()
        r = c.patch(f"/v2/images/{image_id}", headers={"Content-Type": PATCH},
                    content=chunked(ops))
        assert (r.status_code, message(r)) == too_large
        r = c.post(f"/v2/images/{image_id}/members", content=b" " * JSON_LIMIT + b"{}  ")
        assert (r.status_code, message(r)) == too_large
        # the same connection goes on; nothing was created or changed
        assert c.get("/v2/images", params={"limit": 1000}).json()["images"] == before
        created = c.post("/v2/images", content=sized(JSON_LIMIT))
        assert created.status_code == 201, created.text
        assert len(created.json()["p"]) == JSON_LIMIT - 24


def test_nul_characters_and_huge_numbers_get_400_or_a_clamped_filter(
        server: ServerProcess) -> None:
    """Values no database column stores (PostgreSQL refuses NUL in text and numbers
    beyond a column's range) are answered before they reach it: never a 500."""
    with as_(server) as c:
        image = create(c, name="n", min_ram=7)
        for url in ("/v2/images/%00", f"/v2/images/{image['id']}%00/tags/x",
                    "/v2/images?name=%00", "/v2/images?marker=a%00"):
            r = c.get(url)
            assert (r.status_code, message(r)) == (
                400, "The request URL contains a NUL character."), url
        r = c.post("/v2/images", content=b'{"name": "a\\u0000b"}')
        assert (r.status_code, message(r)) == (400, "The request body contains a NUL character.")
        r = patch(c, image["id"], [{"op": "add", "path": "/k", "value": "\x00"}])
        assert (r.status_code, message(r)) == (400, "The request body contains a NUL character.")
        r = c.post("/v2/images", json={"name": "a\\u0000b"})    # the text, not the character
        assert r.status_code == 201 and r.json()["name"] == "a\\u0000b"
        ids = {i["id"] for i in c.get("/v2/images", params={"limit": 1000}).json()["images"]}
        for params, found in (({"min_ram": 2**70}, set()), ({"min_ram_min": 2**70}, set()),
                              ({"min_ram_max": 2**70}, ids), ({"size_min": -(2**70)}, set()),
                              ({"min_ram": 7}, {image["id"]})):
            r = c.get("/v2/images", params={"limit": 1000, **params})
            assert r.status_code == 200, (params, r.text)
            assert {i["id"] for i in r.json()["images"]} & ids == found & ids, params


def test_other_projects_private_image_is_404(server: ServerProcess) -> None:
    with as_(server) as owner, as_(server, P2) as other, as_(server, P2, ADMIN) as admin:
        image = create(owner, name="mine", visibility="private")
        image_id = image["id"]
        missing = other.get(f"/v2/images/{image_id}")
        assert (missing.status_code, message(missing)) == (
            404, f"No image found with ID {image_id}")
        assert patch(other, image_id, [{"op": "add", "path": "/x", "value": "1"}]
                     ).status_code == 404
        r = other.delete(f"/v2/images/{image_id}")
        assert (r.status_code, message(r)) == (404, f"Failed to find image {image_id} to delete")
        assert other.put(f"/v2/images/{image_id}/tags/x").status_code == 404
        assert other.get(f"/v2/images/{image_id}/members").status_code == 404
        assert image_id not in [i["id"] for i in other.get("/v2/images").json()["images"]]
        assert admin.get(f"/v2/images/{image_id}").status_code == 200
        unknown = owner.get(f"/v2/images/{uuid.uuid4()}")
        assert unknown.status_code == 404


def test_patch_add_replace_remove(server: ServerProcess) -> None:
    with as_(server) as c:
        image = create(c, name="p", foo="bar")
        image_id = image["id"]
        r = patch(c, image_id, [{"op": "add", "path": "/new", "value": "v"},
                                {"op": "replace", "path": "/name", "value": "renamed"},
                                {"op": "replace", "path": "/foo", "value": "baz"},
                                {"op": "replace", "path": "/tags", "value": ["t1", "t2"]},
                                {"op": "replace", "path": "/min_disk", "value": 2}])
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["name"], body["foo"], body["new"], body["min_disk"]) == (
            "renamed", "baz", "v", 2)
        assert sorted(body["tags"]) == ["t1", "t2"]
        assert body["updated_at"] >= image["updated_at"]
        r = patch(c, image_id, [{"op": "remove", "path": "/new"}])
        assert "new" not in r.json()
        r = patch(c, image_id, [{"add": "/v20", "value": "x"}],
                  "application/openstack-images-v2.0-json-patch")
        assert r.status_code == 200 and r.json()["v20"] == "x"
        assert c.get(f"/v2/images/{image_id}").json() == r.json()


@pytest.mark.parametrize(("ops", "status", "text"), [
    ([{"op": "replace", "path": "/status", "value": "active"}], 403,
     "Attribute 'status' is read-only."),
    ([{"op": "replace", "path": "/checksum", "value": "x"}], 403,
     "Attribute 'checksum' is read-only."),
    ([{"op": "add", "path": "/deleted_at", "value": "x"}], 403,
     "Attribute 'deleted_at' is reserved."),
    ([{"op": "remove", "path": "/name"}], 403, "Property name may not be removed."),
    ([{"op": "remove", "path": "/nope"}], 409, "Property nope does not exist."),
    ([{"op": "replace", "path": "/nope", "value": "x"}], 409, "Property nope does not exist."),
    ([{"op": "replace", "path": "/disk_format", "value": "bad"}], 400,
     "Provided object does not match schema 'image'"),
    ([{"op": "replace", "path": "/visibility", "value": "public"}], 403,
     "You are not authorized to complete publicize_image action."),
    ([{"op": "replace", "path": "/owner", "value": P2}], 403,
     "Owner can't be updated by non admin."),
    ([{"op": "move", "path": "/name"}], 400, "Invalid operation: `move`"),
    ({"op": "add"}, 400, "Request body must be a JSON array of operation objects."),
    ([{"op": "add", "path": "/locations/-", "value": {"url": "file:///etc/passwd",
                                                        "metadata": {}}}],
     403, "It's not allowed to add locations if locations are invisible."),
])
def test_patch_errors_leave_the_image_unchanged(server: ServerProcess, ops: Any, status: int,
                                                text: str) -> None:
    with as_(server) as c:
        image = create(c, name="unchanged")
        r = patch(c, image["id"], [{"op": "add", "path": "/first", "value": "1"}, *ops]
                  if isinstance(ops, list) else ops)
        assert r.status_code == status, r.text
        assert message(r).startswith(text)
        assert c.get(f"/v2/images/{image['id']}").json() == image


def test_patch_media_type(server: ServerProcess) -> None:
    with as_(server) as c:
        image = create(c)
        r = patch(c, image["id"], [], "application/json")
        assert r.status_code == 415
        assert r.headers["Accept-Patch"] == ("application/openstack-images-v2.0-json-patch, "
                                             "application/openstack-images-v2.1-json-patch")
        r = patch(c, image["id"], [{"op": "add", "path": "/x", "value": "1"}],
                  PATCH + "; charset=UTF-8")
        assert r.status_code == 200


def test_public_image_visible_but_not_writable_by_others(server: ServerProcess) -> None:
    with as_(server, roles=ADMIN) as admin, as_(server, P2) as other:
        image = create(admin, name="pub", visibility="public", protected=True)
        image_id = image["id"]
        assert other.get(f"/v2/images/{image_id}").status_code == 200
        r = patch(other, image_id, [{"op": "add", "path": "/x", "value": "1"}])
        assert (r.status_code, message(r)) == (
            403, "You are not authorized to complete modify_image action.")
        r = other.delete(f"/v2/images/{image_id}")
        assert (r.status_code, message(r)) == (
            403, "You are not authorized to complete delete_image action.")
        r = admin.delete(f"/v2/images/{image_id}")
        assert (r.status_code, message(r)) == (
            403, f"Image {image_id} is protected and cannot be deleted.")
        assert patch(admin, image_id, [{"op": "replace", "path": "/protected", "value": False}]
                     ).status_code == 200
        assert admin.delete(f"/v2/images/{image_id}").status_code == 204
        assert admin.get(f"/v2/images/{image_id}").status_code == 404
        assert admin.delete(f"/v2/images/{image_id}").status_code == 404
        r = admin.post("/v2/images", json={"id": image_id})
        assert r.status_code == 409  # ids of deleted images are never reused


def test_tags(server: ServerProcess) -> None:
    with as_(server) as c:
        image_id = create(c, tags=["a"])["id"]
        assert c.put(f"/v2/images/{image_id}/tags/b").status_code == 204
        assert c.put(f"/v2/images/{image_id}/tags/b").status_code == 204
        assert sorted(c.get(f"/v2/images/{image_id}").json()["tags"]) == ["a", "b"]
        assert c.delete(f"/v2/images/{image_id}/tags/a").status_code == 204
        r = c.delete(f"/v2/images/{image_id}/tags/a")
        assert r.status_code == 404
        assert c.get(f"/v2/images/{image_id}").json()["tags"] == ["b"]
        r = c.put(f"/v2/images/{image_id}/tags/" + "x" * 256)
        assert r.status_code == 400
        for tag in ("c", "d", "e", "f"):
            assert c.put(f"/v2/images/{image_id}/tags/{tag}").status_code == 204
        r = c.put(f"/v2/images/{image_id}/tags/g")
        assert r.status_code == 413
        assert message(r).startswith(f"Image tag limit exceeded for image {image_id}:")


def test_deactivate_needs_an_active_image(server: ServerProcess) -> None:
    with as_(server) as c:
        image_id = create(c)["id"]
        r = c.post(f"/v2/images/{image_id}/actions/deactivate")
        assert (r.status_code, message(r)) == (
            403, "Not allowed to deactivate image in status 'queued'")
        r = c.post(f"/v2/images/{image_id}/actions/reactivate")
        assert (r.status_code, message(r)) == (
            403, "Not allowed to reactivate image in status 'queued'")


def test_deactivate_and_reactivate_an_active_image(server: ServerProcess) -> None:
    with as_(server) as c, as_(server, P2) as other:
        image_id = create(c, disk_format="raw", container_format="bare",
                          visibility="community")["id"]
        r = c.put(f"/v2/images/{image_id}/file", content=b"x" * 1000,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        assert c.get(f"/v2/images/{image_id}").json()["status"] == "active"
        r = other.post(f"/v2/images/{image_id}/actions/deactivate")
        assert (r.status_code, message(r)) == (
            403, "You are not authorized to complete deactivate action.")
        assert c.post(f"/v2/images/{image_id}/actions/deactivate").status_code == 204
        assert c.get(f"/v2/images/{image_id}").json()["status"] == "deactivated"
        assert c.post(f"/v2/images/{image_id}/actions/deactivate").status_code == 204
        assert c.post(f"/v2/images/{image_id}/actions/reactivate").status_code == 204
        assert c.get(f"/v2/images/{image_id}").json()["status"] == "active"
        assert c.delete(f"/v2/images/{image_id}").status_code == 204
        data_dir = Path(server.options["DEFAULT"]["state_path"]) / "images"
        assert not [p for p in data_dir.rglob("*") if image_id in p.name]


def test_delete_removes_staged_data(server: ServerProcess) -> None:
    with as_(server) as c:
        image_id = create(c, disk_format="raw", container_format="bare")["id"]
        r = c.put(f"/v2/images/{image_id}/stage", content=b"staged bytes",
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        staged = Path(server.options["DEFAULT"]["state_path"]) / "staging" / image_id
        assert staged.read_bytes() == b"staged bytes"
        assert c.delete(f"/v2/images/{image_id}").status_code == 204
        assert not staged.exists()


def test_members(server: ServerProcess) -> None:
    with as_(server) as owner, as_(server, P2) as p2, as_(server, P3) as p3:
        image_id = create(owner, name="shared")["id"]
        r = owner.post(f"/v2/images/{image_id}/members", json={"member": P2})
        assert r.status_code == 200
        assert list(r.json()) == ["member_id", "image_id", "status", "created_at",
                                  "updated_at", "schema"]
        assert (r.json()["status"], r.json()["schema"]) == ("pending", "/v2/schemas/member")
        r = owner.post(f"/v2/images/{image_id}/members", json={"member": P2})
        assert (r.status_code, message(r)) == (
            409, f"Member {P2} is duplicated for image {image_id}")
        r = p2.post(f"/v2/images/{image_id}/members", json={"member": P3})
        assert r.status_code == 403
        r = owner.post(f"/v2/images/{image_id}/members", json={"nomember": P3})
        assert (r.status_code, message(r)) == (400, "Member to be added not specified")
        for bad, said in ((5, "Member must be a string (a project id)"),
                          ("p" * 256, "Member is too long: a project id has at most 255 "
                                      "characters")):
            r = owner.post(f"/v2/images/{image_id}/members", json={"member": bad})
            assert (r.status_code, message(r)) == (400, said)
        assert owner.post(f"/v2/images/{image_id}/members", json={"member": P3}
                          ).status_code == 200
        r = owner.post(f"/v2/images/{image_id}/members", json={"member": "p4"})
        assert r.status_code == 413  # image_member_quota = 2

        # pending members see the image but do not get it in the default list
        assert p2.get(f"/v2/images/{image_id}").status_code == 200
        listed = [i["id"] for i in p2.get("/v2/images").json()["images"]]
        assert image_id not in listed
        pending = p2.get("/v2/images", params={"member_status": "pending"}).json()["images"]
        assert image_id in [i["id"] for i in pending]

        members = owner.get(f"/v2/images/{image_id}/members").json()
        assert sorted(m["member_id"] for m in members["members"]) == [P2, P3]
        assert members["schema"] == "/v2/schemas/members"
        own = p2.get(f"/v2/images/{image_id}/members").json()["members"]
        assert [m["member_id"] for m in own] == [P2]
        assert p2.get(f"/v2/images/{image_id}/members/{P3}").status_code == 404

        r = owner.put(f"/v2/images/{image_id}/members/{P2}", json={"status": "accepted"})
        assert (r.status_code, message(r)) == (
            403, "You are not authorized to complete modify_member action.")
        r = p2.put(f"/v2/images/{image_id}/members/{P2}", json={"status": "bogus"})
        assert r.status_code == 400
        r = p2.put(f"/v2/images/{image_id}/members/{P2}", json={"status": "accepted"})
        assert r.status_code == 200 and r.json()["status"] == "accepted"
        assert image_id in [i["id"] for i in p2.get("/v2/images").json()["images"]]

        r = p2.delete(f"/v2/images/{image_id}/members/{P2}")
        assert r.status_code == 403
        assert owner.delete(f"/v2/images/{image_id}/members/{P3}").status_code == 204
        assert p3.get(f"/v2/images/{image_id}").status_code == 404
        r = owner.get(f"/v2/images/{image_id}/members/{P3}")
        assert (r.status_code, message(r)) == (
            404, f"{P3} not found in the member list of the image {image_id}.")

        private = create(owner, visibility="private")["id"]
        r = owner.post(f"/v2/images/{private}/members", json={"member": P2})
        assert (r.status_code, message(r)) == (
            403, f"Not allowed to create members for image {private}.")


def test_list_paging_and_links(server: ServerProcess) -> None:
    project = uuid.uuid4().hex
    with as_(server, project) as c:
        ids = [create(c, name=f"page-{n}", disk_format="raw")["id"] for n in range(5)]
        seen: list[str] = []
        url = "/v2/images?limit=2&sort=name:asc"
        first = c.get(url).json()
        assert first["first"] == "/v2/images?limit=2&sort=name%3Aasc"
        assert first["schema"] == "/v2/schemas/images"
        page: dict[str, Any] = first
        while True:
            seen += [i["id"] for i in page["images"]]
            if "next" not in page:
                break
            assert page["next"].endswith("&marker=" + page["images"][-1]["id"])
            page = c.get(page["next"]).json()
        assert seen == ids
        by_default = [i["id"] for i in c.get("/v2/images").json()["images"]]
        assert by_default == list(reversed(ids))  # created_at desc


def test_list_filters(server: ServerProcess) -> None:
    project = uuid.uuid4().hex
    with as_(server, project) as c:
        a = create(c, name="fa", disk_format="raw", tags=["x", "y"], arch="arm")["id"]
        b = create(c, name="fb", disk_format="qcow2", tags=["x"], protected=True)["id"]
        hidden = create(c, name="fc", os_hidden=True)["id"]

        def ids(**params: Any) -> list[str]:
            r = c.get("/v2/images", params={"owner": project, **params})
            assert r.status_code == 200, r.text
            return sorted(i["id"] for i in r.json()["images"])

        assert ids() == sorted([a, b])
        assert ids(os_hidden="true") == [hidden]
        assert ids(tag=["x", "y"]) == [a]
        assert ids(disk_format="in:raw,qcow2") == sorted([a, b])
        assert ids(name="fb") == [b]
        assert ids(protected="true") == [b]
        assert ids(arch="arm") == [a]
        assert ids(created_at="gte:2000-01-01T00:00:00Z") == sorted([a, b])
        assert ids(updated_at="lt:2000-01-01T00:00:00Z") == []
        assert ids(size_max="10") == []


@pytest.mark.parametrize(("query", "text"), [
    ("sort_key=foo", "Invalid sort key: foo."),
    ("marker=" + str(uuid.UUID(int=1)), f"No image found with ID {uuid.UUID(int=1)}"),
    ("limit=x", "limit param must be an integer"),
    ("created_at=gt:yesterday", 'Bad "created_at" query filter format.'),
    ("visibility=everything", "Invalid visibility value: everything"),
])
def test_list_errors(server: ServerProcess, query: str, text: str) -> None:
    with as_(server) as c:
        r = c.get("/v2/images?" + query)
        assert r.status_code == 400
        assert message(r).startswith(text)


def test_marker_of_an_invisible_image_is_400_not_403(server: ServerProcess) -> None:
    with as_(server) as owner, as_(server, P2) as other:
        private = create(owner, visibility="private")["id"]
        r = other.get(f"/v2/images?marker={private}")
        assert (r.status_code, message(r)) == (400, f"No image found with ID {private}")


def outbox(server: ServerProcess) -> list[dict[str, Any]]:
    """Envelopes the `log` driver's outbox rows hold, oldest first (either database)."""
    from sqlalchemy import create_engine, text

    url = server.options.get("database", {}).get("connection")
    if url is None:
        db = Path(server.options["DEFAULT"]["state_path"]) / "glimpse.sqlite"
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT envelope FROM outbox WHERE driver = 'log' ORDER BY id")
            return [json.loads(envelope) for (envelope,) in rows]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT envelope FROM outbox WHERE driver = 'log' "
                                     "ORDER BY id"))
            return [json.loads(envelope) for (envelope,) in rows]
    finally:
        engine.dispose()


def test_events_land_in_the_outbox(server: ServerProcess) -> None:
    with as_(server) as c, as_(server, P2) as p2:
        before = len(outbox(server))
        image_id = create(c, name="ev", prop="1")["id"]
        patch(c, image_id, [{"op": "add", "path": "/x", "value": "1"},
                            {"op": "replace", "path": "/name", "value": "ev2"}])
        assert patch(c, image_id, []).status_code == 200                 # nothing saved
        assert patch(c, image_id, [{"op": "remove", "path": "/nope"}]).status_code == 409
        c.put(f"/v2/images/{image_id}/tags/t")
        c.delete(f"/v2/images/{image_id}/tags/t")
        c.post(f"/v2/images/{image_id}/members", json={"member": P2})
        p2.put(f"/v2/images/{image_id}/members/{P2}", json={"status": "accepted"})
        c.delete(f"/v2/images/{image_id}/members/{P2}")
        c.post(f"/v2/images/{image_id}/actions/deactivate")                # 403: queued
        assert c.delete(f"/v2/images/{image_id}").status_code == 204
        events = [e for e in outbox(server)[before:]
                  if e["payload"].get("id", e["payload"].get("image_id")) == image_id]
        assert [e["event_type"] for e in events] == [
            "image.create", "image.update", "image.update", "image.update",
            "image.member.create", "image.member.update", "image.member.delete",
            "image.delete"]
        create_ev, first_update = events[0]["payload"], events[1]["payload"]
        assert create_ev["status"] == "queued" and create_ev["properties"] == {"prop": "1"}
        assert first_update["name"] == "ev2" and first_update["properties"] == {
            "prop": "1", "x": "1"}
        assert events[2]["payload"]["tags"] == ["t"] and events[3]["payload"]["tags"] == []
        member_delete = events[6]["payload"]
        assert member_delete["deleted"] is True and member_delete["deleted_at"]
        assert events[5]["payload"]["status"] == "accepted"
        deleted = events[7]["payload"]
        assert (deleted["status"], deleted["deleted"]) == ("deleted", True)
        assert deleted["deleted_at"] is not None
        assert all(e["priority"] == "INFO" for e in events)
