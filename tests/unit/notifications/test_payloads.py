"""Payload key order and values against the contract (section 4) and Glance's samples."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from glimpse.domain.image import Image
from glimpse.domain.member import Member
from glimpse.domain.task import Task
from glimpse.notifications import payloads

SAMPLES = Path("/work/shared/reference/glance-samples")
T0 = datetime(2026, 11, 26, 21, 55, 24, 476140)

IMAGE_KEYS = ["id", "name", "status", "created_at", "updated_at", "min_disk", "min_ram",
              "protected", "checksum", "owner", "disk_format", "container_format", "size",
              "virtual_size", "is_public", "visibility", "properties", "tags", "deleted",
              "deleted_at", "os_hash_algo", "os_hash_value"]


def sample_payload(name: str) -> object:
    return json.loads((SAMPLES / f"{name}.json").read_text())[0]["payload"]


def make_image(**kw: object) -> Image:
    values: dict[str, object] = dict(
        id="87d522ec-9fc1-476f-b4a0-f272af8b3f50", owner="1" * 32, name="golden-1",
        disk_format="raw", container_format="bare", min_disk=1, min_ram=64,
        created_at=T0, updated_at=T0, tags={"t2", "t1"},
        properties={"custom_prop": "custom-value", "os_glance_importing_to_stores": "a,b"},
        location="file:///secret/path")
    values.update(kw)
    return Image(**values)  # type: ignore[arg-type]


def test_image_payload_order_matches_contract_and_glance() -> None:
    p = payloads.image(make_image())
    assert list(p) == IMAGE_KEYS
    sample = sample_payload("image.create")
    assert isinstance(sample, dict)
    # Glance's keys, in Glance's order, then Glimpse's two additions at the end.
    assert list(p)[:len(sample)] == list(sample)
    assert p["tags"] == ["t1", "t2"]
    assert p["properties"] == {"custom_prop": "custom-value"}      # internal ones hidden
    assert p["created_at"] == "2026-11-26T21:55:24Z"
    assert p["is_public"] is False and p["deleted"] is False and p["deleted_at"] is None
    assert "file:///secret/path" not in json.dumps(p)


def test_image_payload_public_and_deleted() -> None:
    p = payloads.image(make_image(visibility="public", status="deleted", deleted_at=T0))
    assert p["is_public"] is True
    assert p["deleted"] is True and p["deleted_at"] == "2026-11-26T21:55:24Z"


def test_hidden_properties_left_out() -> None:
    img = make_image(properties={"a": "1", "b": "2"})
    assert payloads.image(img, hidden_properties=frozenset({"b"}))["properties"] == {"a": "1"}


def test_prepare_upload_lists_at_the_end() -> None:
    p = payloads.image_with_import_lists(make_image(), backend="fast")
    assert list(p) == [*IMAGE_KEYS, "os_glance_importing_to_stores", "os_glance_failed_import",
                       "backend"]
    assert p["os_glance_importing_to_stores"] == ["a", "b"]
    assert p["os_glance_failed_import"] == []
    assert "backend" not in payloads.image_with_import_lists(make_image())


def test_member_payload_order() -> None:
    m = Member(image_id="i", member_id="m", status="accepted", created_at=T0, updated_at=T0)
    p = payloads.member(m)
    assert list(p) == ["image_id", "member_id", "status", "created_at", "updated_at",
                       "deleted", "deleted_at"]
    sample = sample_payload("image.member.create")
    assert isinstance(sample, dict) and list(p) == list(sample)


def test_send_payload_order() -> None:
    p = payloads.send(image_id="i", owner_id="o", receiver_tenant_id="t", receiver_user_id="u",
                      destination_ip="10.0.0.1", bytes_sent=7)
    assert list(p) == ["image_id", "owner_id", "receiver_tenant_id", "receiver_user_id",
                       "destination_ip", "bytes_sent"]


def test_task_payload_order_and_masking() -> None:
    t = Task(id="t1", type="import", owner="o", status="pending",
             input={"import_from": "http://user:pw@example.com/x.img", "password": "p"},
             created_at=T0, updated_at=T0)
    p = payloads.task(t)
    assert list(p) == ["id", "type", "status", "result", "owner", "message", "expires_at",
                       "created_at", "updated_at", "deleted", "deleted_at", "task_id",
                       "task_type", "task_input"]
    assert p["task_id"] == "t1" and p["task_type"] == "import" and p["message"] == ""
    assert p["task_input"] == {"import_from": "http://***:***@example.com/x.img",
                               "password": "***"}
