"""Real clients against a real Glimpse server: python-glanceclient's CLI and openstacksdk.

The server runs with the embedded defaults (noauth: requests without identity
headers act as the default admin identity), so the clients need no Keystone.
Each test asserts what the client reports *and* that the data round-trips
byte for byte (MD5 and SHA-512 match).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.image_bytes import qcow2, random_raw
from tests.integration.glance_cli import glance, run_glance, table


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(random_raw(3 * 1024 * 1024 + 17))
    return path


def test_glance_cli_full_lifecycle(glimpse_server: Any, image_file: Path,
                                   tmp_path: Path) -> None:
    server = glimpse_server()
    data = image_file.read_bytes()

    created = table(glance(server, "image-create", "--name", "cli-image", "--disk-format", "raw",
                           "--container-format", "bare", "--file", str(image_file)))
    image_id = created["id"]
    assert created["status"] == "active"
    assert created["checksum"] == hashlib.md5(data).hexdigest()
    with server.client() as http:   # the CLI's table truncates long values
        full = http.get(f"/v2/images/{image_id}").json()
    assert full["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert int(created["size"]) == len(data)

    listed = glance(server, "image-list")
    assert image_id in listed and "cli-image" in listed

    shown = table(glance(server, "image-show", image_id))
    assert shown["name"] == "cli-image" and shown["disk_format"] == "raw"

    updated = table(glance(server, "image-update", "--property", "os_distro=debian",
                           "--name", "renamed", image_id))
    assert updated["os_distro"] == "debian" and updated["name"] == "renamed"

    glance(server, "image-tag-update", image_id, "golden")
    assert "golden" in table(glance(server, "image-show", image_id))["tags"]

    glance(server, "image-update", "--visibility", "shared", image_id)
    member = glance(server, "member-create", image_id, "22222222222222222222222222222222")
    assert "22222222222222222222222222222222" in member and "pending" in member

    out = tmp_path / "downloaded.raw"
    glance(server, "image-download", "--file", str(out), image_id)
    assert hashlib.sha512(out.read_bytes()).hexdigest() == hashlib.sha512(data).hexdigest()

    glance(server, "image-deactivate", image_id)
    assert table(glance(server, "image-show", image_id))["status"] == "deactivated"
    glance(server, "image-reactivate", image_id)

    glance(server, "image-delete", image_id)
    assert image_id not in glance(server, "image-list")
    # Errors reach the user as Glance's message, not a client crash.
    failed = run_glance(server, "image-show", image_id)
    assert failed.returncode != 0
    assert f"No image found with ID {image_id}" in failed.stderr, failed.stderr
    with server.client() as http:
        assert http.get(f"/v2/images/{image_id}").status_code == 404


def test_openstacksdk_create_download_update_delete(glimpse_server: Any,
                                                    image_file: Path, tmp_path: Path) -> None:
    import openstack

    server = glimpse_server()
    conn = openstack.connection.Connection(
        auth_type="none", image_endpoint_override=server.url + "/v2/",
        image_api_version="2")
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(qcow2(5 << 30, length=3 * 1024 * 1024 + 17))
    data = disk.read_bytes()

    image = conn.image.create_image(
        name="sdk-image", filename=str(disk), disk_format="qcow2",
        container_format="bare", wait=True, validate_checksum=True, use_import=False)
    assert image.status == "active"
    assert image.virtual_size == 5 << 30        # read from the qcow2 header
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.hash_value == hashlib.sha512(data).hexdigest()

    downloaded = conn.image.download_image(image)
    assert hashlib.sha512(downloaded.content).hexdigest() == image.hash_value

    updated = conn.image.update_image(image, name="sdk-renamed", os_distro="fedora")
    assert updated.name == "sdk-renamed"
    fetched = conn.image.get_image(image.id)
    assert fetched.name == "sdk-renamed" and fetched.os_distro == "fedora"

    names = {i.name for i in conn.image.images()}
    assert "sdk-renamed" in names

    conn.image.delete_image(image, ignore_missing=False)
    assert conn.image.find_image(image.id) is None
    # The data is gone from the store too, not just the record.
    store = server.state / "images"
    assert store.is_dir()
    assert not [p for p in store.rglob("*") if image.id in p.name]

    # Data that is not its disk_format: the SDK raises with Glance's 415 and reason.
    from openstack import exceptions

    with pytest.raises(exceptions.HttpException) as refused:
        conn.image.create_image(
            name="not-qcow2", filename=str(image_file), disk_format="qcow2",
            container_format="bare", wait=True, use_import=False)
    assert refused.value.status_code == 415
    assert "does not match stream data raw" in str(refused.value)
