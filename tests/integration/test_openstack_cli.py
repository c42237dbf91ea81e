"""The ``openstack`` CLI (python-openstackclient, unmodified) against Glimpse behind a
real Keystone: the user logs in with a password, the CLI finds Glimpse in the
catalog, and an image goes through its life: create with data, list, show by
name, set and unset, save, deactivate/reactivate, share with another project
that accepts it, delete; and an interoperable import (``--import``). Each CLI run
costs ~2 s of start-up: commands whose exit status is not the point run several
to a process, through the CLI's own interactive shell (commands on stdin)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.image_bytes import random_raw
from tests.integration.keystone_fixture import (
    PROJECTS,
    REGION,
    KeystoneInfo,
    keystone,  # noqa: F401  (pytest fixtures)
    keystone_glimpse,  # noqa: F401
    password_of,
    user_name,
)
from tests.integration.openstack_cli import OPENSTACK, openstack_shell

pytestmark = pytest.mark.keystone

A, B = PROJECTS


def openrc(ks: KeystoneInfo, project: str) -> dict[str, str]:
    """The environment of the member user of ``project``, configured the way an
    operator's openrc does it (OS_* variables, nothing else)."""
    user = user_name(project, "member")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=ks.url, OS_USERNAME=user, OS_PASSWORD=password_of(user),
               OS_PROJECT_NAME=project, OS_USER_DOMAIN_ID="default",
               OS_PROJECT_DOMAIN_ID="default", OS_REGION_NAME=REGION,
               OS_IDENTITY_API_VERSION="3", OS_INTERFACE="public")
    return env


def openstack(ks: KeystoneInfo, project: str, *args: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """``openstack <args>`` as the member user of ``project``, stdin closed."""
    proc = subprocess.run([OPENSTACK, *args], capture_output=True, text=True,
                          env=openrc(ks, project), timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, f"openstack {' '.join(args)} failed: {proc.stderr}"
    return proc


def shell(ks: KeystoneInfo, project: str, *commands: list[str]) -> list[Any]:
    """:func:`openstack_shell` as the member user of ``project``."""
    return openstack_shell(openrc(ks, project), *commands)


def shown(ks: KeystoneInfo, project: str, image: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        openstack(ks, project, "image", "show", image, "-f", "json").stdout)
    return result


def test_an_image_lifecycle_through_the_openstack_cli(keystone: KeystoneInfo,  # noqa: F811
                                                      keystone_glimpse: Any,  # noqa: F811
                                                      tmp_path: Path) -> None:
    data = random_raw(3 * 1024 * 1024 + 7)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    name = f"osc-{os.getpid()}"

    created = json.loads(openstack(
        keystone, A, "image", "create", "--disk-format", "raw", "--container-format", "bare",
        "--file", str(source), "--property", "k1=v1", "--tag", "t1", name, "-f", "json").stdout)
    assert created["status"] == "active"
    assert created["size"] == len(data)
    assert created["checksum"] == hashlib.md5(data).hexdigest()
    image_id = created["id"]

    saved = tmp_path / "saved.raw"
    project_b = keystone.project_ids[B]
    listed, by_name, after, deactivated, activated, added, members = shell(
        keystone, A,
        ["image", "list", "-f", "json"],
        ["image", "show", name, "-f", "json"],            # the CLI finds it with ?name=
        ["image", "set", "--property", "k2=v2", "--min-disk", "1", "--tag", "t2", name],
        ["image", "unset", "--property", "k1", "--tag", "t1", name],
        ["image", "show", image_id, "-f", "json"],
        ["image", "save", "--file", str(saved), name],
        ["image", "set", "--deactivate", name],
        ["image", "show", image_id, "-f", "json"],
        ["image", "set", "--activate", name],
        ["image", "show", image_id, "-f", "json"],
        # sharing (a new image is "shared"): B lists it once it accepts
        ["image", "add", "project", image_id, project_b, "-f", "json"],
        ["image", "member", "list", image_id, "-f", "json"])
    assert {"ID": image_id, "Name": name, "Status": "active"} in listed
    assert by_name["id"] == image_id
    assert by_name["properties"]["k1"] == "v1" and by_name["tags"] == ["t1"]
    assert after["min_disk"] == 1 and after["tags"] == ["t2"]
    assert after["properties"]["k2"] == "v2" and "k1" not in after["properties"]
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert deactivated["status"] == "deactivated"
    assert activated["status"] == "active"
    assert (added["member_id"], added["status"]) == (project_b, "pending")
    assert [(m["Member ID"], m["Status"]) for m in members] == [(project_b, "pending")]

    (b_list,) = shell(keystone, B, ["image", "set", "--accept", image_id],
                       ["image", "list", "-f", "json"])
    assert image_id in {row["ID"] for row in b_list}
    # and B cannot delete it
    refused = openstack(keystone, B, "image", "delete", image_id, check=False)
    assert refused.returncode != 0

    openstack(keystone, A, "image", "delete", name)
    gone = openstack(keystone, A, "image", "show", image_id, check=False)
    assert gone.returncode != 0 and "No Image found" in gone.stderr + gone.stdout


def test_interoperable_import_through_the_openstack_cli(keystone: KeystoneInfo,  # noqa: F811
                                                        keystone_glimpse: Any,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """``image create --import --file``: the CLI stages the data, then asks for a
    glance-direct import, which the task executor finishes in the background."""
    data = random_raw(1024 * 1024 + 3)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    started = json.loads(openstack(
        keystone, A, "image", "create", "--import", "--disk-format", "raw",
        "--container-format", "bare", "--file", str(source), f"osc-import-{os.getpid()}",
        "-f", "json").stdout)
    assert started["status"] in ("uploading", "importing", "active")
    deadline = time.monotonic() + 60
    while (image := shown(keystone, A, started["id"]))["status"] != "active":
        assert image["status"] in ("uploading", "importing"), image
        assert time.monotonic() < deadline, image
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["size"] == len(data)
